"""Weights shared across signatures (`share_weights`): laid out once a build has placed its
outputs, and shared shards removed once no record lists them.

Signatures are converted, verified, cached and placed with their own shards as ever, so a cache
entry is the output as converted and an interrupted build leaves outputs that load. Then every
recorded signature built with `share_weights` (rebuilt or not, selected or not: a retrained
head must not store the backbone again) is laid out together (`files.shared_weights.lay_out`):

1. the shared shards not on disk are recorded in the state as this manifest's, then written;
2. each model.json whose weights manifest changes is staged, read back and checked to hold the
   same weights, its record made to list the shards of both, then swapped into place, and its
   record updated, one signature at a time;
3. shards this manifest wrote that no record lists and no model.json below output_dir reads
   are deleted, if they still hold the bytes they were written with (`removal`).

An output that is not what its record says, or that cannot be laid out (a full disk, a
`max_bytes` the longer model.json would break), keeps its own shards and loads as it did; a
warning says why. Only shards the state lists as written by this manifest are ever deleted.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from tfjsbuild.building.outputs import swap_into_place
from tfjsbuild.building.project import Project
from tfjsbuild.building.removal import remove_unlisted_shards
from tfjsbuild.building.staging import staging_root
from tfjsbuild.errors import BuildError
from tfjsbuild.files.artifacts import MODEL_JSON, OutputCheckError, OutputFile, content_hash
from tfjsbuild.files.atomic import write_atomically
from tfjsbuild.files.readback import InvalidData
from tfjsbuild.files.shared_weights import (
    SHARED_WEIGHTS_DIR,
    SharedLayout,
    StoredModel,
    from_folder,
    holds_its_name,
    lay_out,
    read_model,
)
from tfjsbuild.planning.fingerprint import SHARED
from tfjsbuild.stores.records import SignatureRecord, output_change, output_folder, record_files


def share_weights(project: Project, budgets: Mapping[str, int | None]) -> list[str]:
    """Lay out the weights of every recorded signature built with `share_weights` (selected for
    this build or not), then remove the shared shards nothing reads. Returns warnings: a
    signature that cannot be laid out keeps its own shards, and loads as it did (and is tried
    again once an output is placed or removed).

    `budgets`: the `max_bytes` of the signatures this build planned. Laid out only when the
    state says a layout is pending (an output with `share_weights` was placed or one removed,
    by this build or by one that stopped before laying out); otherwise nothing is read.
    """
    records = [
        record
        for _, record in sorted(project.state.records.items())
        if record.parts.get("weights") == SHARED
    ]
    warnings: list[str] = []
    if project.state.layout_pending:
        said, retry = _lay_out_records(project, records, budgets)
        warnings += said
        project.state.layout_pending = retry
    warnings += remove_unlisted_shards(project.manifest, project.state)
    project.save()
    return warnings


def _own_shards(record: SignatureRecord) -> bool:
    return any(f.path != MODEL_JSON for f in record.files)


def _lay_out_records(
    project: Project, records: list[SignatureRecord], budgets: Mapping[str, int | None]
) -> tuple[list[str], bool]:
    """Warnings, and whether to try again next build: what the filesystem refused (a link, a
    foreign file, a full disk) may be put right; a budget or an output to rebuild is not
    retried as such (the plan rebuilds the latter)."""
    manifest = project.manifest
    warnings: list[str] = []
    stored: dict[str, StoredModel] = {}
    for record in records:
        try:
            problem = output_change(manifest.root, record, manifest.output_dir)
            if problem is not None:
                raise OutputCheckError(problem)
            folder = output_folder(manifest.root, manifest.output_dir, record.output)
            stored[record.key] = read_model(folder, manifest.output_dir)
        except (OutputCheckError, InvalidData) as error:
            warnings.append(f"{record.key}: its weights are not shared this time: {error}")
    if not stored:
        return warnings, False
    sizes = {key: project.state.records[key].options.weight_shard_size_bytes for key in stored}
    layout = lay_out({key: model.weights for key, model in stored.items()}, sizes)
    try:
        _write_shards(project, layout)
    except (BuildError, OSError) as error:
        return [*warnings, f"weights not shared this time: {_said(error)}"], True
    retry = False
    for key, model in stored.items():
        try:
            problem = _relink(project, project.state.records[key], model, layout, budgets.get(key))
        except OSError as error:  # a full or read-only disk: it keeps its own shards
            problem, retry = _said(error), True
        if problem is not None:
            warnings.append(f"{key}: its weights are not shared this time: {problem}")
    return warnings, retry


def _said(error: Exception) -> str:
    if isinstance(error, OSError) and error.strerror:
        return f"{error.filename}: {error.strerror}" if error.filename else error.strerror
    return str(error)


def _write_shards(project: Project, layout: SharedLayout) -> None:
    """The layout's shards not on disk yet: recorded as this manifest's, then written."""
    output_dir = project.manifest.output_dir
    folder = output_dir / SHARED_WEIGHTS_DIR
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise BuildError(
            f"{folder} is not a folder: tfjs-build keeps weights shared across signatures "
            "there; move it away"
        )
    missing = {
        path: data for path, data in layout.shards.items() if not holds_its_name(output_dir / path)
    }
    for path in missing:
        if (output_dir / path).exists() and path not in project.state.shared_weights:
            raise BuildError(
                f"{output_dir / path} is not a shard tfjs-build wrote (it holds other bytes than "
                "its name says, or is a link); move it away"
            )
    for path in missing:
        project.state.shared_weights[path] = layout.sha256[path]
    project.save()  # before any is written: a build killed now leaves none unaccounted for
    folder.mkdir(exist_ok=True)
    for path, data in missing.items():
        write_atomically(output_dir / path, data)


def _relink(
    project: Project,
    record: SignatureRecord,
    model: StoredModel,
    layout: SharedLayout,
    budget: int | None,
) -> str | None:
    """Point the record's model.json at the layout's shards, if it does not already, and record
    the files it now reads; or why not (it would break its `max_bytes`)."""
    manifest = project.manifest
    target = output_folder(manifest.root, manifest.output_dir, record.output)  # normalised
    folder = target.relative_to(manifest.output_dir).as_posix()
    wanted = from_folder(folder, layout.manifests[record.key])
    shared = layout.files(
        dict.fromkeys(p for group in layout.manifests[record.key] for p in group["paths"])
    )
    model_json = tuple(OutputFile(f.path, f.size, f.sha256) for f in record.files)
    if model.model.get("weightsManifest") != wanted or _own_shards(record):
        text = json.dumps({**model.model, "weightsManifest": wanted}, allow_nan=False).encode()
        size = len(text) + sum(f.size for f in shared)
        if budget is not None and size > budget:
            return f"shared, it would be {size} bytes, over its max_bytes of {budget}"
        staging = staging_root(project) / f"shared-{record.model}-{record.signature}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        try:
            (staging / MODEL_JSON).write_bytes(text)
            _check_same_weights(model, read_model(staging, manifest.output_dir, folder), record)
            # Until the new model.json is recorded, the record lists the shards of both: no
            # clean-up deletes what the one in place reads, if the build stops in between.
            new = {f.path for f in shared}
            old = tuple(f for f in record.shared_files if f.path not in new)
            both = (*old, *record_files(manifest.output_dir, shared))
            record = replace(record, shared_files=both)
            project.state.records[record.key] = record
            project.save()
            swap_into_place(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        model_json = (OutputFile(MODEL_JSON, len(text), hashlib.sha256(text).hexdigest()),)
    files = record_files(target, model_json)
    shared_files = record_files(manifest.output_dir, shared)
    if (files, shared_files) != (record.files, record.shared_files):
        project.state.records[record.key] = replace(
            record,
            files=files,
            shared_files=shared_files,
            content_hash=content_hash((*files, *shared_files)),
        )
        project.save()
    return None


def _check_same_weights(before: StoredModel, after: StoredModel, record: SignatureRecord) -> None:
    """The laid-out model must hold exactly the weights it held: anything else is a bug here."""

    def weights(model: StoredModel) -> list[tuple[str, bytes]]:
        return sorted(
            (json.dumps(w.spec, sort_keys=True, allow_nan=False), w.data) for w in model.weights
        )

    if weights(before) != weights(after):
        raise AssertionError(f"{record.key}: shared weights would change the model's weights")


def standalone_copy(project: Project, record: SignatureRecord, folder: Path) -> Path:
    """The recorded output with shared shards, written into `folder` with shards of its own (one
    per weights group): what a verification of it reads (TF.js, and WebGL's page server, read
    a model's files from its folder). Raises OutputCheckError if it cannot be read back."""
    manifest = project.manifest
    source = output_folder(manifest.root, manifest.output_dir, record.output)
    model = read_model(source, manifest.output_dir)
    folder.mkdir(parents=True)
    groups, offset = [], 0
    for index, group in enumerate(model.model["weightsManifest"]):
        count = len(group["weights"])
        name = f"group{index + 1}-shard1of1.bin"
        (folder / name).write_bytes(
            b"".join(w.data for w in model.weights[offset : offset + count])
        )
        groups.append({**group, "paths": [name]})
        offset += count
    text = json.dumps({**model.model, "weightsManifest": groups}, allow_nan=False)
    (folder / MODEL_JSON).write_text(text, "utf-8")
    return folder
