"""A worker the fork server forked, seen from the build: what `subprocess.Popen` offers the pool
(its pid, `poll`, `wait`, `kill`, `send_signal`), for a process that is not the build's child.

Its exit status comes from the server, its parent, over the connection the fork was asked on.
Signals go through a pidfd opened while the worker was checked to be the server's child, so
they can never reach another process that took its pid. If the status never comes (the server
died, or is stopped), the worker's exit is still seen, and its status is `LOST_STATUS`.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import time

from tfjsbuild.worker.serve import alive

LOST_STATUS = -1000  # the worker has exited; how, only the server knew
STATUS_WAIT = 5.0  # seconds a worker's exit status may lag behind its exit


class NotTheServersChild(Exception):
    """The pid a server answered is not a child of that server."""


class ForkedWorker:
    def __init__(self, pid: int, channel: socket.socket, server_pid: int) -> None:
        if pid <= 1 or pid == os.getpid():  # 0 and -1 would signal groups, or everyone
            raise NotTheServersChild(f"pid {pid}")
        self.pid = pid
        self.returncode: int | None = None
        self._channel = channel
        self._pending = b""
        self._closed = False
        self._gone_since: float | None = None  # when its exit was first seen, without a status
        self._pidfd: int | None = None
        with contextlib.suppress(AttributeError, OSError):
            self._pidfd = os.pidfd_open(pid)
        if _parent_of(pid) not in (server_pid, None):
            self.close()
            raise NotTheServersChild(f"pid {pid} is not the server's (pid {server_pid}) child")

    def poll(self) -> int | None:
        if self.returncode is None:
            self._read_status(0.0)
        if self.returncode is None and not alive(self.pid):
            now = time.monotonic()
            self._gone_since = self._gone_since or now
            self._read_status(min(0.5, max(0.0, self._gone_since + STATUS_WAIT - now)))
            if self.returncode is None and now - self._gone_since >= STATUS_WAIT:
                self.returncode = LOST_STATUS
                self.close()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (status := self.poll()) is None:
            left = 1.0 if deadline is None else deadline - time.monotonic()
            if left <= 0:
                raise subprocess.TimeoutExpired(f"worker pid {self.pid}", timeout or 0.0)
            self._read_status(min(0.2, left))
        return status

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def send_signal(self, number: int) -> None:
        if self.returncode is not None:
            return
        with contextlib.suppress(OSError):
            if self._pidfd is not None:
                signal.pidfd_send_signal(self._pidfd, number)
            else:
                os.kill(self.pid, number)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._channel.close()
            if self._pidfd is not None:
                os.close(self._pidfd)

    def _read_status(self, timeout: float) -> None:
        """Take the server's status line if it comes within `timeout` seconds."""
        if self._closed or self.returncode is not None:
            time.sleep(timeout)
            return
        ready, _, _ = select.select([self._channel], [], [], timeout)
        if not ready:
            return
        try:
            data = self._channel.recv(4096)
        except OSError:
            data = b""
        if not data:  # the server is gone: the worker's exit is seen by `_alive` alone
            self._closed = True
            self._channel.close()
            return
        self._pending += data
        if b"\n" in self._pending:
            try:
                status = json.loads(self._pending.split(b"\n", 1)[0])["status"]
            except (ValueError, TypeError, KeyError, RecursionError):
                status = None  # a server that makes no sense: as if it were gone
            if isinstance(status, int) and not isinstance(status, bool):
                self.returncode = status
                self.close()
            else:
                self._closed = True
                self._channel.close()


def _parent_of(pid: int) -> int | None:
    """Its parent's pid (Linux /proc); None where that cannot be read."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as proc:
            return int(proc.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None
