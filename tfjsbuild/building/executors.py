"""Where conversion tasks run: the `TaskExecutor` protocol, and the choice of one.

`local` is a pool of worker processes on this machine (`local_pool`); `ray` sends each task to
a Ray cluster (`ray_executor`). Both are imported only when chosen: a no-op build never starts
a worker and should not pay for these imports. Executors run tasks and resolve futures; they
never move outputs or write state. A local pool usually lives for one build; `KeptWorkers`
keeps one from build to build (watch), so that its workers import TensorFlow once.
"""

from __future__ import annotations

from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from tfjsbuild.worker.task import ConversionOutcome, ConversionTask

if TYPE_CHECKING:
    from tfjsbuild.building.local_pool import WorkerPool


class TaskExecutor(Protocol):
    """Runs conversion tasks somewhere; each future resolves once the output is in staging."""

    def submit(self, task: ConversionTask) -> Future[ConversionOutcome]: ...

    def workers_to_start(self, task_count: int) -> int:
        """How many local worker processes (each importing TensorFlow) `task_count` tasks
        submitted now start."""
        ...

    def how_workers_start(self) -> str:
        """What starting one costs, for the build's first line: "importing TensorFlow"."""
        ...

    def running(self) -> dict[str, str]:
        """The tasks being worked on now, by key, with what is being done ("converting"):
        for the progress line; empty where it cannot be known (Ray)."""
        ...

    def shutdown(self, *, abort: bool) -> None: ...


class KeptWorkers:
    """One local worker pool kept from build to build: the owner (watch) calls `close()`.

    A build's end (`shutdown(abort=False)` of what `pool` returned) leaves the workers running,
    except those that imported a python: source's code; an aborted build (Ctrl-C, a bug) kills
    them, and the next build starts a new pool.
    """

    def __init__(self) -> None:
        self._pool: WorkerPool | None = None

    def pool(self, worker_count: int, log_path: Path) -> TaskExecutor:
        """The kept pool, grown to `worker_count` workers; a new one if there is none, or if
        the workers' log moved (the manifests changed)."""
        from tfjsbuild.building.local_pool import WorkerPool

        if self._pool is not None and self._pool.log_path != log_path:
            self.close()
        if self._pool is None:
            self._pool = WorkerPool(worker_count, log_path)
        self._pool.grow(worker_count)
        return _KeptPool(self, self._pool)

    def close(self) -> None:
        """Stop the workers (idle ones exit when told; none is busy between builds)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(abort=False)

    def kill(self) -> None:
        """Kill the workers now, in the middle of their tasks."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(abort=True)


class _KeptPool:
    """The kept pool as one build sees it: its end keeps the workers, an abort kills them."""

    def __init__(self, kept: KeptWorkers, pool: WorkerPool) -> None:
        self.kept = kept
        self.pool = pool

    def submit(self, task: ConversionTask) -> Future[ConversionOutcome]:
        return self.pool.submit(task)

    def workers_to_start(self, task_count: int) -> int:
        return self.pool.workers_to_start(task_count)

    def how_workers_start(self) -> str:
        return self.pool.how_workers_start()

    def running(self) -> dict[str, str]:
        return self.pool.running()

    def shutdown(self, *, abort: bool) -> None:
        if abort:
            self.kept.kill()
            return
        try:
            self.pool.end_build()
        except BaseException:
            self.kept.kill()  # a bug in the pool: the next build gets a new one
            raise


def start_executor(
    executor: str,
    worker_count: int,
    log_path: Path,
    ray_address: str | None,
    kept: KeptWorkers | None = None,
) -> TaskExecutor:
    """`--executor ray` on the cluster at `ray_address`, else `worker_count` local workers:
    those `kept` when given (they serve the local executor only)."""
    if executor == "ray":
        from tfjsbuild.building.ray_executor import RayExecutor

        return RayExecutor(ray_address)
    if kept is not None:
        return kept.pool(worker_count, log_path)
    from tfjsbuild.building.local_pool import WorkerPool

    return WorkerPool(worker_count, log_path)
