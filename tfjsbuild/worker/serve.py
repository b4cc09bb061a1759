"""A local worker process's life: run the tasks the parent sends, one at a time, until told to
stop, and never outlive the parent.

This is the worker's end of the conversation; the parent's end (starting, watching and replacing
workers) is `tfjsbuild.building.local_pool`. Nothing here writes state or moves outputs: a task's
outcome goes back to the parent, which alone records it. This module imports no TensorFlow
itself; `run_task` does, in the worker, on first use.
"""

from __future__ import annotations

import ctypes
import faulthandler
import os
import signal
import sys
import threading
import time
from multiprocessing.connection import Connection

from tfjsbuild.worker.task import init_worker, run_task

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def serve(connection_fd: int, dump_fd: int, parent_pid: int, log_path: str) -> None:
    """A worker's life: run the tasks the parent sends, one at a time, until told to stop."""
    _die_with_parent(parent_pid)
    init_worker(log_path)
    # A crash, or the parent's SIGUSR1 when the time limit is up, writes every Python thread's
    # stack to `dump_fd`: the parent reads the user's file and line from it.
    faulthandler.enable(file=dump_fd, all_threads=True)
    faulthandler.register(signal.SIGUSR1, file=dump_fd, all_threads=True)
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
        connection.send(("done", outcome))


def _die_with_parent(parent_pid: int) -> None:
    """No worker outlives the build: a killed parent takes its ~1 GB workers with it."""
    if sys.platform.startswith("linux"):
        # Sent when the thread that started this process ends (the pool's, or the process's).
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    else:
        threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()
    if os.getppid() != parent_pid:
        os._exit(1)  # the parent died before prctl: nobody is left to give us work


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(1)
    os._exit(1)
