"""The asset index, `output_dir/tfjs-build.json`: every built signature, for web apps to
discover and cache-bust, and which manifest wrote it; beside it, the app's loader generated from
it (`app_loader.py`). `schemas/asset-index.schema.json` documents the index.

Written from the state's records after each build, only when its text changed; another
manifest's index (two manifests sharing one output_dir) is never written or deleted, nor is its
loader. The index is read back untrusted: only to learn which manifest wrote it. Nothing here
builds or places an output.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path, PurePosixPath
from typing import Any

from tfjsbuild.building.app_loader import remove_loader, write_loader
from tfjsbuild.building.project import Project
from tfjsbuild.files.artifacts import MODEL_JSON, tensor_specs_json
from tfjsbuild.files.atomic import write_atomically
from tfjsbuild.files.filesystem import OUTPUT_REMEDY, refusals_reported
from tfjsbuild.manifest.types import Manifest
from tfjsbuild.sources.digest import canonical_json
from tfjsbuild.stores.index_owner import index_owner_problem
from tfjsbuild.verify.record import index_json

# Bump when a field changes meaning or goes; a new field keeps the version (readers ignore
# what they do not know).
INDEX_VERSION = 1
GRAPH_MODEL, LAYERS_MODEL = "graph_model", "layers_model"  # each signature's `format`


def write_index(project: Project) -> None:
    """`output_dir/tfjs-build.json`: every built signature, for web apps to discover and cache-bust."""
    manifest = project.manifest
    problem = index_owner_problem(manifest)
    if problem is not None:  # checked when planning: only a manifest written since gets here
        warnings.warn(problem, stacklevel=1)
        return
    models: dict[str, dict[str, Any]] = {}
    for record in sorted(project.state.records.values(), key=lambda r: r.key):
        model_json = Path(os.path.normpath(manifest.root / record.output)) / MODEL_JSON
        if not model_json.is_relative_to(manifest.output_dir):
            continue
        folder = PurePosixPath(model_json.parent.relative_to(manifest.output_dir).as_posix())
        entry = models.setdefault(record.model, {})[record.signature] = {
            "path": str(folder / MODEL_JSON),
            # A record is read back untrusted: only the two formats tfjs-build writes.
            "format": LAYERS_MODEL if record.parts.get("format") == LAYERS_MODEL else GRAPH_MODEL,
            "inputs": tensor_specs_json(record.inputs),
            "outputs": tensor_specs_json(record.outputs),
            "bytes": record.bytes,
            "files": [
                *(str(folder / f.path) for f in record.files),
                *(f.path for f in record.shared_files),
            ],
            "hash": record.content_hash,
            "verification": index_json(record.verification),
        }
        if record.quantization_choice is not None:  # only then: other entries stay as they were
            entry["quantization"] = record.quantization_choice.to_json_dict()
    index = manifest.index_path
    # Which manifest wrote it, relative to the index: another manifest refuses to overwrite it.
    owner = Path(os.path.relpath(manifest.path.resolve(), manifest.output_dir)).as_posix()
    # Checked before writing: a read-only output_dir with nothing to change is no failure.
    with refusals_reported(manifest.output_dir, "output folder", OUTPUT_REMEDY):
        if not models:
            remove_index(manifest)
            return
        text = canonical_json({"version": INDEX_VERSION, "manifest": owner, "models": models})
        write_loader(manifest.output_dir, models)
        try:
            if index.read_text("utf-8") == text:
                return
        except OSError:
            pass
        write_atomically(index, text)


def remove_index(manifest: Manifest) -> None:
    """The index and its loader (the caller checked that this manifest owns them)."""
    manifest.index_path.unlink(missing_ok=True)
    remove_loader(manifest.output_dir)
