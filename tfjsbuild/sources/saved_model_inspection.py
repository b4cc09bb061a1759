"""What `inspect` shows of a SavedModel: tag sets, signatures with their tensors, and each
signature's graph fingerprint, typed, and its --json form.

Read without TensorFlow, like the rest of `sources/`; nothing here prints or writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tfjsbuild.files.artifacts import TensorSpec, tensor_specs_json
from tfjsbuild.sources.digest import StatCache
from tfjsbuild.sources.saved_model_files import TensorInfo, read_meta_graphs
from tfjsbuild.sources.saved_model_graph import (
    GraphFingerprintError,
    SignatureGraph,
    signature_graphs,
)


@dataclass(frozen=True)
class InspectedSignature:
    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    graph: SignatureGraph | None  # None: its MetaGraph's `fingerprint_fallback` says why

    def to_json_dict(self) -> dict[str, Any]:
        graph = self.graph
        return {
            "name": self.name,
            "inputs": tensor_specs_json(self.inputs),
            "outputs": tensor_specs_json(self.outputs),
            "fingerprint": None
            if graph is None
            else {
                "digest": graph.digest,
                "graph": graph.graph,
                "captures": [
                    {"kind": c.kind, "name": c.name, "digest": c.digest} for c in graph.captures
                ],
            },
        }


@dataclass(frozen=True)
class InspectedMetaGraph:
    tags: tuple[str, ...]
    # Why the signatures have no graph fingerprint (a build fingerprints the whole model), or None.
    fingerprint_fallback: str | None
    signatures: tuple[InspectedSignature, ...]

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "tags": list(self.tags),
            "fingerprint_fallback": self.fingerprint_fallback,
            "signatures": [signature.to_json_dict() for signature in self.signatures],
        }


@dataclass(frozen=True)
class SavedModelInspection:
    path: Path
    meta_graphs: tuple[InspectedMetaGraph, ...]

    def to_json_dict(self) -> dict[str, Any]:
        """The `inspect --json` payload (after the version, ok and exit_code every one has)."""
        return {
            "path": str(self.path),
            "meta_graphs": [meta.to_json_dict() for meta in self.meta_graphs],
        }


def inspect_saved_model(folder: Path, *, paranoid: bool = False) -> SavedModelInspection:
    """Every MetaGraph's exportable signatures, with tensors and graph fingerprints."""
    meta_graphs = []
    for meta in read_meta_graphs(folder):
        try:
            graphs = signature_graphs(folder, meta.tags, StatCache(), paranoid=paranoid)
            fallback = None
        except GraphFingerprintError as error:
            graphs, fallback = {}, str(error)
        signatures = tuple(
            InspectedSignature(
                sig.name, _specs(sig.inputs), _specs(sig.outputs), graphs.get(sig.name)
            )
            for sig in meta.signatures
            if not sig.name.startswith("__")
        )
        meta_graphs.append(InspectedMetaGraph(meta.tags, fallback, signatures))
    return SavedModelInspection(folder, tuple(meta_graphs))


def _specs(tensors: tuple[TensorInfo, ...]) -> tuple[TensorSpec, ...]:
    """Keyed as users address them (the SignatureDef key), as model.json keys them."""
    return tuple(TensorSpec(t.key, t.dtype, t.shape) for t in tensors)
