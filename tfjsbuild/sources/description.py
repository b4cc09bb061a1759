"""What `inspect` reports about a source: typed descriptions, rendered by `render/`.

A SavedModel is described from its files (tag sets, signatures with their tensors, each
signature's graph fingerprint), without TensorFlow. A Keras file's or Python source's signatures
come from the worker (`worker.loaders.describe`, which does import TensorFlow): here they are
only carried. Nothing here prints or writes JSON.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tfjsbuild.errors import UsageError
from tfjsbuild.files.artifacts import TensorSpec
from tfjsbuild.files.json_types import JsonObject
from tfjsbuild.manifest.types import (
    KERAS_H5_SUFFIXES,
    KERAS_V3_SUFFIX,
    PYTHON_TARGET,
    KerasSource,
    PythonSource,
)
from tfjsbuild.sources.digest import StatCache
from tfjsbuild.sources.python import python_source_problem
from tfjsbuild.sources.saved_model_files import SignatureInfo, read_meta_graphs
from tfjsbuild.sources.saved_model_graph import (
    GraphFingerprintError,
    SignatureGraph,
    signature_graphs,
)


@dataclass(frozen=True)
class DescribedSignature:
    signature: SignatureInfo  # its name, input and output tensors
    fingerprint: SignatureGraph | None  # None when its meta graph has no graph fingerprints


@dataclass(frozen=True)
class DescribedMetaGraph:
    tags: tuple[str, ...]
    # Why the graph fingerprint cannot read this meta graph (the whole model stands for it).
    fingerprint_fallback: str | None
    signatures: tuple[DescribedSignature, ...]


@dataclass(frozen=True)
class SavedModelDescription:
    path: Path
    meta_graphs: tuple[DescribedMetaGraph, ...]


@dataclass(frozen=True)
class TracedSignature:
    """A Keras file's or Python source's signature as the worker traced it: its tensors, or the
    user's error while tracing (then no tensors)."""

    name: str
    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()
    error: str | None = None


@dataclass(frozen=True)
class SourceDescription:
    """A Keras file or Python source as a graph model build would convert it."""

    source: KerasSource | PythonSource
    fingerprint: str  # the source's content digest
    fields_json: JsonObject  # what its kind adds (`SourceKind.inspect_json`): JSON already
    signatures: tuple[TracedSignature, ...]  # as `worker.loaders.describe` traced them


def describe_saved_model(folder: Path, *, paranoid: bool = False) -> SavedModelDescription:
    """Tag sets, signatures with their tensors, and each signature's graph fingerprint."""
    meta_graphs = []
    for meta in read_meta_graphs(folder):
        try:
            graphs = signature_graphs(folder, meta.tags, StatCache(), paranoid=paranoid)
            fallback = None
        except GraphFingerprintError as error:
            graphs, fallback = {}, str(error)
        signatures = tuple(
            DescribedSignature(sig, graphs.get(sig.name))
            for sig in meta.signatures
            if not sig.name.startswith("__")
        )
        meta_graphs.append(DescribedMetaGraph(meta.tags, fallback, signatures))
    return SavedModelDescription(folder, tuple(meta_graphs))


def inspected_source(path: str) -> KerasSource | PythonSource:
    """What `tfjs-build inspect PATH` names besides a SavedModel folder: a Keras file, or a
    Python source `module:callable` run from the current folder (as a manifest there would)."""
    file = Path(path)
    if file.is_file() and file.suffix.lower() in (KERAS_V3_SUFFIX, *KERAS_H5_SUFFIXES):
        return KerasSource(file, "graph_model")
    if not file.exists() and PYTHON_TARGET.fullmatch(path):
        source = PythonSource(path, (), Path.cwd())
        problem = python_source_problem(source)
        if problem is not None:
            raise UsageError(problem)
        return source
    raise UsageError(
        f"{path} is not a SavedModel folder (no saved_model.pb), a .keras or .h5 file, or "
        "a Python source module:callable"
    )
