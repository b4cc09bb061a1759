"""Load a `saved_model:` source in a worker: TensorFlow loads the folder, a failure names the
broken file (read by `sources/saved_model_files.py`) and what to do.

Imports TensorFlow (through `convert.py`): only ever imported inside worker processes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tfjsbuild.errors import SourceError
from tfjsbuild.files.artifacts import GraphModelOutput, TensorSpec
from tfjsbuild.manifest.types import ConverterOptions, SavedModelSource
from tfjsbuild.sources import saved_model_files as savedmodel
from tfjsbuild.sources.saved_model_integrity import damage
from tfjsbuild.worker import convert
from tfjsbuild.worker.functions import function_tensors, run_function
from tfjsbuild.worker.loaded import KindLoader, all_functions, require_signature
from tfjsbuild.worker.saved_model import LoadedSavedModel, load_saved_model


@dataclass
class SavedModelSignatures:
    loaded: LoadedSavedModel
    origin: str  # what the user named, for messages (the export folder is temporary)

    def convert(
        self,
        signature: str,
        output_dir: Path,
        options: ConverterOptions,
        timings: dict[str, float] | None,
    ) -> GraphModelOutput:
        require_signature(signature, self.loaded.model.signatures, self.origin)
        return convert.convert_signature(self.loaded, signature, output_dir, options, timings)

    def functions(self) -> dict[str, Any]:
        return dict(self.loaded.model.signatures)

    def input_specs(self, signature: str) -> tuple[TensorSpec, ...]:
        return function_tensors(self.loaded.model.signatures[signature])[0]

    def run(self, signature: str, inputs: Mapping[str, Any]) -> dict[str, Any]:
        return run_function(self.loaded.model.signatures[signature], inputs)


def load_saved_model_at(path: Path, tags: tuple[str, ...], what: str) -> SavedModelSignatures:
    """Model files are untrusted: any failure to load them names the file and what to do."""
    try:
        loaded = load_saved_model(path, tags)
    except Exception as error:
        raise SourceError(
            load_failure(what, path, error, saved_model_damage(path, error), "re-export it")
        ) from error
    return SavedModelSignatures(loaded, str(path))


def load(source: SavedModelSource, scratch: Path) -> SavedModelSignatures:
    return load_saved_model_at(source.path, source.tags, "the SavedModel")


def load_failure(
    what: str, path: Path, error: BaseException, damaged: str | None, remedy: str
) -> str:
    summary = error_summary(error)
    if damaged is None:
        return f"could not load {what} {path}: {summary}"
    return f"could not load {what} {path}: {damaged} ({summary}); {remedy}"


def error_summary(error: BaseException) -> str:
    """`Type: the line that says what went wrong`, without TensorFlow's graph-execution preamble."""
    lines = []
    for line in str(error).splitlines():
        line = line.strip()
        if line and not line.startswith(
            ("Graph execution error", "Detected at node", 'File "', "[[")
        ):
            lines.append(line)
    text = re.sub(r"^\{\{function_node [^}]*\}\}\s*", "", lines[0] if lines else "")
    text = re.sub(r"\s*\[Op:[^\]]*\]$", "", text)
    if len(text) > 300:
        text = text[:297] + "..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def saved_model_damage(path: Path, error: BaseException | None) -> str | None:
    """The broken file, from the files themselves, else from what TensorFlow said."""
    try:
        found = damage(path)
    except OSError as os_error:
        return f"its files cannot be read ({os_error})"
    if found is not None or error is None:
        return found
    text = str(error)
    index = f"{savedmodel.VARIABLES_DIR}/{savedmodel.VARIABLES_INDEX}"
    if index in text or "sstable" in text or "block checksum mismatch" in text:
        return f"{index} is corrupt"
    match = re.search(r"shard (\d+) \([^)]*\): Checksum does not match", text)
    if match is not None:
        try:
            shard = savedmodel.data_shard_path(path / savedmodel.VARIABLES_DIR, int(match[1]))
        except savedmodel.SavedModelError:
            return None
        return f"{savedmodel.VARIABLES_DIR}/{shard.name} is corrupt"
    return None


LOADER = KindLoader("saved_model", load, all_functions(load))
