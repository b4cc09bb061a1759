"""Run a plan: conversions in worker processes, outputs staged, checked and swapped into place.

A `verify` item runs the output already in place in TF.js (in a worker, beside TensorFlow) and
records the verification only: its files are read, never staged, swapped or written.

The parent alone moves outputs and writes state, one signature at a time, so an interrupted
build keeps every signature finished before the interruption and nothing half-written.
"""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import re
import shutil
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from tfjsbuild.building.cache import CacheEntry, CacheHit, Store, cache_key, serves
from tfjsbuild.building.results import Reporter, SignatureResult
from tfjsbuild.building.state import (
    BuildState,
    SignatureRecord,
    output_change,
    output_folder,
    record_files,
    save_state,
)
from tfjsbuild.errors import BuildError
from tfjsbuild.files.artifacts import (
    MODEL_JSON,
    GraphModelOutput,
    OutputCheckError,
    OutputFile,
    check_graph_model,
    over_budget_message,
    size_parts,
    validate_graph_model,
)
from tfjsbuild.files.atomic import swap_directory, write_atomically
from tfjsbuild.files.filesystem import OUTPUT_REMEDY, STATE_REMEDY, refusals_reported
from tfjsbuild.files.readback import InvalidData, as_dict, as_str, parse_json, resolve_inside
from tfjsbuild.manifest.load import OUTPUT_STAGING_DIR, Manifest, VerifySettings
from tfjsbuild.planning.fingerprint import canonical_json
from tfjsbuild.planning.plan import PlanItem
from tfjsbuild.worker.task import ConversionOutcome, ConversionTask, VerifyTask

if TYPE_CHECKING:
    from concurrent.futures import Future

    from tfjsbuild.verify.runtime import Runtime

INDEX_VERSION = 1
STAGING_DIR = "staging"


@dataclass
class Project:
    """One manifest being built: its parsed manifest and the state the parent keeps writing."""

    manifest: Manifest
    state: BuildState
    stores: Sequence[Store] = ()  # the caches to restore from and store into

    def record(self, item: PlanItem) -> SignatureRecord | None:
        return self.state.records.get(item.key)

    def save(self) -> None:
        save_state(self.manifest.state_dir, self.state)


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
) -> list[SignatureResult]:
    results: dict[tuple[Path, str], SignatureResult] = {}
    builds: list[PlanItem] = []
    for project in projects.values():
        # Left by a build that was killed; the lock says no other build is using it.
        for staging in (
            project.manifest.state_dir / STAGING_DIR,
            project.manifest.output_dir / OUTPUT_STAGING_DIR,
        ):
            shutil.rmtree(staging, ignore_errors=True)
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
                _nested(item.output, output)
                for manifest, output in claimed
                if manifest == item.manifest
            )
            results[(item.manifest, item.key)] = _remove(item, project, keep_files=taken)
        elif item.blocked is not None:
            results[(item.manifest, item.key)] = SignatureResult(item, "failed", error=item.blocked)
        elif (linked := _output_link_problem(item, project)) is not None:
            results[(item.manifest, item.key)] = SignatureResult(item, "failed", error=linked)
        elif item.cached is not None and (restored := _restore(item, project, verify)) is not None:
            results[(item.manifest, item.key)] = restored
        else:
            builds.append(item)  # conversions, and verifications of outputs in place
    for result in results.values():
        if result.status != "up-to-date":
            reporter.signature_finished(result)
    worker_count = jobs or default_jobs(len(builds))
    runtime = None
    if verify and any(_verify_settings(item) is not None for item in builds):
        from tfjsbuild.verify.runtime import find_runtime

        runtime = find_runtime()  # before any conversion: a missing Node.js fails fast
    if builds:
        reporter.build_started(builds, worker_count)
        converted = _convert_all(
            builds,
            projects,
            worker_count,
            fail_fast,
            reporter,
            runtime,
            executor,
            ray_address,
        )
        for result in converted:
            results[(result.item.manifest, result.item.key)] = result
    for project in projects.values():
        project.save()
        write_index(project)
    return [results[(item.manifest, item.key)] for item in items]


def _up_to_date(item: PlanItem, project: Project) -> SignatureResult:
    """An output already built; it still fails if it is over a (new) size budget."""
    record = project.record(item)
    if record is None:
        return SignatureResult(item, "up-to-date")
    model_json, weights = size_parts(record.files)
    over_budget = _over_budget(item, project.manifest.root / record.output, record.bytes)
    if over_budget is not None:
        return SignatureResult(
            item,
            "failed",
            bytes=record.bytes,
            error=over_budget,
            model_json_bytes=model_json,
            weight_bytes=weights,
            verification=record.verification,
        )
    return SignatureResult(
        item,
        "up-to-date",
        bytes=record.bytes,
        model_json_bytes=model_json,
        weight_bytes=weights,
        verification=record.verification,
    )


def _restore(item: PlanItem, project: Project, verify: bool) -> SignatureResult | None:
    """Put a cached build in place as a conversion would; None if the entry is unusable.

    With `verify`, only an entry carrying the verification the item wants will do.
    """
    start = time.perf_counter()
    staging_root = _staging_root(project)
    staging = staging_root / f"restore-{item.model}-{item.signature}"
    for store, entry in _cache_hits(item, project, verify):
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        try:
            problem = store.fetch(entry, staging)
            if problem is None:
                # Checked before it is placed: a bad model from a cache is a miss, not a failure.
                validate_graph_model(staging)
                outcome = _place(
                    item,
                    project,
                    staging,
                    entry.verification,
                    entry.seconds,
                    verified_with=entry.verified_with,
                )
                if isinstance(outcome, SignatureResult):
                    return outcome  # over budget, or the folder is not ours: a real failure
                checked = outcome
                store.mark_used(entry.key)
                # A remote hit also fills the local cache, so the next restore is local.
                target = project.manifest.root / item.output
                _store(item, project, target, project.state.records[item.key], exclude=store)
                seconds = time.perf_counter() - start
                model_json, weights = size_parts(checked.files)
                return SignatureResult(
                    item,
                    "restored",
                    seconds,
                    checked.bytes,
                    timings={"restore": seconds},
                    model_json_bytes=model_json,
                    weight_bytes=weights,
                    verification=entry.verification,
                    cache=store.label,
                )
        except (OutputCheckError, OSError) as error:
            problem = str(error)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            with contextlib.suppress(OSError):
                staging_root.rmdir()  # only if empty: leave nothing behind
        # A corrupt or partial entry is never restored: convert instead (and overwrite it).
        warnings.warn(
            f"{store.label} cache {store.url}: entry for {item.key} is unusable ({problem}); "
            "building it instead",
            stacklevel=1,
        )
    return None


def _cache_hits(item: PlanItem, project: Project, verify: bool) -> Iterator[CacheHit]:
    """The entry the plan found; should it prove unusable, the later stores' (looked up now)."""
    assert item.cache_hit is not None and item.fingerprint is not None
    yield item.cache_hit
    stores = list(project.stores)
    after = next((i + 1 for i, s in enumerate(stores) if s is item.cache_hit.store), len(stores))
    for store in stores[after:]:
        entry = store.get(cache_key(item.fingerprint))
        if entry is not None and serves(entry, item.fingerprint.verify if verify else {}):
            yield CacheHit(store, entry)


def _store(
    item: PlanItem,
    project: Project,
    output: Path,
    record: SignatureRecord,
    exclude: Store | None = None,
) -> None:
    """Offer a fresh build (or verification) to the writable caches, with the verification it
    carries (None: not verified); a cache that fails is only a warning."""
    if item.fingerprint is None:
        return
    # An entry carries the verification it promises (`cache._check_promise`): both or neither.
    verified = record.verification is not None and bool(record.verified_with)
    entry = CacheEntry(
        key=cache_key(item.fingerprint),
        files=tuple(OutputFile(f.path, f.size, f.sha256) for f in record.files),
        inputs=record.inputs,
        outputs=record.outputs,
        verification=record.verification if verified else None,
        seconds=record.seconds,
        verified_with=record.verified_with if verified else None,
    )
    for store in project.stores:
        if store.writable and store is not exclude and store.unreachable is None:
            try:
                if entry.verification is None and store.get(entry.key) is not None:
                    continue  # an unverified build never replaces an entry that may be verified
                store.put(entry, output)
            except Exception as error:  # network, permissions, quota: the build itself is fine
                warnings.warn(
                    f"could not store {item.key} in the {store.label} cache: {error}", stacklevel=1
                )


def _over_budget(item: PlanItem, directory: Path, size: int) -> str | None:
    """Why the output in `directory` breaks its `max_bytes`, or None."""
    budget = item.target.checks.max_bytes if item.target is not None else None
    if budget is None or size <= budget:
        return None
    return over_budget_message(directory, size, budget)


def _verify_settings(item: PlanItem) -> VerifySettings | None:
    if item.target is None or not item.target.checks.verify.enabled:
        return None
    return item.target.checks.verify


def _staging_root(project: Project) -> Path:
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


def _convert_all(
    builds: Sequence[PlanItem],
    projects: Mapping[Path, Project],
    worker_count: int,
    fail_fast: bool,
    reporter: Reporter,
    runtime: Runtime | None,
    executor: str,
    ray_address: str | None,
) -> list[SignatureResult]:
    # Imported here: a no-op build never starts a worker and should not pay for these imports.
    from concurrent.futures import FIRST_COMPLETED, wait

    staging_roots: dict[Path, Path] = {}
    # Removed however this ends (even Ctrl-C before the workers start): never left behind.
    try:
        for path, project in projects.items():
            staging_roots[path] = _staging_root(project)  # made, and output_dir is writable
        log_dir = next(iter(projects.values())).manifest.state_dir
        log_path = log_dir / "worker.log"
        with refusals_reported(log_dir, "state folder", STATE_REMEDY):
            log_path.write_text("")

        tasks: dict[str, tuple[PlanItem, ConversionTask]] = {}
        for index, item in enumerate(builds):
            assert item.target is not None and item.fingerprint is not None
            source = item.target.source
            staging_root = staging_roots[item.manifest]
            project_root = projects[item.manifest].manifest.root
            verify_only = item.action == "verify"
            task = ConversionTask(
                key=f"{index}",
                source=source,
                signature=item.signature,
                options=item.target.options,
                staging_dir=str(staging_root / f"{index:04d}-{item.model}-{item.signature}"),
                cache_key=f"{source}\0{item.fingerprint.parts['source']}",
                scratch_dir=str(staging_root / "scratch"),
                verify=_verify_task(item, runtime),
                timeout=item.target.checks.timeout,
                kind="verify" if verify_only else "convert",
                # Its output in place: the plan found it unchanged since it was recorded.
                output_dir=str(project_root / item.output) if verify_only else None,
            )
            tasks[task.key] = (item, task)

        results: list[SignatureResult] = []
        pool: TaskExecutor
        if executor == "ray":
            from tfjsbuild.building.ray_executor import RayExecutor

            pool = RayExecutor(ray_address)
        else:
            from tfjsbuild.building.worker_pool import WorkerPool

            pool = WorkerPool(worker_count, log_path)
        try:
            pending: dict[Future[ConversionOutcome], str] = {
                pool.submit(task): key for key, (_, task) in tasks.items()
            }
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    key = pending.pop(future)
                    item, task = tasks[key]
                    result = _finish(item, task, future, projects[item.manifest])
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
        except BaseException:
            # Ctrl-C or a bug: stop the workers now rather than wait for their conversions.
            pool.shutdown(abort=True)
            raise
        else:
            pool.shutdown(abort=False)
    finally:
        # Every place staging may be, not only those chosen: Ctrl-C can land inside
        # `_staging_root` (just after "Converting" is printed) before one is recorded.
        for project in projects.values():
            for root in (
                project.manifest.state_dir / STAGING_DIR,
                project.manifest.output_dir / OUTPUT_STAGING_DIR,
            ):
                shutil.rmtree(root, ignore_errors=True)
    return results


class TaskExecutor(Protocol):
    """Runs conversion tasks somewhere; each future resolves once the output is in staging."""

    def submit(self, task: ConversionTask) -> Future[ConversionOutcome]: ...

    def shutdown(self, *, abort: bool) -> None: ...


def _verify_task(item: PlanItem, runtime: Runtime | None) -> VerifyTask | None:
    settings = _verify_settings(item)
    if settings is None or runtime is None:
        return None
    return VerifyTask(
        samples=settings.samples,
        atol=settings.atol,
        rtol=settings.rtol,
        inputs=None if settings.inputs is None else str(settings.inputs),
        seed=item.key,
        node=runtime.node,
        runtime=str(runtime.folder),
    )


def _finish(
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
        )
    if task.kind == "verify":
        return _record_verification(item, project, outcome)
    assert item.fingerprint is not None
    placed = _place(
        item,
        project,
        Path(task.staging_dir),
        outcome.verification,
        outcome.seconds,
        verified_with=item.fingerprint.verify if outcome.verification is not None else None,
    )
    if isinstance(placed, SignatureResult):
        return replace(placed, seconds=outcome.seconds, timings=outcome.timings)
    record = project.state.records[item.key]
    _store(item, project, project.manifest.root / item.output, record)
    model_json, weights = size_parts(placed.files)
    return SignatureResult(
        item,
        "built",
        outcome.seconds,
        placed.bytes,
        timings=outcome.timings,
        model_json_bytes=model_json,
        weight_bytes=weights,
        verification=outcome.verification,
    )


def _place(
    item: PlanItem,
    project: Project,
    staging: Path,
    verification: dict[str, Any] | None,
    seconds: float,
    *,
    verified_with: Mapping[str, Any] | None = None,
) -> GraphModelOutput | SignatureResult:
    """Check a staged output, swap it into place and record it; a failed result if it cannot."""
    try:
        checked = check_graph_model(staging)
        over_budget = _over_budget(item, staging, checked.bytes)
        if over_budget is not None:
            raise BuildError(over_budget)
        target = project.manifest.root / item.output
        linked = _output_link_problem(item, project)  # again: the link may be new
        if linked is not None:
            raise BuildError(linked)
        _check_replaceable(target, project.record(item), project.manifest)
        _swap_into_place(staging, target)
    except (BuildError, OSError) as error:
        return SignatureResult(item, "failed", error=str(error), verification=verification)
    previous = project.record(item)
    if previous is not None and previous.output != item.output:
        # Signatures may trade folders between builds: keep a folder another one now owns.
        owners = {r.output for r in project.state.records.values() if r is not previous}
        if previous.output not in owners:
            problem = remove_recorded_output(project.manifest, previous)
            if problem is not None:
                warnings.warn(problem, stacklevel=1)
    assert item.fingerprint is not None
    project.state.records[item.key] = SignatureRecord(
        model=item.model,
        signature=item.signature,
        output=item.output,
        fingerprint=item.fingerprint.digest,
        parts=dict(item.fingerprint.parts),
        options=dict(item.fingerprint.options),
        files=record_files(target, checked.files),
        inputs=checked.inputs,
        outputs=checked.outputs,
        content_hash=checked.content_hash,
        seconds=round(seconds, 3),
        details=dict(item.fingerprint.details),
        verification=verification,
        verified_with=dict(verified_with) if verification is not None and verified_with else None,
    )
    project.save()
    return checked


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


def _output_link_problem(item: PlanItem, project: Project) -> str | None:
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


def _record_verification(
    item: PlanItem, project: Project, outcome: ConversionOutcome
) -> SignatureResult:
    """Record a passed verification of the output in place; its files stay as they are."""
    record = project.record(item)
    assert record is not None and item.fingerprint is not None
    assert outcome.verification is not None  # a verify task always runs the verification
    model_json, weights = size_parts(record.files)
    done = SignatureResult(
        item,
        "verified",
        outcome.seconds,
        record.bytes,
        timings=outcome.timings,
        model_json_bytes=model_json,
        weight_bytes=weights,
        verification=outcome.verification,
    )
    # The worker read the folder while it ran: what it verified must still be what is recorded.
    changed = output_change(project.manifest.root, record)
    if changed is not None:
        return replace(
            done,
            status="failed",
            error=f"{changed} while it was being verified; the next run converts it again",
        )
    verified = replace(
        record, verification=outcome.verification, verified_with=dict(item.fingerprint.verify)
    )
    project.state.records[item.key] = verified
    project.save()
    _store(item, project, project.manifest.root / item.output, verified)
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


def _check_replaceable(target: Path, record: SignatureRecord | None, manifest: Manifest) -> None:
    """Never replace a folder holding files tfjs-build did not write.

    The swap replaces the whole folder, so every file in it must be one this tool wrote: one the
    record lists, or one a graph model is made of (model.json and weight shards, as an earlier
    conversion or a stale shard leaves them). A user's README or assets there stop the build.
    A target through a symbolic link never gets here: `_output_link_problem` refuses it.
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


def _nested(a: str, b: str) -> bool:
    """Whether two output folders (relative, POSIX) are the same or one holds the other."""
    a, b = posixpath.normpath(a), posixpath.normpath(b)
    return a == b or a.startswith(b + "/") or b.startswith(a + "/")


def _remove(item: PlanItem, project: Project, *, keep_files: bool = False) -> SignatureResult:
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
        models.setdefault(record.model, {})[record.signature] = {
            "path": model_json.relative_to(manifest.output_dir).as_posix(),
            "inputs": list(record.inputs),
            "outputs": list(record.outputs),
            "bytes": record.bytes,
            "hash": record.content_hash,
            "verification": _verification_summary(record.verification),
        }
    index = manifest.index_path
    # Which manifest wrote it, relative to the index: another manifest refuses to overwrite it.
    owner = Path(os.path.relpath(manifest.path.resolve(), manifest.output_dir)).as_posix()
    # Checked before writing: a read-only output_dir with nothing to change is no failure.
    with refusals_reported(manifest.output_dir, "output folder", OUTPUT_REMEDY):
        if not models:
            if index.exists():
                index.unlink()
            return
        text = canonical_json({"version": INDEX_VERSION, "manifest": owner, "models": models})
        try:
            if index.read_text("utf-8") == text:
                return
        except OSError:
            pass
        write_atomically(index, text)


def index_owner_problem(manifest: Manifest) -> str | None:
    """Why `manifest` must not write or delete its output_dir's asset index: another manifest
    wrote it (two manifests with one output_dir would overwrite each other's index)."""
    index = manifest.index_path
    try:
        if not index.is_file():  # none yet, or a fifo that would hang the read
            return None
        data = parse_json(index.read_bytes())
        owner = as_str(as_dict(data, "").get("manifest"), "manifest")
        other = Path(os.path.normpath(manifest.output_dir / owner))
        if other == manifest.path.resolve() or not other.is_file():
            return None  # ours, or its manifest is gone (renamed or deleted)
    except (OSError, InvalidData):
        return None  # one this tool cannot read, or one of before it named its writer
    return (
        f"{index} was written by the manifest {other}, which uses the same output_dir: the two "
        "would overwrite each other's asset index (and outputs); give each manifest its own "
        f"output_dir (if {other.name} no longer uses this one, delete {index})"
    )


def _verification_summary(verification: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """For the asset index: whether TF.js matched TensorFlow, and how closely."""
    if verification is None:
        return None
    return {
        key: verification[key]
        for key in ("passed", "max_abs_error", "samples", "atol", "rtol")
        if key in verification
    }
