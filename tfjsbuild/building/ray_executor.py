"""`--executor ray`: conversions as Ray tasks on a cluster ML teams already run.

The planner, the state and the cache stay in the driver (this process). Each task converts
one signature in a Ray worker (which keeps its loaded model for the next task of the same
source, as a local worker does) and returns the output's files; the driver writes them into
its staging folder and swaps them into place exactly as for a local conversion. Workers must
see the model sources (and the verification runtime) at the same paths as the driver: a
shared filesystem, or a single machine.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from concurrent.futures import Future
from dataclasses import replace
from pathlib import Path
from typing import Any

from tfjsbuild.errors import BuildError
from tfjsbuild.worker.task import ConversionOutcome, ConversionTask

# What one conversion needs: one core, and TensorFlow with a model loaded (~1-2 GB).
TASK_CPUS = 1
TASK_MEMORY = 2 * 1024**3
ADDRESS_ENV = "RAY_ADDRESS"


def convert_in_worker(task: ConversionTask) -> tuple[ConversionOutcome, dict[str, bytes]]:
    """Runs in a Ray worker: convert into a private folder, return the outcome and the files."""
    from tfjsbuild.worker.task import prepare_environment, run_task

    prepare_environment()
    work = Path(tempfile.mkdtemp(prefix="tfjs-build-ray-"))
    try:
        local = replace(
            task,
            staging_dir=str(work / "output"),
            scratch_dir=str(work / "scratch"),
        )
        outcome = run_task(local)
        files: dict[str, bytes] = {}
        if outcome.error is None:
            for path in sorted((work / "output").rglob("*")):
                if path.is_file():
                    files[path.relative_to(work / "output").as_posix()] = path.read_bytes()
        return outcome, files
    finally:
        shutil.rmtree(work, ignore_errors=True)


class RayExecutor:
    """Submits each task to Ray with its CPU and memory request; futures resolve in staging."""

    def __init__(self, address: str | None) -> None:
        try:
            import ray
        except ImportError as error:
            raise BuildError(
                "--executor ray needs Ray: pip install 'tfjs-build[ray]' (or ray)"
            ) from error
        self.ray = ray
        if not ray.is_initialized():
            address = address or os.environ.get(ADDRESS_ENV)
            ray.init(address=address, log_to_driver=False, configure_logging=False)
        self.remote = ray.remote(num_cpus=TASK_CPUS, memory=TASK_MEMORY, max_retries=0)(
            convert_in_worker
        )
        self.refs: list[Any] = []

    def submit(self, task: ConversionTask) -> Future[ConversionOutcome]:
        ref = self.remote.remote(task)
        self.refs.append(ref)
        result: Future[ConversionOutcome] = Future()

        def land(done: Future[tuple[ConversionOutcome, dict[str, bytes]]]) -> None:
            if result.cancelled():  # --fail-fast gave up on it
                return
            try:
                outcome, files = done.result()
                staging = Path(task.staging_dir)
                for relative, data in files.items():
                    target = staging / relative
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(data)
                result.set_result(outcome)
            except BaseException as error:
                result.set_exception(error)

        ref.future().add_done_callback(land)
        result.add_done_callback(lambda f: self.ray.cancel(ref) if f.cancelled() else None)
        return result

    def workers_to_start(self, task_count: int) -> int:
        return 0  # Ray starts (and keeps) its own workers

    def how_workers_start(self) -> str:
        return "on Ray"

    def running(self) -> dict[str, str]:
        return {}  # which of the submitted tasks Ray has started is not known here

    def shutdown(self, *, abort: bool) -> None:
        if abort:
            for ref in self.refs:
                self.ray.cancel(ref, force=True)
