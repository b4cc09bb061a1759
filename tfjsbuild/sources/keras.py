"""The `keras:` kind: a `.keras` or `.h5` file, or a tf.keras SavedModel folder.

A tf.keras SavedModel folder converted to a graph model is a plain SavedModel and goes through
`saved_model.py`; a Keras file is one signature, fingerprinted by its content. Nothing here
imports Keras or TensorFlow: the worker's `load_keras.py` loads the model.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tfjsbuild.files.json_types import JsonObject
from tfjsbuild.manifest.types import KERAS_SIGNATURE, KerasSource
from tfjsbuild.sources.base import SignatureLister, SourceCache, SourceEntry, WatchPaths
from tfjsbuild.sources.digest import StatCache, canonical_json, path_digest, sha256_text
from tfjsbuild.sources.saved_model import DATA_SHARDS, SAVED_MODEL

# Keras files are read, and Python sources usually built, by Keras 3 or tf.keras.
KERAS_DISTRIBUTIONS = ("keras", "tf-keras")


def keras_archive_digest(path: Path) -> str | None:
    """A `.keras` file by what it holds, not its bytes: saving the same model again is no change.

    Keras 3 stamps every save: `date_saved` in metadata.json, Python object ids as
    `shared_object_id` in config.json, the zip time of each member. Other members are taken by
    name, size and the CRC-32 the archive stores (as a SavedModel's variables by the index's
    crc32c; `--paranoid` hashes the bytes). None if this is not a zip archive.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            lines = []
            for info in sorted(archive.infolist(), key=lambda i: i.filename):
                if info.filename == "metadata.json":
                    metadata = json.loads(archive.read(info))
                    metadata.pop("date_saved", None)
                    # Only hashed, never written: a model's own NaN must not fail the build.
                    lines.append(f"{info.filename}\0{canonical_json(metadata, allow_nan=True)}")
                elif info.filename == "config.json":
                    config = _renumber_shared_objects(json.loads(archive.read(info)), {})
                    lines.append(f"{info.filename}\0{canonical_json(config, allow_nan=True)}")
                else:
                    lines.append(f"{info.filename}\0{info.file_size}\0{info.CRC:08x}")
    except (OSError, ValueError, zipfile.BadZipFile):
        return None
    return sha256_text("keras archive\n" + "\n".join(lines))


def _renumber_shared_objects(value: Any, ids: dict[Any, int]) -> Any:
    """`shared_object_id`s numbered by first appearance instead of by Python's `id()`."""
    if isinstance(value, dict):
        return {
            key: ids.setdefault(item, len(ids))
            if key == "shared_object_id"
            else _renumber_shared_objects(item, ids)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_renumber_shared_objects(item, ids) for item in value]
    return value


class KerasKind:
    name = "keras"
    tool_distributions: tuple[str, ...] = KERAS_DISTRIBUTIONS

    def origin(self, source: KerasSource) -> str:
        return str(source.path)

    def problem(self, source: KerasSource, root: Path) -> str | None:
        if not source.path.exists():
            return (
                f"Keras model {source.path} does not exist (paths are relative to "
                f"{root}); save the model there or fix the path"
            )
        if source.container == "saved_model" and not source.path.is_dir():
            return (
                f"{source.path} is not a Keras model: expected a .keras file, a .h5 file or a "
                "tf.keras SavedModel folder"
            )
        if source.container != "saved_model" and not source.path.is_file():
            return f"{source.path} is a folder, not a {source.path.suffix} file"
        saved_model = source.as_saved_model()
        return None if saved_model is None else SAVED_MODEL.problem(saved_model, root)

    def signature_names(self, source: KerasSource, lister: SignatureLister) -> list[str]:
        saved_model = source.as_saved_model()
        if saved_model is None:
            return [KERAS_SIGNATURE]
        return SAVED_MODEL.signature_names(saved_model, lister)

    def digest(self, source: KerasSource, stat_cache: StatCache, *, paranoid: bool) -> str:
        if source.container == "keras_v3" and not paranoid:
            archive = keras_archive_digest(source.path)
            if archive is not None:
                return archive
        return path_digest(source.path, stat_cache, None if paranoid else DATA_SHARDS)

    def signature_sources(self, source: KerasSource, cache: SourceCache) -> dict[str, SourceEntry]:
        saved_model = source.as_saved_model()
        if saved_model is not None:
            # A tf.keras SavedModel folder converted to a graph model: its graph fingerprint.
            return SAVED_MODEL.signature_sources(saved_model, cache)
        return {"*": SourceEntry(cache.digest(source), "keras-content")}

    def tags(self, source: KerasSource) -> tuple[str, ...]:
        return ()

    def output_format(self, source: KerasSource) -> str:
        return source.format

    def watch_paths(self, source: KerasSource) -> WatchPaths:
        return WatchPaths(paths=(source.path,))

    def incomplete(self, source: KerasSource) -> str | None:
        if not source.path.exists():
            return f"{source.path} does not exist (yet)"
        if source.container == "keras_v3" and source.path.is_file():
            try:
                with zipfile.ZipFile(source.path):
                    return None
            except (OSError, zipfile.BadZipFile) as error:
                return f"{source.path.name} is not a complete .keras archive yet ({error})"
        saved_model = source.as_saved_model()
        return None if saved_model is None else SAVED_MODEL.incomplete(saved_model)

    def user_frame(self, source: KerasSource, frames: Iterable[tuple[str, int]]) -> str:
        return ""  # a Keras file runs no user code of the manifest's folder

    def inspect_json(self, source: KerasSource) -> JsonObject:
        return {"path": str(source.path), "container": source.container}

    def inspect_heading(self, shown: str, source: KerasSource) -> str:
        return f"Keras model {shown} ({source.container})"


KERAS = KerasKind()
