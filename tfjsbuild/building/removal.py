"""Removing outputs: a signature gone from the manifest, a folder an output moved out of, and
everything `clean` removes.

Removal deletes only what a record provably says this tool wrote: the files it lists, in a
folder below output_dir reached without a symbolic link, then the folders they leave empty; and
weight shards shared across signatures that the state lists as written by this manifest, once no
record lists them and no model.json below output_dir reads them, if they still hold what was
written.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import warnings
from pathlib import Path

from tfjsbuild.building.asset_index import remove_index
from tfjsbuild.building.project import Project
from tfjsbuild.building.results import SignatureResult
from tfjsbuild.building.staging import STAGING_DIR
from tfjsbuild.files.artifacts import MODEL_JSON, file_sha256
from tfjsbuild.files.filesystem import OUTPUT_REMEDY, refusals_reported
from tfjsbuild.files.readback import InvalidData, parse_json, resolve_inside
from tfjsbuild.files.shared_weights import SHARED_WEIGHTS_DIR
from tfjsbuild.manifest.types import Manifest
from tfjsbuild.planning.plan import PlanItem
from tfjsbuild.stores.index_owner import index_owner_problem
from tfjsbuild.stores.records import SignatureRecord, output_folder
from tfjsbuild.stores.state import BuildState, state_path


def release_previous_output(item: PlanItem, project: Project) -> None:
    """The folder a signature's last build went to, if it moved and no signature owns it now."""
    previous = project.record(item)
    if previous is not None and previous.output != item.output:
        # Signatures may trade folders between builds: keep a folder another one now owns.
        owners = {r.output for r in project.state.records.values() if r is not previous}
        if previous.output not in owners:
            problem = remove_recorded_output(project.manifest, previous)
            if problem is not None:
                warnings.warn(problem, stacklevel=1)


def remove_recorded_output(manifest: Manifest, record: SignatureRecord) -> str | None:
    """Delete the files `record` lists, then the folders they leave empty; or, if that is not
    provably what this tool wrote, nothing: a warning saying why.

    The record is data read back: only a folder below the manifest's output_dir, reached
    without a symbolic link, and the files listed in it (none a link) are ever deleted.
    """
    output_dir = manifest.output_dir
    try:
        directory = output_folder(manifest.root, output_dir, record.output)
        paths = [
            resolve_inside(directory, recorded.path, f"files[{index}].path")
            for index, recorded in enumerate(record.files)
        ]
    except InvalidData as error:
        return (
            f"{record.key}: nothing deleted: {error} (tfjs-build deletes only the files it "
            f"recorded, in folders below output_dir {output_dir}, never through a symbolic link)"
        )
    problems = []
    for path in paths:
        try:
            path.unlink(missing_ok=True)
        except OSError as error:  # e.g. a folder where a file was recorded: left as it is
            problems.append(f"{path}: {error.strerror or error}")
            continue
        _remove_empty_folders(path.parent, output_dir)
    _remove_empty_folders(directory, output_dir)
    if problems:
        return f"{record.key}: could not delete {'; '.join(problems)}"
    return None


def _remove_empty_folders(folder: Path, output_dir: Path) -> None:
    """`folder` and its parents, while empty, up to (not including) output_dir."""
    while folder != output_dir and folder.is_relative_to(output_dir):
        if folder.is_symlink() or not folder.is_dir() or any(folder.iterdir()):
            return
        folder.rmdir()
        folder = folder.parent


def remove_signature(
    item: PlanItem, project: Project, *, keep_files: bool = False
) -> SignatureResult:
    """A signature gone from the manifest: its record, and its files unless `keep_files`."""
    record = project.state.records.pop(item.key, None)
    problem = None
    if record is not None and record.shared_files:
        project.state.layout_pending = True  # the others may now group their weights otherwise
    if record is not None and keep_files:
        project.save()  # the folder is another signature's now: only the record goes
    elif record is not None:
        output_dir = project.manifest.output_dir
        with refusals_reported(output_dir, "output folder", OUTPUT_REMEDY):
            problem = remove_recorded_output(project.manifest, record)
        project.save()
    # Refused deletions are said, not failed: the record is gone, the files are left alone.
    return SignatureResult(item, "removed", error=problem)


def remove_built_files(manifest: Manifest, state: BuildState) -> tuple[list[str], list[str]]:
    """`tfjs-build clean` under the build lock: the recorded outputs, the asset index and its
    loader, staging and the state files. Returns the outputs removed, and what was refused and
    why."""
    removed: list[str] = []
    problems: list[str] = []
    for record in state.records.values():
        problem = remove_recorded_output(manifest, record)
        if problem is None:
            removed.append(record.output)
        else:
            problems.append(problem)
    problems += remove_unlisted_shards(manifest, BuildState(shared_weights=state.shared_weights))
    owner_problem = index_owner_problem(manifest)
    if owner_problem is None:
        remove_index(manifest)
    else:
        problems.append(owner_problem)
    shutil.rmtree(manifest.state_dir / STAGING_DIR, ignore_errors=True)
    for name in (state_path(manifest.state_dir), manifest.state_dir / "worker.log"):
        name.unlink(missing_ok=True)
    if state.adopted_from is not None:
        state.adopted_from.unlink(missing_ok=True)
    if manifest.output_dir.is_dir() and not any(manifest.output_dir.iterdir()):
        manifest.output_dir.rmdir()
    return removed, problems


def remove_unlisted_shards(manifest: Manifest, state: BuildState) -> list[str]:
    """Delete the shared weight shards this manifest wrote that no record lists and no
    model.json below output_dir reads, if they still hold the bytes they were written with;
    forget them. Returns what was left, and why."""
    listed = {f.path for record in state.records.values() for f in record.shared_files}
    unlisted = sorted(set(state.shared_weights) - listed)
    if unlisted:  # what no record lists may still be read: by a record dropped as invalid
        listed |= _shards_read_below(manifest.output_dir)
    problems = []
    for path in unlisted:
        sha256 = state.shared_weights[path]
        if path in listed:
            continue
        try:
            file = resolve_inside(manifest.output_dir, path, path)
            if file.is_file() and file_sha256(file) != sha256:
                problems.append(f"{file} was changed since tfjs-build wrote it: left as it is")
            else:
                file.unlink(missing_ok=True)
        except InvalidData as error:
            problems.append(f"shared weight shard not deleted: {error}")
        except OSError as error:
            problems.append(f"could not delete {path}: {error.strerror or error}")
            continue
        del state.shared_weights[path]
    _remove_empty_folders(manifest.output_dir / SHARED_WEIGHTS_DIR, manifest.output_dir)
    return problems


def _shards_read_below(output_dir: Path) -> set[str]:
    """The shared shards (relative to output_dir) that any model.json below output_dir lists,
    as a browser would resolve them; never through a symbolic link, unreadable ones skipped."""
    read: set[str] = set()
    for folder, subfolders, files in os.walk(output_dir):
        here = Path(folder)
        subfolders[:] = [
            name
            for name in subfolders
            if not (here == output_dir and name == SHARED_WEIGHTS_DIR)
            and not (here / name).is_symlink()
        ]
        model_json = here / MODEL_JSON
        if MODEL_JSON not in files or model_json.is_symlink() or not model_json.is_file():
            continue  # a fifo would hang the read
        relative = here.relative_to(output_dir).as_posix()
        try:
            model = parse_json(model_json.read_bytes())
            for group in model.get("weightsManifest", []):
                read.update(
                    posixpath.normpath(posixpath.join(relative, str(path)))
                    for path in group.get("paths", [])
                )
        except (OSError, InvalidData, AttributeError, TypeError):
            continue  # not a model tfjs-build could have written: it keeps nothing
    return read


def remove_state_folders(manifest: Manifest) -> None:
    """After `clean`, once the lock is released: the manifest's state folder, and `.tfjs-build/`
    if no other manifest uses it."""
    shutil.rmtree(manifest.state_dir, ignore_errors=True)
    _remove_tool_dir_if_unused(manifest)


def _remove_tool_dir_if_unused(manifest: Manifest) -> None:
    """`.tfjs-build/` goes (with the default local cache) once no manifest keeps a state there."""
    states = manifest.state_dir.parent
    if states.is_dir() and any(states.iterdir()):
        return  # another manifest of this folder: its state and the cache it uses stay
    if state_path(manifest.tool_dir).exists():
        return  # the state of a tfjs-build from before states were per manifest
    shutil.rmtree(manifest.tool_dir, ignore_errors=True)
