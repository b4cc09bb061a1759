"""Run manifests' plans: checked options, the manifests' build locks, then `execute`.

Planning is `planning/planner.py`'s; the results are returned, never rendered here.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from importlib import metadata

from tfjsbuild.building.execute import execute
from tfjsbuild.building.executors import KeptWorkers
from tfjsbuild.building.project import Project
from tfjsbuild.building.results import Reporter, SignatureResult
from tfjsbuild.errors import UsageError
from tfjsbuild.manifest.types import Manifest
from tfjsbuild.planning.planner import ManifestPlan
from tfjsbuild.stores.lock import BuildLock
from tfjsbuild.version import (
    FAST_PASSES_TENSORFLOWJS,
    fast_passes_apply,
    stock_passes_requested,
)


def check_run_options(*, executor: str, jobs: int | None) -> None:
    """Refuse options no build could run with, before any lock is taken or model read."""
    if executor not in ("local", "ray"):
        raise UsageError(f"--executor must be local or ray, got {executor!r}")
    if jobs is not None and jobs < 1:
        raise UsageError(f"-j/--jobs must be at least 1, got {jobs}")


@contextmanager
def build_locks(manifests: Sequence[Manifest]) -> Iterator[None]:
    """Every manifest's build lock, held until the build is done (a held one raises)."""
    with ExitStack() as stack:
        for manifest in sorted(manifests, key=lambda m: str(m.state_dir)):
            stack.enter_context(BuildLock(manifest.state_dir))
        yield


def skipped(plans: Sequence[ManifestPlan]) -> list[SignatureResult]:
    """A dry run's results: every item, done nothing."""
    return [SignatureResult(item, "skipped") for plan in plans for item in plan.items]


def run_plans(
    plans: Sequence[ManifestPlan],
    *,
    jobs: int | None,
    fail_fast: bool,
    reporter: Reporter,
    verify: bool,
    executor: str,
    ray_address: str | None,
    workers: KeptWorkers | None = None,
) -> list[SignatureResult]:
    """Execute the plans' items in order; each manifest's state is saved as it goes."""
    projects = {p.manifest.path: Project(p.manifest, p.state, p.stores) for p in plans}
    return execute(
        [item for plan in plans for item in plan.items],
        projects,
        jobs=jobs,
        fail_fast=fail_fast,
        reporter=reporter,
        verify=verify,
        executor=executor,
        ray_address=ray_address,
        workers=workers,
    )


def passes_notice(
    results: Sequence[SignatureResult],
    tensorflowjs: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> list[str]:
    """A line when this build converted with tensorflowjs's own, slower graph passes because
    another tensorflowjs than the one the fast passes reproduce is installed (workers decide
    the same way: `worker/optimize.py`). Nothing when the user chose them
    (TFJS_BUILD_STOCK_PASSES) or nothing was converted (built, not restored from a cache)."""
    converted = any(r.status == "built" and r.cache is None for r in results)
    environ = os.environ if environ is None else environ
    if not converted or stock_passes_requested(environ):
        return []  # nothing converted, or the user chose tensorflowjs's passes
    if tensorflowjs is None:
        try:
            tensorflowjs = metadata.version("tensorflowjs")
        except metadata.PackageNotFoundError:
            return []
    if fast_passes_apply(tensorflowjs, environ):
        return []
    return [
        f"tensorflowjs {tensorflowjs} is installed; tfjs-build's fast conversion passes were "
        f"checked against tensorflowjs {FAST_PASSES_TENSORFLOWJS} only, so this build used "
        "tensorflowjs's own (slower) passes"
    ]
