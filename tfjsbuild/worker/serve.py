"""A local worker process's life: run the tasks the parent sends, one at a time, until told to
stop, and never outlive the parent.

This is the worker's end of the conversation; the parent's end (starting, watching and replacing
workers) is `tfjsbuild.building.local_pool`. Nothing here writes state or moves outputs: a task's
outcome goes back to the parent, which alone records it. A worker imports TensorFlow as it
starts, before its first task; importing this module imports none.
"""

from __future__ import annotations

import contextlib
import ctypes
import faulthandler
import os
import select
import signal
import sys
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection

from tfjsbuild.worker.task import ConversionOutcome, init_worker, run_task

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


@dataclass(frozen=True)
class TaskDone:
    """A worker's "done" message: the task's outcome, and whether the worker should go on."""

    outcome: ConversionOutcome
    # The worker's resident memory and its children's (a Node.js verifier), in bytes; None
    # where /proc does not say. The pool retires a worker over its memory limit.
    resident_bytes: int | None
    # False once a source's loading imported the user's code: the worker is retired at the end
    # of the build, so that the next build imports the code as it is then.
    outlives_build: bool


def serve(
    connection_fd: int, dump_fd: int, parent_pid: int, log_path: str, *, forked: bool = False
) -> None:
    """A worker's life: run the tasks the parent sends, one at a time, until told to stop.

    `forked`: forked by the fork server (`fork_server`), whose child it is; the build it serves
    (`parent_pid`) is watched instead.
    """
    if forked:
        _die_with_build(parent_pid)
    else:
        _die_with_parent(parent_pid)
    init_worker(log_path)
    # A crash, or the parent's SIGUSR1 when the time limit is up, writes every Python thread's
    # stack to `dump_fd`: the parent reads the user's file and line from it.
    faulthandler.enable(file=dump_fd, all_threads=True)
    faulthandler.register(signal.SIGUSR1, file=dump_fd, all_threads=True)
    # TensorFlow now, before the first task: its seconds are the worker's start-up, not the
    # first signature's (the task's time limit starts once the worker begins it).
    started = time.perf_counter()
    from tfjsbuild.worker import loaders

    print(
        f"tfjs-build: worker pid {os.getpid()} ready: TensorFlow imported in "
        f"{time.perf_counter() - started:.1f} s",
        flush=True,
    )
    connection = Connection(connection_fd)
    while True:
        try:
            task = connection.recv()
        except EOFError:
            return  # the parent is gone
        if task is None:
            return
        outcome = run_task(task, lambda phase: connection.send(("phase", phase)))
        for stream in (sys.stdout, sys.stderr):
            stream.flush()  # the log is complete even if this worker is killed later
        done = TaskDone(outcome, resident_bytes(), loaders.worker_outlives_build())
        connection.send(("done", done))


def resident_bytes() -> int | None:
    """This process's resident memory plus its descendants' (Linux /proc); None elsewhere."""
    pages = 0
    pending = [os.getpid()]
    seen: set[int] = set()
    while pending:
        pid = pending.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            with open(f"/proc/{pid}/statm", encoding="ascii") as statm:
                pages += int(statm.read().split()[1])
        except (OSError, ValueError, IndexError):
            if pid == os.getpid():
                return None  # no /proc: not Linux
            continue  # a child that has just exited
        pending.extend(_children(pid))
    return pages * os.sysconf("SC_PAGE_SIZE")


def _children(pid: int) -> list[int]:
    children: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            path = f"/proc/{pid}/task/{task}/children"
            with contextlib.suppress(OSError, ValueError), open(path, encoding="ascii") as listed:
                children.extend(int(child) for child in listed.read().split())
    return children


def _die_with_parent(parent_pid: int) -> None:
    """No worker outlives the build: a killed parent takes its ~1 GB workers with it."""
    if sys.platform.startswith("linux"):
        # Sent when the thread that started this process ends (the pool's, or the process's).
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    else:
        threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()
    if os.getppid() != parent_pid:
        os._exit(1)  # the parent died before prctl: nobody is left to give us work


def _die_with_build(build_pid: int) -> None:
    """A forked worker dies with the server (its parent) and with the build it serves: when the
    build's process ends, this worker's process group is killed (it and what it started)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    threading.Thread(target=_watch_build, args=(build_pid,), daemon=True).start()


def _watch_build(build_pid: int) -> None:
    try:
        exited = os.pidfd_open(build_pid)
    except ProcessLookupError:
        os.killpg(0, signal.SIGKILL)
    except (AttributeError, OSError):  # no pidfd here: ask every second
        while alive(build_pid):
            time.sleep(1)
    else:
        select.select([exited], [], [])
    os.killpg(0, signal.SIGKILL)


def alive(pid: int) -> bool:
    """Whether `pid` has not exited yet (a zombie, exited but not reaped, has)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as proc:
            return proc.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        if os.path.isdir("/proc/self"):
            return False
    except (OSError, IndexError):
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # there, but not ours to signal
    return True


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(1)
    os._exit(1)
