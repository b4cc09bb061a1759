"""An output folder's life: staged, checked, swapped into place, recorded, and removed.

Outputs are staged on the outputs' own mount and swapped in by a rename, so a failed or
interrupted build leaves the previous output as it was. Before a folder is replaced it is
checked to hold only files this tool writes, and never to be (or lie under) a symbolic link
below output_dir. Removal deletes only what a record provably says this tool wrote. Nothing here
converts, restores from a cache or decides what to build: the build loop (`execute`) and the
cache (`cache`) call in here.
"""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import re
import shutil
import warnings
from pathlib import Path

from tfjsbuild.building.asset_index import remove_index
from tfjsbuild.building.project import Project
from tfjsbuild.building.results import SignatureResult
from tfjsbuild.errors import BuildError
from tfjsbuild.files.artifacts import (
    MODEL_JSON,
    GraphModelOutput,
    check_graph_model,
    over_budget_message,
)
from tfjsbuild.files.atomic import swap_directory
from tfjsbuild.files.filesystem import OUTPUT_REMEDY, refusals_reported
from tfjsbuild.files.readback import InvalidData, resolve_inside
from tfjsbuild.manifest.types import OUTPUT_STAGING_DIR, Manifest
from tfjsbuild.planning.plan import PlanItem
from tfjsbuild.stores.index_owner import index_owner_problem
from tfjsbuild.stores.recorded_options import RecordedOptions
from tfjsbuild.stores.state import (
    BuildState,
    SignatureRecord,
    output_folder,
    record_files,
    state_path,
)
from tfjsbuild.verify.record import VerificationRecord
from tfjsbuild.verify.request import VerificationRequest

STAGING_DIR = "staging"

# ------------------------------------------------------------------------------------ staging


def staging_root(project: Project) -> Path:
    """Where to stage outputs: on the outputs' mount, so that the swap is a rename.

    Tried, not guessed: a bind mount has the device number of the folder it shows, yet a rename
    across two mounts fails (EXDEV), and so does a rename out of a full or read-only
    `.tfjs-build`. An empty folder renamed from `.tfjs-build/staging` into output_dir tells;
    if it cannot be, outputs are staged beside them, in `output_dir/.tfjs-build-staging`.
    Creating that folder is also the check that output_dir is writable, before any conversion.
    """
    state_staging = project.manifest.state_dir / STAGING_DIR
    output_dir = project.manifest.output_dir
    beside = output_dir / OUTPUT_STAGING_DIR
    with refusals_reported(output_dir, "output folder", OUTPUT_REMEDY):
        beside.mkdir(parents=True, exist_ok=True)
    probe = state_staging / "rename-probe"
    try:
        probe.mkdir(parents=True, exist_ok=True)
        os.rename(probe, beside / probe.name)
    except OSError:
        with contextlib.suppress(OSError):
            probe.rmdir()
            state_staging.rmdir()  # only if empty: leave nothing behind
        return beside
    shutil.rmtree(beside, ignore_errors=True)
    return state_staging


def remove_staging(manifest: Manifest) -> None:
    """Every place staging may be, chosen or not (`staging_root` may not have returned yet)."""
    for root in (manifest.state_dir / STAGING_DIR, manifest.output_dir / OUTPUT_STAGING_DIR):
        shutil.rmtree(root, ignore_errors=True)


def over_budget(item: PlanItem, directory: Path, size: int) -> str | None:
    """Why the output in `directory` breaks its `max_bytes`, or None."""
    budget = item.target.checks.max_bytes if item.target is not None else None
    if budget is None or size <= budget:
        return None
    return over_budget_message(directory, size, budget)


# ------------------------------------------------------------------- into place, recorded


def place(
    item: PlanItem,
    project: Project,
    staging: Path,
    verification: VerificationRecord | None,
    seconds: float,
    *,
    verified_with: VerificationRequest | None = None,
) -> GraphModelOutput | SignatureResult:
    """Check a staged output, swap it into place and record it; a failed result if it cannot."""
    target = project.manifest.root / item.output
    try:
        checked = _check_staged(item, project, staging, target)
        _swap_into_place(staging, target)
    except (BuildError, OSError) as error:
        return SignatureResult(item, "failed", error=str(error), verification=verification)
    _release_previous_output(item, project)
    project.state.records[item.key] = _new_record(
        item, target, checked, seconds, verification, verified_with
    )
    project.save()
    return checked


def _check_staged(
    item: PlanItem, project: Project, staging: Path, target: Path
) -> GraphModelOutput:
    """The staged output's files, once it is a graph model within budget that may replace
    `target`; raises BuildError (or OutputCheckError, an OSError) saying why not."""
    checked = check_graph_model(staging)
    problem = over_budget(item, staging, checked.bytes)
    if problem is not None:
        raise BuildError(problem)
    linked = output_link_problem(item, project)  # again: the link may be new
    if linked is not None:
        raise BuildError(linked)
    _check_replaceable(target, project.record(item), project.manifest)
    return checked


def _release_previous_output(item: PlanItem, project: Project) -> None:
    """The folder a signature's last build went to, if it moved and no signature owns it now."""
    previous = project.record(item)
    if previous is not None and previous.output != item.output:
        # Signatures may trade folders between builds: keep a folder another one now owns.
        owners = {r.output for r in project.state.records.values() if r is not previous}
        if previous.output not in owners:
            problem = remove_recorded_output(project.manifest, previous)
            if problem is not None:
                warnings.warn(problem, stacklevel=1)


def _new_record(
    item: PlanItem,
    target: Path,
    checked: GraphModelOutput,
    seconds: float,
    verification: VerificationRecord | None,
    verified_with: VerificationRequest | None,
) -> SignatureRecord:
    """What the state keeps of an output just placed at `target`."""
    assert item.fingerprint is not None
    return SignatureRecord(
        model=item.model,
        signature=item.signature,
        output=item.output,
        fingerprint=item.fingerprint.digest,
        parts=dict(item.fingerprint.parts),
        options=RecordedOptions.of(item.fingerprint.options),
        files=record_files(target, checked.files),
        inputs=checked.inputs,
        outputs=checked.outputs,
        content_hash=checked.content_hash,
        seconds=round(seconds, 3),
        details=dict(item.fingerprint.details),
        verification=verification,
        verified_with=verified_with if verification is not None else None,
    )


def _swap_into_place(staging: Path, target: Path) -> None:
    """`swap_directory`, across mounts too, with what the filesystem refused said plainly."""
    try:
        with refusals_reported(target, "output folder", OUTPUT_REMEDY):
            try:
                swap_directory(staging, target)
            except OSError as error:
                if error.errno != errno.EXDEV:
                    raise
                # A mount inside output_dir (staging is on output_dir's own mount): copy the
                # staged output beside the target, on its mount, and swap from there.
                beside = target.parent / f".{target.name}{OUTPUT_STAGING_DIR}"
                shutil.rmtree(beside, ignore_errors=True)
                try:
                    shutil.copytree(staging, beside)
                    swap_directory(beside, target)
                finally:
                    shutil.rmtree(beside, ignore_errors=True)
    except OSError as error:
        if error.errno != errno.EBUSY:
            raise
        raise BuildError(
            f"output folder {target} is a mount point: outputs are replaced by renaming a new "
            "folder into place, which cannot replace a mount point; mount the folder above it "
            "instead"
        ) from error


def output_link_problem(item: PlanItem, project: Project) -> str | None:
    """Why a signature's output folder cannot be replaced: it is a symbolic link, or lies under
    one, below output_dir. None when it can (it is a real folder or does not exist yet).

    Refused rather than followed. Replacing an output renames a new folder into its place: for
    a link that would replace the link itself, leaving the folder it points to stale (and a
    symlinked deploy folder silently disconnected); through a linked folder it would write
    wherever the link points, outside what this tool owns, and the next run would not trust a
    record through a link (`readback.resolve_inside`). output_dir itself may be a link (common
    in monorepos): it is resolved when the manifest is loaded, so this looks only below it.
    """
    output_dir = project.manifest.output_dir
    target = project.manifest.root / item.output
    relative = os.path.relpath(target, output_dir)
    if relative.split(os.sep)[0] in (os.curdir, os.pardir):
        return None  # not below output_dir: the manifest's own checks report that
    folder = output_dir
    for part in Path(relative).parts:
        folder = folder / part
        if not folder.is_symlink():
            continue
        try:
            points_to = f" (to {os.readlink(folder)})"
        except OSError:
            points_to = ""
        if folder == target:
            problem = (
                f"is a symbolic link{points_to}: outputs are replaced by renaming a new folder "
                "into place, which would replace the link, not the folder it points to"
            )
        else:
            problem = (
                f"lies under {folder}, a symbolic link{points_to}: outputs are written only "
                "into real folders below output_dir, never through a link to elsewhere"
            )
        message = (
            f"output folder {target} {problem}. Replace the link by a real folder, or point "
            "output_dir (which may be a link) where the outputs should go"
        )
        location = None
        if item.target is not None:
            location = item.target.location or item.target.source_location
        return message if location is None else project.manifest.problem(location, message).format()
    return None


def _check_replaceable(target: Path, record: SignatureRecord | None, manifest: Manifest) -> None:
    """Never replace a folder holding files tfjs-build did not write.

    The swap replaces the whole folder, so every file in it must be one this tool wrote: one the
    record lists, or one a graph model is made of (model.json and weight shards, as an earlier
    conversion or a stale shard leaves them). A user's README or assets there stop the build.
    A target through a symbolic link never gets here: `output_link_problem` refuses it.
    """
    if not target.exists():
        return
    if not target.is_dir():
        raise BuildError(f"output {target} exists and is not a folder; move it away")
    ours = record is not None and manifest.root / record.output == target
    if not ours and any(target.iterdir()) and not (target / MODEL_JSON).is_file():
        raise BuildError(
            f"output folder {target} exists, holds files tfjs-build did not write and no "
            f"{MODEL_JSON}; move them away or choose another output"
        )
    recorded = {f.path for f in record.files} if ours and record is not None else set()
    foreign = sorted(
        relative
        for path in target.rglob("*")
        if not path.is_dir()
        and (relative := path.relative_to(target).as_posix()) not in recorded
        and not _MODEL_FILE.fullmatch(relative)
    )
    if foreign:
        shown = ", ".join(foreign[:5]) + (
            f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""
        )
        raise BuildError(
            f"output folder {target} holds files tfjs-build did not write ({shown}); the build "
            "replaces the whole folder, so move them out of it (e.g. beside output_dir)"
        )


# What a converter writes into an output folder: tfjs-build may replace these, and only these.
_MODEL_FILE = re.compile(r"model\.json|group\d+-shard\d+of\d+\.bin")


# -------------------------------------------------------------------------------- removal


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


def nested(a: str, b: str) -> bool:
    """Whether two output folders (relative, POSIX) are the same or one holds the other."""
    a, b = posixpath.normpath(a), posixpath.normpath(b)
    return a == b or a.startswith(b + "/") or b.startswith(a + "/")


def remove_signature(
    item: PlanItem, project: Project, *, keep_files: bool = False
) -> SignatureResult:
    """A signature gone from the manifest: its record, and its files unless `keep_files`."""
    record = project.state.records.pop(item.key, None)
    problem = None
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
    loader, staging and the state files. Returns the outputs removed, and what was refused and why."""
    removed: list[str] = []
    problems: list[str] = []
    for record in state.records.values():
        problem = remove_recorded_output(manifest, record)
        if problem is None:
            removed.append(record.output)
        else:
            problems.append(problem)
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
