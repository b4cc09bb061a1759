"""An output into place: a staged output checked, swapped in by a rename, and recorded.

Outputs are staged on the outputs' own mount (`staging`) and swapped in by a rename, so a failed
or interrupted build leaves the previous output as it was. Before a folder is replaced it is
checked to hold only files this tool writes, and never to be (or lie under) a symbolic link
below output_dir. Nothing here converts, restores from a cache, removes (`removal`) or decides
what to build: the build loop (`execute`) and the cache (`cache`) call in here.
"""

from __future__ import annotations

import errno
import os
import posixpath
import re
import shutil
from pathlib import Path

from tfjsbuild.building.project import Project
from tfjsbuild.building.removal import release_previous_output
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
from tfjsbuild.manifest.types import OUTPUT_STAGING_DIR, Manifest
from tfjsbuild.planning.plan import PlanItem
from tfjsbuild.stores.build_history import now_utc
from tfjsbuild.stores.recorded_options import RecordedOptions
from tfjsbuild.stores.records import SignatureRecord, record_files
from tfjsbuild.verify.quantization import QuantizationChoice
from tfjsbuild.verify.record import VerificationRecord
from tfjsbuild.verify.request import VerificationRequest


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
    quantization: QuantizationChoice | None = None,
) -> GraphModelOutput | SignatureResult:
    """Check a staged output, swap it into place and record it; a failed result if it cannot."""
    target = project.manifest.root / item.output
    try:
        checked = _check_staged(item, project, staging, target)
        swap_into_place(staging, target)
    except (BuildError, OSError) as error:
        return SignatureResult(item, "failed", error=str(error), verification=verification)
    previous = project.record(item)
    release_previous_output(item, project)
    project.state.records[item.key] = _new_record(
        item, target, checked, seconds, verification, verified_with, previous, quantization
    )
    if item.target is not None and item.target.share_weights:
        project.state.layout_pending = True  # with its own shards until laid out
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


def _new_record(
    item: PlanItem,
    target: Path,
    checked: GraphModelOutput,
    seconds: float,
    verification: VerificationRecord | None,
    verified_with: VerificationRequest | None,
    replaced: SignatureRecord | None,
    quantization: QuantizationChoice | None,
) -> SignatureRecord:
    """What the state keeps of an output just placed at `target`, in place of `replaced`'s."""
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
        built_at=now_utc(),
        previous=None if replaced is None else replaced.superseded(),
        quantization_choice=quantization,
    )


def swap_into_place(staging: Path, target: Path) -> None:
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


def nested(a: str, b: str) -> bool:
    """Whether two output folders (relative, POSIX) are the same or one holds the other."""
    a, b = posixpath.normpath(a), posixpath.normpath(b)
    return a == b or a.startswith(b + "/") or b.startswith(a + "/")
