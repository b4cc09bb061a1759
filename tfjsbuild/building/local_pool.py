"""The local executor: a few worker processes on this machine, one task at a time each.

A worker that dies (`os._exit`, a segfault, the OOM killer) or overruns its time limit fails
only its own task and is replaced; every other task goes on. Workers die with the build, never
see the terminal's Ctrl-C (their own process group: the parent stops them), and keep their
loaded model for the next task of the same source, which a free worker is given first. A worker
grown past the memory limit after a task is retired. A pool may serve several builds (watch):
between them, `end_build` retires the workers that imported a python: source's code. Here:
`WorkerPool` queues tasks, hands them out, resolves their futures; a process's start (forked by
the fork server, or a new interpreter), kill and stack dump are `worker_process`'s, the
worker's end `tfjsbuild.worker.serve`. Nothing here imports TensorFlow or writes state.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

from tfjsbuild.building import fork_server
from tfjsbuild.building.worker_process import (
    STOP_WAIT,
    WorkerProcess,
    dump_frames,
    exit_status,
    kill,
    log_line,
    memory_limit_from,
    memory_text,
)
from tfjsbuild.sources.registry import kind_of
from tfjsbuild.worker.serve import TaskDone
from tfjsbuild.worker.task import (
    LOADING,
    STARTING,
    ConversionOutcome,
    ConversionTask,
    located_at,
    user_frame,
)

# A worker that has not begun its task this long after it was given it is stuck starting up
# (importing TensorFlow takes seconds); the task's own time limit starts when it begins.
STARTUP_LIMIT = 600.0
MAX_WAIT = 3600.0  # seconds one wait for worker messages may last before it loops again


@dataclass
class _Job:
    task: ConversionTask
    future: Future[ConversionOutcome]
    claimed: bool = False  # the future is marked running: it can no longer be cancelled
    started: float = 0.0  # when a worker was given it (monotonic)
    deadline: float = math.inf
    phase: str = STARTING


@dataclass
class _Worker(WorkerProcess):
    job: _Job | None = None
    loaded: str | None = None  # the model key of the source it loaded last
    resident: int = 0  # bytes of memory it (and its children) held after its last task
    outlives_build: bool = True  # False: retired at the end of the build (it ran user code)


class WorkerPool:
    """Runs `ConversionTask`s in `worker_count` processes; each future resolves in staging.

    Every submitted future is resolved, with the outcome or a failed outcome saying what
    happened to the worker, unless it was cancelled while still queued.
    """

    def __init__(self, worker_count: int, log_path: Path, memory_limit: int | None = None) -> None:
        self.worker_count = max(1, worker_count)
        self.log_path = log_path
        self.memory_limit = memory_limit_from(os.environ) if memory_limit is None else memory_limit
        self._builds_ended: list[threading.Event] = []  # end_build calls not yet served
        self._queue: deque[_Job] = deque()
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()
        self._closing = False
        self._aborting = False
        self._failure: BaseException | None = None  # a bug in the pool's thread
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_write, False)
        # Workers are started by this thread only: their parent-death signal is tied to it.
        self._thread = threading.Thread(target=self._run, name="tfjs-build workers", daemon=True)
        self._thread.start()

    def submit(self, task: ConversionTask) -> Future[ConversionOutcome]:
        future: Future[ConversionOutcome] = Future()
        with self._lock:
            if self._closing:
                raise RuntimeError("the worker pool is shut down")
            self._queue.append(_Job(task, future))
        self._wake()
        return future

    def grow(self, worker_count: int) -> None:
        """Run up to `worker_count` workers from now on (never fewer than so far)."""
        with self._lock:
            self.worker_count = max(self.worker_count, worker_count)
        self._wake()

    def running(self) -> dict[str, str]:
        """What each busy worker does now: task key -> phase (a snapshot, for display)."""
        return {job.task.key: job.phase for w in list(self._workers) if (job := w.job) is not None}

    def workers_to_start(self, task_count: int) -> int:
        """How many worker processes submitting `task_count` tasks now starts (a snapshot of
        the list, which only the pool's thread changes)."""
        return max(0, min(self.worker_count, task_count) - len(self._workers))

    def how_workers_start(self) -> str:
        return fork_server.how_workers_start(os.environ)

    def end_build(self) -> None:
        """A build is over and the pool serves the next: retire the workers that may not
        (they imported a python: source's code), and return once they are gone."""
        ended = threading.Event()
        with self._lock:
            self._builds_ended.append(ended)
        self._wake()
        while not ended.wait(0.1) and self._thread.is_alive():
            pass
        if self._failure is not None:
            raise self._failure  # a bug: the caller reports it as one (exit 3)

    def shutdown(self, *, abort: bool) -> None:
        """Wait for the tasks given (abort: kill the workers now); then no worker is left."""
        with self._lock:
            self._closing = True
            self._aborting = self._aborting or abort
        self._wake()
        self._thread.join()
        for fd in (self._wake_read, self._wake_write):
            with contextlib.suppress(OSError):
                os.close(fd)
        if self._failure is not None and not abort:  # abort: the caller has its own exception
            raise self._failure  # a bug: the caller reports it as one (exit 3)

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_write, b".")

    # The pool's thread, from here on.
    def _run(self) -> None:
        try:
            self._serve_tasks()
        except BaseException as error:  # a bug here must not leave the build waiting forever
            with self._lock:
                self._closing = True  # no more submissions
            self._failure = error
            self._fail_everything(f"the worker pool failed: {type(error).__name__}: {error}")
        finally:
            self._stop_workers()

    def _serve_tasks(self) -> None:
        while True:
            with self._lock:
                closing, aborting = self._closing, self._aborting
                ended, self._builds_ended = self._builds_ended, []
            if aborting:
                self._fail_everything("the build was interrupted")
                return
            for event in ended:  # end_build: retire the workers that ran a source's code
                for worker in [w for w in self._workers if not w.job and not w.outlives_build]:
                    self._retire(worker, "it imported a python: source's code, which changes")
                event.set()
            self._dispatch()
            busy = [w for w in self._workers if w.job is not None]
            if closing and not busy and not self._live_queue():
                return
            waiting: dict[Any, _Worker | None] = {self._wake_read: None}
            for worker in self._workers:
                waiting[worker.connection] = worker
                if worker.exited is not None:
                    waiting[worker.exited] = worker
            deadline = min((w.job.deadline for w in busy if w.job is not None), default=math.inf)
            # Capped: `wait` refuses timeouts past ~24 days (its poll takes milliseconds).
            timeout = None if deadline == math.inf else max(0.0, deadline - time.monotonic())
            timeout = None if timeout is None else min(timeout, MAX_WAIT)
            for ready in wait(list(waiting), timeout):
                speaker = waiting[ready]
                if speaker is None:
                    with contextlib.suppress(BlockingIOError):
                        os.read(self._wake_read, 4096)
                elif speaker in self._workers:
                    self._hear(speaker)
            now = time.monotonic()
            for worker in list(self._workers):
                if worker.job is not None and worker.job.deadline <= now:
                    self._hear(worker)  # it may have finished just in time
                    if worker in self._workers and worker.job is not None:
                        self._expire(worker)

    def _live_queue(self) -> bool:
        with self._lock:
            return any(job.claimed or not job.future.cancelled() for job in self._queue)

    def _dispatch(self) -> None:
        """Give queued tasks to free workers: first those of the source a worker has loaded
        (no reloading), then the rest in order; start workers for what is left."""
        idle = [w for w in self._workers if w.job is None]
        for worker in list(idle):
            if (job := self._take(worker.loaded)) is not None:
                idle.remove(worker)
                self._give(worker, job)
        for worker in idle:
            if (job := self._take(None)) is None:
                return
            self._give(worker, job)
        while len(self._workers) < self.worker_count and (job := self._take(None)):
            try:
                worker = self._start_worker()
            except Exception as error:  # no process could be started (no memory, no fds)
                job.started = time.monotonic()
                self._resolve(job, f"a worker process could not be started: {error}")
            else:
                self._give(worker, job)

    def _take(self, loaded: str | None) -> _Job | None:
        """The first queued task of source `loaded`, or (None) the first of any."""
        while True:
            with self._lock:
                self._queue = deque(j for j in self._queue if j.claimed or not j.future.cancelled())
                if loaded is None:
                    job = self._queue[0] if self._queue else None
                else:
                    job = next((j for j in self._queue if j.task.model_key == loaded), None)
                if job is None:
                    return None
                self._queue.remove(job)
            if job.claimed or job.future.set_running_or_notify_cancel():
                job.claimed = True
                return job
            # cancelled (--fail-fast) between the two looks: take another

    def _give(self, worker: _Worker, job: _Job) -> None:
        self._log(f"worker pid {worker.process.pid} takes {_label(job.task)}")
        job.started = time.monotonic()
        job.phase = STARTING
        job.deadline = job.started + STARTUP_LIMIT
        worker.job = job
        worker.loaded = job.task.model_key
        try:
            worker.connection.send(job.task)
        except OSError:
            # The worker died while idle, before it could take the task: not the task's fault.
            worker.job = None
            with self._lock:
                self._queue.appendleft(job)
            self._bury(worker)

    def _start_worker(self) -> _Worker:
        worker = _Worker.start(self.log_path)
        self._workers.append(worker)
        return worker

    def _hear(self, worker: _Worker) -> None:
        """Take what the worker said; bury it if it is gone."""
        try:
            while worker.connection.poll():
                kind, value = worker.connection.recv()
                job = worker.job
                if job is None:
                    continue
                if kind == "phase":
                    job.phase = value
                    if value == LOADING:
                        job.deadline = time.monotonic() + _limit(job.task)
                elif kind == "done":
                    if not isinstance(value, TaskDone):
                        raise TypeError(f"a done message of {type(value).__name__}")
                    worker.job = None
                    worker.resident = value.resident_bytes or 0
                    worker.outlives_build = worker.outlives_build and value.outlives_build
                    job.future.set_result(value.outcome)
        except (EOFError, OSError):
            self._bury(worker)
            return
        except Exception:  # a message that makes no sense: this worker cannot be trusted
            kill(worker.process)
            self._bury(worker)
            return
        if worker.process.poll() is not None:
            self._bury(worker)
        elif worker.job is None and worker.resident > self.memory_limit:
            held, limit = memory_text(worker.resident), memory_text(self.memory_limit)
            self._retire(worker, f"{held} resident, over the {limit} limit")

    def _retire(self, worker: _Worker, why: str) -> None:
        """Stop an idle worker for good; the next task that needs one starts a fresh one."""
        self._forget(worker)
        worker.end(stacks=False)
        self._log(f"retired worker pid {worker.process.pid}: {why}")

    def _bury(self, worker: _Worker) -> None:
        """A worker has exited or stopped answering: fail its task, never another one."""
        self._forget(worker)
        status, dump = worker.reap()
        job = worker.job
        if job is None:
            self._log(f"an idle worker (pid {worker.process.pid}) {exit_status(status)}\n{dump}")
            return
        where = user_frame(dump_frames(dump), job.task.source)
        self._log(
            f"the worker (pid {worker.process.pid}) converting {_label(job.task)} "
            f"{exit_status(status)} while {job.phase}\n{dump}"
        )
        self._resolve(
            job,
            f"the worker process {exit_status(status)} while {job.phase}{where}; "
            f"see {self.log_path}",
        )

    def _expire(self, worker: _Worker) -> None:
        """Stop a worker whose task overran its time limit; the stack says where it was."""
        job = worker.job
        assert job is not None
        self._forget(worker)
        # Its stacks say where it was; before `serve` registers SIGUSR1, it would kill outright.
        dump = worker.end(stacks=job.phase != STARTING)
        if job.phase == STARTING:
            self._log(f"the worker (pid {worker.process.pid}) did not start\n{dump}")
            self._resolve(
                job,
                f"the worker process did not start within {STARTUP_LIMIT:g} s; see {self.log_path}",
            )
            return
        limit = _limit(job.task)
        self._log(
            f"the worker (pid {worker.process.pid}) converting {_label(job.task)} was stopped "
            f"after {limit:g} s (timeout) while {job.phase}; its stacks:\n{dump}"
        )
        where = user_frame(dump_frames(dump), job.task.source)
        self._resolve(
            job,
            f"did not finish within {limit:g} s (timeout) while {job.phase}{where}; "
            "raise `timeout` in tfjs-build.yaml if it needs longer",
        )

    def _resolve(self, job: _Job, error: str) -> None:
        seconds = time.monotonic() - job.started
        job.future.set_result(
            ConversionOutcome(job.task.key, error, seconds, error_at=located_at(job.phase))
        )

    def _forget(self, worker: _Worker) -> None:
        if worker in self._workers:
            self._workers.remove(worker)
        worker.close()

    def _fail_everything(self, error: str) -> None:
        """Resolve every future not yet resolved, so that nobody waits for them."""
        with self._lock:
            queued = list(self._queue)
            self._queue.clear()
        for job in queued:
            if not job.future.cancel() and not job.future.done():
                self._resolve(job, error)
        for worker in self._workers:
            if worker.job is not None and not worker.job.future.done():
                self._resolve(worker.job, error)
                worker.job = None

    def _stop_workers(self) -> None:
        """Idle workers exit when told (flushing their output); busy or stuck ones are killed."""
        with self._lock:
            aborting = self._aborting
        for worker in self._workers:
            if aborting or worker.job is not None:
                kill(worker.process)
            else:
                with contextlib.suppress(OSError):
                    worker.connection.send(None)
        deadline = time.monotonic() + STOP_WAIT
        for worker in list(self._workers):
            worker.wait_or_kill(deadline - time.monotonic())
            self._forget(worker)
            worker.dump.close()

    def _log(self, text: str) -> None:
        log_line(self.log_path, text)


def _limit(task: ConversionTask) -> float:
    return math.inf if task.timeout is None else task.timeout


def _label(task: ConversionTask) -> str:
    return f"signature '{task.signature}' of {kind_of(task.source).origin(task.source)}"
