"""Run a plan: the build loop. Conversions go to an executor; each finished one is placed.

A `verify` item runs the output already in place in TF.js (in a worker, beside TensorFlow) and
records the verification only: its files are read (an output with shared weights through a
copy with its own shards, in staging), never swapped or written.

The parent alone moves outputs and writes state, one signature at a time, so an interrupted
build keeps every signature finished before the interruption and nothing half-written. Once
all are placed, the weights of signatures with `share_weights` are laid out together
(`shared_weights`). This module decides what happens to each item and in which order; staging,
swapping and removing outputs are `outputs`', restoring and saving cache entries `cache`'s,
turning a finished task into a result `finish`'s, running tasks an executor's (`executors`).
"""

from __future__ import annotations

import os
import uuid
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from tfjsbuild.building.asset_index import write_index
from tfjsbuild.building.cache import restore
from tfjsbuild.building.executors import KeptWorkers, TaskExecutor, start_executor
from tfjsbuild.building.finish import finish
from tfjsbuild.building.outputs import nested, output_link_problem, over_budget
from tfjsbuild.building.project import Project
from tfjsbuild.building.removal import remove_signature
from tfjsbuild.building.results import Reporter, SignatureResult
from tfjsbuild.building.shared_weights import share_weights, standalone_copy
from tfjsbuild.building.staging import remove_staging, staging_root
from tfjsbuild.files.artifacts import OutputCheckError, size_parts
from tfjsbuild.files.filesystem import refusals_reported
from tfjsbuild.files.readback import InvalidData
from tfjsbuild.manifest.types import VerifySettings
from tfjsbuild.planning.plan import PlanItem
from tfjsbuild.stores.state import STATE_REMEDY
from tfjsbuild.version import stock_passes_requested
from tfjsbuild.worker.task import ConversionOutcome, ConversionTask, VerifyTask

if TYPE_CHECKING:
    from concurrent.futures import Future

    from tfjsbuild.verify.runtime import Runtime

# The tasks of one build, by task key: the plan item each converts, and the task itself.
Tasks = dict[str, tuple[PlanItem, ConversionTask]]


def default_jobs(build_count: int) -> int:
    """One worker per core, at most 4 (each holds TensorFlow and a model: ~1-2 GB)."""
    return max(1, min(build_count, os.cpu_count() or 1, 4))


def execute(
    items: Sequence[PlanItem],
    projects: Mapping[Path, Project],
    *,
    jobs: int | None,
    fail_fast: bool,
    reporter: Reporter,
    verify: bool = True,
    executor: str = "local",
    ray_address: str | None = None,
    workers: KeptWorkers | None = None,
) -> list[SignatureResult]:
    """Build `items`; local workers are started for this build, or taken from `workers` (and
    left running for the next build) when given."""
    for project in projects.values():
        # Left by a build that was killed; the lock says no other build is using it.
        remove_staging(project.manifest)
    results, builds = _settle_without_workers(items, projects, verify)
    for result in results.values():
        if result.status != "up-to-date":
            reporter.signature_finished(result)
    worker_count = jobs or default_jobs(len(builds))
    runtime = None
    if verify and any(_verify_settings(item) is not None for item in builds):
        from tfjsbuild.verify.runtime import find_runtime

        # Before any conversion: a missing Node.js fails fast; a first install says so.
        runtime = find_runtime(announce=reporter.notice)
    if builds:
        converted = _convert_all(
            builds,
            projects,
            worker_count,
            fail_fast,
            reporter,
            runtime,
            executor,
            ray_address,
            workers,
        )
        for result in converted:
            results[(result.item.manifest, result.item.key)] = result
    for path, project in projects.items():
        _share_weights(project, [item for item in items if item.manifest == path], results)
        project.save()
        write_index(project)
    return [results[(item.manifest, item.key)] for item in items]


def _share_weights(
    project: Project, items: Sequence[PlanItem], results: dict[tuple[Path, str], SignatureResult]
) -> None:
    """Lay out the weights of the manifest's signatures with `share_weights`, now that every
    output of the build is in place (their results then give the sizes laid out); staging is
    removed however this ends."""
    budgets = {item.key: item.target.checks.max_bytes for item in items if item.target is not None}
    try:
        for warning in share_weights(project, budgets):
            warnings.warn(warning, stacklevel=1)
    finally:
        remove_staging(project.manifest)
    for item in items:
        record = project.record(item)
        result = results[(item.manifest, item.key)]
        if record is not None and record.shared_files and result.status in ("built", "restored"):
            model_json, weights = size_parts(record.all_files)
            results[(item.manifest, item.key)] = replace(
                result, bytes=record.bytes, model_json_bytes=model_json, weight_bytes=weights
            )


def _settle_without_workers(
    items: Sequence[PlanItem], projects: Mapping[Path, Project], verify: bool
) -> tuple[dict[tuple[Path, str], SignatureResult], list[PlanItem]]:
    """The results of the items no worker is needed for (up to date, removed, blocked, restored
    from a cache), and the items left to convert or verify, in plan order."""
    results: dict[tuple[Path, str], SignatureResult] = {}
    builds: list[PlanItem] = []
    # Output folders that signatures of this build keep or take: a removed signature's folder
    # may now belong to another one (a model renamed, an `output:` moved), and is not deleted.
    claimed = {
        (item.manifest, item.output) for item in items if item.action != "remove" and item.output
    }
    for item in items:
        project = projects[item.manifest]
        if item.action == "up-to-date" or (item.action == "verify" and not verify):
            results[(item.manifest, item.key)] = _up_to_date(item, project)
        elif item.action == "verify" and (unfit := _up_to_date(item, project)).status == "failed":
            results[(item.manifest, item.key)] = unfit  # over its budget: no use verifying it
        elif item.action == "remove":
            taken = any(
                nested(item.output, output)
                for manifest, output in claimed
                if manifest == item.manifest
            )
            results[(item.manifest, item.key)] = remove_signature(item, project, keep_files=taken)
        elif item.blocked is not None:
            results[(item.manifest, item.key)] = SignatureResult(item, "failed", error=item.blocked)
        elif (linked := output_link_problem(item, project)) is not None:
            results[(item.manifest, item.key)] = SignatureResult(item, "failed", error=linked)
        elif item.cached is not None and (restored := restore(item, project, verify)) is not None:
            results[(item.manifest, item.key)] = restored
        else:
            builds.append(item)  # conversions, and verifications of outputs in place
    return results, builds


def _up_to_date(item: PlanItem, project: Project) -> SignatureResult:
    """An output already built; it still fails if it is over a (new) size budget."""
    record = project.record(item)
    if record is None:
        return SignatureResult(item, "up-to-date")
    problem = over_budget(item, project.manifest.root / record.output, record.bytes)
    return SignatureResult.sized(
        item,
        "up-to-date" if problem is None else "failed",
        record.all_files,
        error=problem,
        verification=record.verification,
        quantization=record.quantization_choice,
    )


def _verify_settings(item: PlanItem) -> VerifySettings | None:
    if item.target is None or not item.target.checks.verify.enabled:
        return None
    return item.target.checks.verify


def _convert_all(
    builds: Sequence[PlanItem],
    projects: Mapping[Path, Project],
    worker_count: int,
    fail_fast: bool,
    reporter: Reporter,
    runtime: Runtime | None,
    executor: str,
    ray_address: str | None,
    workers: KeptWorkers | None,
) -> list[SignatureResult]:
    # Removed however this ends (even Ctrl-C before the workers start): never left behind.
    try:
        staging_roots: dict[Path, Path] = {}
        for path, project in projects.items():
            staging_roots[path] = staging_root(project)  # made, and output_dir is writable
        log_dir = next(iter(projects.values())).manifest.state_dir
        log_path = log_dir / "worker.log"
        with refusals_reported(log_dir, "state folder", STATE_REMEDY):
            log_path.write_text("")
        tasks: Tasks = {}
        build = uuid.uuid4().hex  # a kept worker forgets what only an earlier build could use
        for index, item in enumerate(builds):
            staging = staging_roots[item.manifest]
            task = _task(index, item, staging, projects[item.manifest], runtime, build)
            tasks[task.key] = (item, task)
        pool = start_executor(executor, worker_count, log_path, ray_address, workers)
        starting = pool.workers_to_start(len(tasks))
        how = pool.how_workers_start() if starting else ""
        reporter.build_started(builds, worker_count, starting, how)
        try:
            results = _run_tasks(tasks, pool, projects, fail_fast, reporter)
        except BaseException:
            # Ctrl-C or a bug: stop the workers now rather than wait for their conversions.
            pool.shutdown(abort=True)
            raise
        else:
            pool.shutdown(abort=False)
    finally:
        # Every place staging may be, not only those chosen: Ctrl-C can land inside
        # `staging_root` (just after "Converting" is printed) before one is recorded.
        for project in projects.values():
            remove_staging(project.manifest)
    return results


def _task(
    index: int,
    item: PlanItem,
    staging: Path,
    project: Project,
    runtime: Runtime | None,
    build: str,
) -> ConversionTask:
    """The task converting (or verifying) `item` in `build`, staged in a folder of its own."""
    assert item.target is not None and item.fingerprint is not None
    source = item.target.source
    verify_only = item.action == "verify"
    staging_dir = staging / f"{index:04d}-{item.model}-{item.signature}"
    verified = project.manifest.root / item.output
    record = project.record(item)
    if verify_only and record is not None and record.shared_files:
        # Verified from a copy with its own shards (a browser fetches a model's files from its
        # folder). One that cannot be read back is converted again instead.
        try:
            copy = staging_dir.with_name(staging_dir.name + "-in")
            verified = standalone_copy(project, record, copy)
        except (OutputCheckError, InvalidData, OSError):
            verify_only = False
    return ConversionTask(
        key=f"{index}",
        source=source,
        signature=item.signature,
        options=item.target.options,
        staging_dir=str(staging_dir),
        model_key=f"{source}\0{item.fingerprint.model}",
        scratch_dir=str(staging / "scratch"),
        verify=_verify_task(item, runtime),
        timeout=item.target.checks.timeout,
        kind="verify" if verify_only else "convert",
        # Its output in place: the plan found it unchanged since it was recorded.
        output_dir=str(verified) if verify_only else None,
        stock_passes=stock_passes_requested(os.environ),
        build=build,
        quantization_atol=None
        if (wanted := _verify_settings(item)) is None
        else wanted.strictest_atol,
    )


def _run_tasks(
    tasks: Tasks,
    pool: TaskExecutor,
    projects: Mapping[Path, Project],
    fail_fast: bool,
    reporter: Reporter,
) -> list[SignatureResult]:
    """Submit every task, finish each as it completes; with `fail_fast`, skip the rest after
    the first failure."""
    # Imported here: a no-op build never starts a worker and should not pay for these imports.
    from concurrent.futures import FIRST_COMPLETED, wait

    results: list[SignatureResult] = []
    pending: dict[Future[ConversionOutcome], str] = {
        pool.submit(task): key for key, (_, task) in tasks.items()
    }
    while pending:
        # Woken twice a second at least, to say on the progress line what the workers are on.
        done, _ = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
        running = pool.running().items()
        reporter.working({tasks[key][0].key: phase for key, phase in running if key in tasks})
        for future in done:
            key = pending.pop(future)
            item, task = tasks[key]
            result = finish(item, task, future, projects[item.manifest])
            results.append(result)
            reporter.signature_finished(result)
            if result.status == "failed" and fail_fast:
                for other in pending:
                    other.cancel()
        if fail_fast and any(r.status == "failed" for r in results):
            for future, key in list(pending.items()):
                if future.cancelled():
                    skipped = SignatureResult(
                        tasks[key][0],
                        "skipped",
                        error="not built: --fail-fast stopped the build",
                    )
                    results.append(skipped)
                    reporter.signature_finished(skipped)
                    del pending[future]
    return results


def _verify_task(item: PlanItem, runtime: Runtime | None) -> VerifyTask | None:
    settings = _verify_settings(item)
    wanted = None if item.fingerprint is None else item.fingerprint.verify
    if settings is None or runtime is None or wanted is None:
        return None
    # The plan's finding stands: no browser then, WebGL is skipped (as the plan recorded it).
    webgl = wanted.browser and any(backend.backend == "webgl" for backend in wanted.backends)
    return VerifyTask(
        samples=settings.samples,
        inputs=None if settings.inputs is None else str(settings.inputs),
        seed=item.key,
        backends=wanted.backends,
        node=runtime.node,
        runtime=str(runtime.folder),
        browser=webgl,
    )
