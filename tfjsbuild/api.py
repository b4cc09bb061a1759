"""The Python API that build scripts import; the CLI is a thin layer over it.

One short function per verb. Data flows one way: manifest -> targets -> fingerprints -> plan
(`planning/`) -> execute (`building/`) -> state. Nothing here plans or builds itself.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tfjsbuild.building import fork_server
from tfjsbuild.building.executors import KeptWorkers
from tfjsbuild.building.fork_server import ServerStatus
from tfjsbuild.building.removal import remove_built_files, remove_state_folders
from tfjsbuild.building.results import Reporter, ReportRow, SignatureResult
from tfjsbuild.building.run import (
    build_locks,
    check_run_options,
    passes_notice,
    run_plans,
    skipped,
)
from tfjsbuild.errors import UsageError
from tfjsbuild.files.artifacts import GraphModelOutput
from tfjsbuild.files.atomic import swap_directory
from tfjsbuild.manifest.types import KerasSource, Manifest, PythonSource
from tfjsbuild.planning.manifests import load_manifests
from tfjsbuild.planning.options import converter_options
from tfjsbuild.planning.plan import PlanItem
from tfjsbuild.planning.planner import ManifestPlan, load_manifest_state, plan_manifests
from tfjsbuild.render.console import SilentReporter
from tfjsbuild.render.json import plan_json, results_json
from tfjsbuild.sources.description import (
    SavedModelDescription,
    SourceDescription,
    describe_saved_model,
)
from tfjsbuild.sources.digest import StatCache
from tfjsbuild.sources.registry import kind_of, source_digest
from tfjsbuild.stores.cache_store import Store
from tfjsbuild.stores.caches import resolve_config
from tfjsbuild.stores.lock import BuildLock
from tfjsbuild.stores.records import SignatureRecord


@dataclass
class BuildPlan:
    manifests: list[ManifestPlan]

    @property
    def items(self) -> list[PlanItem]:
        return [item for plan in self.manifests for item in plan.items]

    @property
    def warnings(self) -> list[str]:
        return [warning for plan in self.manifests for warning in plan.warnings]

    def to_json(self) -> str:
        return plan_json([p.manifest.path for p in self.manifests], self.items)


@dataclass
class BuildResult:
    manifests: list[Path]
    results: list[SignatureResult]
    seconds: float
    dry_run: bool = False
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(result.status != "failed" for result in self.results)

    @property
    def failed(self) -> list[SignatureResult]:
        return [result for result in self.results if result.status == "failed"]

    def to_json(self) -> str:
        return results_json(
            self.manifests, self.results, seconds=self.seconds, dry_run=self.dry_run
        )


def plan(
    manifests: Iterable[str | Path] = (),
    *,
    all_dirs: Iterable[str | Path] = (),
    selection: Sequence[str] = (),
    force: bool = False,
    paranoid: bool = False,
    cache: str | None = None,
    verify: bool = True,
) -> BuildPlan:
    """What a build would do and why, without building or writing anything.

    `verify=False`: the plan of a `--no-verify` build (nothing to verify).
    """
    loaded = load_manifests(manifests, all_dirs)
    return BuildPlan(
        plan_manifests(
            loaded, selection=selection, force=force, paranoid=paranoid, cache=cache, verify=verify
        )
    )


def build(
    manifests: Iterable[str | Path] = (),
    *,
    all_dirs: Iterable[str | Path] = (),
    selection: Sequence[str] = (),
    jobs: int | None = None,
    force: bool = False,
    dry_run: bool = False,
    fail_fast: bool = False,
    paranoid: bool = False,
    cache: str | None = None,
    executor: str = "local",
    ray_address: str | None = None,
    verify: bool = True,
    reporter: Reporter | None = None,
) -> BuildResult:
    """Build what changed; failed signatures are in the result (`result.ok` is False).

    `verify=False` skips running outputs in TensorFlow.js; a later build that verifies runs the
    outputs it built as they are, without converting them again.
    """
    return build_manifests(
        load_manifests(manifests, all_dirs),
        selection=selection,
        jobs=jobs,
        force=force,
        dry_run=dry_run,
        fail_fast=fail_fast,
        paranoid=paranoid,
        verify=verify,
        cache=cache,
        executor=executor,
        ray_address=ray_address,
        reporter=reporter,
    )


def build_manifests(
    loaded: Sequence[Manifest],
    *,
    selection: Sequence[str] = (),
    jobs: int | None = None,
    force: bool = False,
    dry_run: bool = False,
    fail_fast: bool = False,
    paranoid: bool = False,
    cache: str | None = None,
    executor: str = "local",
    ray_address: str | None = None,
    verify: bool = True,
    reporter: Reporter | None = None,
    workers: KeptWorkers | None = None,
) -> BuildResult:
    """`build` for manifests already loaded (watch keeps building the last valid ones).

    `workers`: local worker processes kept from one build to the next (watch's); by default
    the build starts its own and stops them at its end.
    """
    start = time.perf_counter()
    check_run_options(executor=executor, jobs=jobs)
    with ExitStack() as stack:
        if not dry_run:
            stack.enter_context(build_locks(loaded))
        plans = plan_manifests(
            loaded, selection=selection, force=force, paranoid=paranoid, cache=cache, verify=verify
        )
        results = (
            skipped(plans)
            if dry_run
            else run_plans(
                plans,
                jobs=jobs,
                fail_fast=fail_fast,
                reporter=reporter or SilentReporter(),
                verify=verify,
                executor=executor,
                ray_address=ray_address,
                workers=workers,
            )
        )
    build_plan = BuildPlan(plans)
    paths = [p.manifest.path for p in plans]
    elapsed = time.perf_counter() - start
    notes = build_plan.warnings + passes_notice(results)
    return BuildResult(paths, results, elapsed, dry_run, notes)


def clean(
    manifests: Iterable[str | Path] = (), *, all_dirs: Iterable[str | Path] = ()
) -> list[str]:
    """Remove the outputs this tool recorded, the asset index and the state. Returns what went.

    What is not provably this tool's (a record whose output is not inside output_dir, a file
    reached through a symbolic link, another manifest's asset index) is left alone, with a
    Python warning saying why. Other manifests' states in the same folder are kept, and so is
    the local cache they share.
    """
    removed: list[str] = []
    for manifest in load_manifests(manifests, all_dirs):
        with BuildLock(manifest.state_dir):
            state, problems = load_manifest_state(manifest, "its files are left in place")
            gone, refused = remove_built_files(manifest, state)
        removed += gone
        for problem in problems + refused:
            warnings.warn(problem, stacklevel=2)
        remove_state_folders(manifest)
    return removed


def report(
    manifests: Iterable[str | Path] = (), *, all_dirs: Iterable[str | Path] = ()
) -> list[ReportRow]:
    """What the last builds produced, per model and signature, in manifest order."""
    rows = []
    for manifest in load_manifests(manifests, all_dirs):
        state, _ = load_manifest_state(manifest)
        order = {model.name: index for index, model in enumerate(manifest.models)}
        records = sorted(
            state.records.values(), key=lambda r: (order.get(r.model, len(order)), r.signature)
        )
        rows += [
            ReportRow.from_record(manifest.path, record, _budget(manifest, record))
            for record in records
        ]
    return rows


def _budget(manifest: Manifest, record: SignatureRecord) -> int | None:
    """The size budget (`max_bytes`) the manifest sets for a recorded signature, if any."""
    for model in manifest.models:
        if model.name == record.model:
            listed = {spec.name: spec for spec in model.signatures or ()}
            spec = listed.get(record.signature)
            return (spec.checks if spec is not None else model.checks).max_bytes
    return None


def _cache_stores(
    manifests: Iterable[str | Path], all_dirs: Iterable[str | Path], cache: str | None
) -> list[Store]:
    stores: dict[str, Store] = {}
    for manifest in load_manifests(manifests, all_dirs):
        for store in resolve_config(manifest, cache).stores():
            stores.setdefault(store.url, store)
    return list(stores.values())


def cache_stats(
    manifests: Iterable[str | Path] = (),
    *,
    all_dirs: Iterable[str | Path] = (),
    cache: str | None = None,
) -> list[tuple[str, str, dict[str, int]]]:
    """(label, url, {entries, blobs, bytes}) of every cache the manifests use."""
    return [(s.label, s.url, s.stats()) for s in _cache_stores(manifests, all_dirs, cache)]


def cache_prune(
    manifests: Iterable[str | Path] = (),
    *,
    all_dirs: Iterable[str | Path] = (),
    cache: str | None = None,
    max_bytes: int,
) -> list[tuple[str, str, dict[str, int]]]:
    """Shrink every writable cache to `max_bytes`, least recently used entries first."""
    return [
        (s.label, s.url, s.prune(max_bytes))
        for s in _cache_stores(manifests, all_dirs, cache)
        if s.writable
    ]


def servers() -> list[ServerStatus]:
    """This user's fork servers (each keeps TensorFlow imported for the workers it forks), and
    whether builds started from this process would use each (`current`)."""
    return fork_server.servers(os.environ)


def stop_servers() -> list[ServerStatus]:
    """Stop this user's fork servers: no build uses them from now on, and each exits once the
    workers it forked have ended. The ones stopped."""
    return fork_server.stop_servers(os.environ)


def inspect_saved_model(path: str | Path, *, paranoid: bool = False) -> SavedModelDescription:
    """Tag sets, signatures with their tensors, and each signature's graph fingerprint."""
    return describe_saved_model(Path(path), paranoid=paranoid)


def inspect_source(source: KerasSource | PythonSource) -> SourceDescription:
    """A Keras file's or Python source's signatures, as a graph model build would convert them.

    Unlike `inspect_saved_model` this imports TensorFlow, and for a Python source runs its code.
    """
    from tfjsbuild.worker.native_log import native_log_kept_out

    digest = source_digest(source, StatCache())
    # TensorFlow's C++ log lines (CUDA registrations, cuInit) stay off the user's terminal.
    with (
        native_log_kept_out([]),
        tempfile.TemporaryDirectory(prefix="tfjs-build-inspect-") as scratch,
    ):
        from tfjsbuild.worker import loaders

        signatures = loaders.describe(source, Path(scratch))
    return SourceDescription(source, digest, kind_of(source).inspect_json(source), signatures)


def convert_concrete_function(
    function: Any, output_dir: str | Path, **options: Any
) -> GraphModelOutput:
    """Convert a tf.function or ConcreteFunction into a graph model at `output_dir`, atomically.

    Options are the manifest's converter options (quantization, weight_shard_size_bytes, ...).
    Raises unless a complete, loadable model.json with all its shards was written.
    """
    from tfjsbuild.worker import convert  # TensorFlow: the caller has it loaded already
    from tfjsbuild.worker.native_log import native_log_kept_out

    resolved = converter_options(**options)
    if resolved.auto_quantization:
        raise UsageError(
            "quantization='auto' chooses by verifying each candidate in TensorFlow.js, which "
            "convert_concrete_function does not do; give dtype -> weight globs, e.g. "
            "quantization={'float16': ['*']}, or build it from a manifest"
        )
    target = Path(output_dir).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(
        tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".staging", dir=target.parent)
    )
    logged: list[str] = []
    try:
        # Grappler's session and cuInit lines stay off the caller's terminal, unless it fails.
        with native_log_kept_out(logged):
            result = convert.convert_concrete_function(function, staging, resolved)
        swap_directory(staging, target)
    except BaseException:
        if logged:
            print("\n".join(logged), file=sys.stderr)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return result
