"""Where conversion tasks run: the `TaskExecutor` protocol, and the choice of one.

`local` is a pool of worker processes on this machine (`local_pool`); `ray` sends each task to
a Ray cluster (`ray_executor`). Both are imported only when chosen: a no-op build never starts
a worker and should not pay for these imports. Executors run tasks and resolve futures; they
never move outputs or write state.
"""

from __future__ import annotations

from concurrent.futures import Future
from pathlib import Path
from typing import Protocol

from tfjsbuild.worker.task import ConversionOutcome, ConversionTask


class TaskExecutor(Protocol):
    """Runs conversion tasks somewhere; each future resolves once the output is in staging."""

    def submit(self, task: ConversionTask) -> Future[ConversionOutcome]: ...

    def shutdown(self, *, abort: bool) -> None: ...


def start_executor(
    executor: str, worker_count: int, log_path: Path, ray_address: str | None
) -> TaskExecutor:
    """`--executor ray` on the cluster at `ray_address`, else `worker_count` local workers."""
    if executor == "ray":
        from tfjsbuild.building.ray_executor import RayExecutor

        return RayExecutor(ray_address)
    from tfjsbuild.building.local_pool import WorkerPool

    return WorkerPool(worker_count, log_path)
