"""One local worker process, seen from the parent: how it is started, killed, and how it ended.

A worker runs `tfjsbuild.worker.serve`, forked by the fork server (`fork_server`) or in a fresh
interpreter (`BOOTSTRAP`), in its own process group, with a socket to the parent and an unlinked
file its stacks are dumped into. Which task a worker runs, and when it is replaced, is
`local_pool`'s business; this module imports no TensorFlow and never looks at a task. How much
memory a worker may hold is said here too.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import IO, Self

from tfjsbuild.building import fork_server
from tfjsbuild.building.forked_worker import LOST_STATUS, ForkedWorker
from tfjsbuild.errors import UsageError

# After a SIGUSR1, how long a worker that overran its time limit may take to write its stacks.
STACK_DUMP_WAIT = 2.0
# How long a worker told to stop may take to exit before it is killed.
STOP_WAIT = 10.0
# A worker with more resident memory than this after a task (with the Node.js it keeps) is
# replaced before its next one; TFJS_BUILD_WORKER_MEMORY_MB sets another limit.
DEFAULT_MEMORY_LIMIT = 4 * 1024**3
MEMORY_VARIABLE = "TFJS_BUILD_WORKER_MEMORY_MB"

# The worker's first Python: the parent's sys.path (as multiprocessing's spawn passes it), then
# `serve(connection fd, stack dump fd, parent pid, log path)`.
BOOTSTRAP = (
    "import sys, json; sys.path[:] = json.loads(sys.argv[1]); "
    "from tfjsbuild.worker.serve import serve; "
    "serve(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])"
)
FATAL_SIGNALS = {signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE, signal.SIGILL, signal.SIGABRT}
DUMP_FRAME = re.compile(r'^\s*File "(.+)", line (\d+) in ', re.MULTILINE)


@dataclass
class WorkerProcess:
    process: subprocess.Popen[bytes] | ForkedWorker
    connection: Connection
    dump: IO[bytes]  # an unlinked file the worker's stacks are written to
    exited: int | None  # a pidfd, readable once the process has exited (None: not supported)

    @classmethod
    def start(cls, log_path: Path) -> Self:
        """A new worker, its output appended to `log_path`: forked by the fork server where
        there is one (TensorFlow already imported), else a fresh interpreter."""
        if fork_server.enabled(os.environ):
            ours, theirs = socket.socketpair()
            dump = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the worker
            try:
                forked = fork_server.fork_worker(theirs, dump, log_path)
            except fork_server.ServerUnavailable as why:
                # Never reused: a server that answers late forks on these, and must find the
                # other end closed (its worker then exits at once).
                ours.close()
                dump.close()
                log_line(log_path, f"no fork server: {why}; starting a worker")
            else:
                return cls(forked, Connection(ours.detach()), dump, _pidfd(forked.pid))
            finally:
                theirs.close()
        ours, theirs = socket.socketpair()
        dump = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the worker
        try:
            process = _spawn(log_path, theirs, dump)
        except BaseException:
            ours.close()
            dump.close()
            raise
        finally:
            theirs.close()
        return cls(process, Connection(ours.detach()), dump, _pidfd(process.pid))

    def reap(self) -> tuple[int, str]:
        """Its exit status and stack dump, once it has exited (killed if it lingers on)."""
        status = self.wait_or_kill(STOP_WAIT)  # it may have closed its connection yet live on
        dump = read_dump(self.dump)
        self.dump.close()
        return status, dump

    def wait_or_kill(self, timeout: float) -> int:
        """Its exit status, once it has exited: killed after `timeout` seconds."""
        try:
            return self.process.wait(timeout=max(0.0, timeout))
        except subprocess.TimeoutExpired:
            kill(self.process)
            return self.process.wait()

    def end(self, *, stacks: bool) -> str:
        """Kill it, after it has written its stacks (SIGUSR1) when `stacks`; its dump."""
        if stacks:
            with contextlib.suppress(OSError):
                self.process.send_signal(signal.SIGUSR1)
            wait_for_dump(self.dump)
        kill(self.process)
        self.process.wait()
        dump = read_dump(self.dump)
        self.dump.close()
        return dump

    def close(self) -> None:
        """Stop listening to it: its connection and pidfd are closed (its dump stays open)."""
        self.connection.close()
        if self.exited is not None:
            os.close(self.exited)
            self.exited = None


def _spawn(log_path: Path, theirs: socket.socket, dump: IO[bytes]) -> subprocess.Popen[bytes]:
    """A worker in a fresh interpreter: it imports TensorFlow itself."""
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        return subprocess.Popen(
            [
                sys.executable,
                "-c",
                BOOTSTRAP,
                json.dumps([str(entry) for entry in sys.path], allow_nan=False),
                str(theirs.fileno()),
                str(dump.fileno()),
                str(os.getpid()),
                str(log_path),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            pass_fds=(theirs.fileno(), dump.fileno()),
            # Its own process group: the terminal's Ctrl-C reaches only the parent, which
            # stops the workers itself (a worker still starting up would print a traceback).
            process_group=0,
        )
    finally:
        os.close(log)


def _pidfd(pid: int) -> int | None:
    """A pidfd, readable once `pid` has exited (None: not supported)."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def log_line(log_path: Path, text: str) -> None:
    """`tfjs-build: <text>` appended to the workers' log (nothing if it cannot be written)."""
    with contextlib.suppress(OSError), open(log_path, "a", encoding="utf-8") as log:
        log.write(f"tfjs-build: {text.rstrip()}\n")


def memory_limit_from(environ: Mapping[str, str]) -> int:
    """The memory limit of a worker, in bytes: TFJS_BUILD_WORKER_MEMORY_MB, else 4 GiB."""
    text = environ.get(MEMORY_VARIABLE, "").strip()
    if not text:
        return DEFAULT_MEMORY_LIMIT
    try:
        megabytes = float(text)
    except ValueError:
        megabytes = math.nan
    if not (math.isfinite(megabytes) and megabytes > 0):
        raise UsageError(f"{MEMORY_VARIABLE} must be a number of megabytes above 0, got {text!r}")
    return int(megabytes * 1024**2)


def memory_text(size: int) -> str:
    """`4.3 GiB`, `4 GiB`, `512 MiB`: memory as the retirement log line says it."""
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= scale:
            return f"{size / scale:.1f}".removesuffix(".0") + f" {unit}"
    return f"{size} bytes"


def kill(process: subprocess.Popen[bytes] | ForkedWorker) -> None:
    """SIGKILL a worker and what it started (Node.js verifying, the user's own children).

    Its process group is its pid (`process_group=0`, or `setpgid` once forked), which no other
    process can take while the worker is not yet waited for (a forked one's exit status comes
    from the server, which waits for it: its group is killed only while it has not exited).
    """
    if not isinstance(process, ForkedWorker) or process.poll() is None:
        with contextlib.suppress(OSError):
            os.killpg(process.pid, signal.SIGKILL)
    process.kill()


def exit_status(status: int) -> str:
    """How a worker ended, as a sentence's verb: "was killed by SIGKILL (out of memory?)"."""
    if status >= 0:
        return f"exited with status {status}"
    if status == LOST_STATUS:
        return "exited (how is not known: the fork server that started it stopped answering)"
    try:
        name = signal.Signals(-status).name
    except ValueError:
        name = f"signal {-status}"
    if -status == signal.SIGKILL:
        return f"was killed by {name} (out of memory?)"
    if -status in FATAL_SIGNALS:
        return f"crashed with {name}"
    return f"was killed by {name}"


def read_dump(dump: IO[bytes]) -> str:
    with contextlib.suppress(OSError, ValueError):
        size = os.fstat(dump.fileno()).st_size
        return os.pread(dump.fileno(), size, 0).decode("utf-8", "replace")
    return ""


def wait_for_dump(dump: IO[bytes]) -> None:
    """Until the stacks a SIGUSR1 asked for are written (their size stops growing)."""
    deadline = time.monotonic() + STACK_DUMP_WAIT
    size = -1
    while time.monotonic() < deadline:
        now = os.fstat(dump.fileno()).st_size
        if now > 0 and now == size:
            return
        size = now
        time.sleep(0.05)


def dump_frames(dump: str) -> list[tuple[str, int]]:
    """The frames of a faulthandler dump, innermost first (as faulthandler writes them)."""
    return [(match[1], int(match[2])) for match in DUMP_FRAME.finditer(dump)]
