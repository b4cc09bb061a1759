"""A finished task into a result: a conversion's output placed and recorded (and cached), a
verification of an output in place recorded, or a failure located at its manifest line.

The build loop (`execute`) calls `finish` once per task, in the parent, as each completes.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from tfjsbuild.building.cache import save
from tfjsbuild.building.outputs import place
from tfjsbuild.building.project import Project
from tfjsbuild.building.results import SignatureResult
from tfjsbuild.manifest.types import Manifest
from tfjsbuild.planning.plan import PlanItem
from tfjsbuild.stores.records import output_change
from tfjsbuild.worker.task import ConversionOutcome, ConversionTask

if TYPE_CHECKING:
    from concurrent.futures import Future


def finish(
    item: PlanItem,
    task: ConversionTask,
    future: Future[ConversionOutcome],
    project: Project,
) -> SignatureResult:
    # The local pool reports a dead or stopped worker as a failed outcome. Anything else an
    # executor raises (even SystemExit or KeyboardInterrupt from a remote task) fails only this
    # signature: `exception()` hands it over instead of raising it here.
    error = future.exception()
    if error is not None:
        message = f"the conversion task failed: {type(error).__name__}: {error}"
        location = item.target.source_location if item.target is not None else None
        if location is not None:
            message = project.manifest.problem(location, message).format()
        return SignatureResult(item, "failed", error=message)
    outcome = future.result()
    if outcome.error is not None:
        return SignatureResult(
            item,
            "failed",
            outcome.seconds,
            error=_located(item, project.manifest, outcome),
            timings=outcome.timings,
            verification=outcome.verification,
            quantization=outcome.quantization,
            warnings=outcome.warnings,
        )
    if task.kind == "verify":
        assert task.output_dir is not None
        return _record_verification(item, project, outcome, Path(task.output_dir))
    assert item.fingerprint is not None
    placed = place(
        item,
        project,
        Path(task.staging_dir),
        outcome.verification,
        outcome.seconds,
        verified_with=item.fingerprint.verify if outcome.verification is not None else None,
        quantization=outcome.quantization,
    )
    if isinstance(placed, SignatureResult):
        return _found(replace(placed, seconds=outcome.seconds, timings=outcome.timings), outcome)
    record = project.state.records[item.key]
    save(item, project, project.manifest.root / item.output, record)
    built = SignatureResult.sized(item, "built", placed.files, outcome.seconds)
    return _found(
        replace(built, timings=outcome.timings, verification=outcome.verification), outcome
    )


def _found(result: SignatureResult, outcome: ConversionOutcome) -> SignatureResult:
    """`result` with what the worker found besides the files: auto's choice, the range check."""
    return replace(result, quantization=outcome.quantization, warnings=outcome.warnings)


def _record_verification(
    item: PlanItem, project: Project, outcome: ConversionOutcome, verified_folder: Path
) -> SignatureResult:
    """Record a passed verification of the output in place; its files stay as they are.
    `verified_folder`: the folder the worker read (a copy with its own shards, for an output
    with shared weights)."""
    record = project.record(item)
    assert record is not None and item.fingerprint is not None
    assert outcome.verification is not None  # a verify task always runs the verification
    done = SignatureResult.sized(
        item,
        "verified",
        record.all_files,
        outcome.seconds,
        timings=outcome.timings,
        verification=outcome.verification,
        quantization=record.quantization_choice,
    )
    # The worker read the folder while it ran: what it verified must still be what is recorded.
    changed = output_change(project.manifest.root, record, project.manifest.output_dir)
    if changed is not None:
        return replace(
            done,
            status="failed",
            error=f"{changed} while it was being verified; the next run converts it again",
        )
    verified = replace(
        record, verification=outcome.verification, verified_with=item.fingerprint.verify
    )
    project.state.records[item.key] = verified
    project.save()
    if not record.shared_files:
        # A cache entry is the output as converted: a copy read back from shared shards is laid
        # out otherwise (`standalone_copy`), so it does not replace the entry.
        save(item, project, verified_folder, verified)
    return done


def _located(item: PlanItem, manifest: Manifest, outcome: ConversionOutcome) -> str:
    """A source's or signature's error at its manifest line, as manifest errors are shown."""
    assert outcome.error is not None and item.target is not None
    location = None
    if outcome.error_at == "source":
        location = item.target.source_location
    elif outcome.error_at == "signature":
        location = item.target.location or item.target.source_location
    if location is None:
        return outcome.error
    return manifest.problem(location, outcome.error).format()
