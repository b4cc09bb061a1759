"""The fork server: one process per user and installation that imports TensorFlow once and forks
each build's workers from itself, so that a worker starts in milliseconds, not seconds.

It imports TensorFlow and tensorflowjs and nothing of a build: no source is loaded and no
user code is imported here, so a forked worker is as fresh as a new process, only started.
A forked worker takes the environment, working directory, umask and `sys.path` of the build
that asked for it, dies with that build (and with this server), and its exit status is sent
back to that build. The server ends after `idle_seconds` without a worker or a request, on a
`stop` request, or when its socket is no longer the one it bound. The parent's end
(whether to use it, starting it, asking for a worker) is `tfjsbuild.building.fork_server`.

The protocol, over a Unix socket only this user can reach: one JSON line per request (a fork's
two file descriptors ride with it), one JSON line per reply; a fork's connection stays open and
carries the worker's exit status once it has exited.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import select
import signal
import socket
import struct
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field

MAX_REQUEST = 16 * 1024**2  # bytes: a request is an environment and a path list
REQUEST_WAIT = 2.0  # seconds a connected client has to send its whole request


def main(socket_path: str, key: str, idle_seconds: float) -> None:
    """Bind `socket_path`, import TensorFlow, and serve until idle, stopped or replaced."""
    for number in (signal.SIGINT, signal.SIGHUP):
        signal.signal(number, signal.SIG_IGN)  # a terminal's signals are for the build
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)  # the socket: this user only
    try:
        listener.bind(socket_path)
    finally:
        os.umask(old_umask)
    listener.listen(64)
    bound = os.stat(socket_path).st_ino
    # Before TensorFlow is imported: settings it reads once (tfjsbuild.worker.task).
    from tfjsbuild.worker.task import prepare_environment

    prepare_environment()
    started = time.perf_counter()
    from tfjsbuild.worker import loaders  # noqa: F401 - TensorFlow, once for every worker

    print(
        f"tfjs-build: server pid {os.getpid()} ready ({key}): TensorFlow imported in "
        f"{time.perf_counter() - started:.1f} s",
        flush=True,
    )
    _Server(listener, socket_path, bound, key, idle_seconds).run()


@dataclass
class _Server:
    listener: socket.socket
    path: str
    bound: int  # the inode of the socket it bound
    key: str
    idle_seconds: float
    channels: dict[int, socket.socket] = field(default_factory=dict)  # worker pid -> its client
    accepting: bool = True
    wake: tuple[int, int] = (-1, -1)  # the pipe SIGCHLD writes to
    started: float = field(default_factory=time.time)
    last_used: float = field(default_factory=time.time)

    def run(self) -> None:
        wake_read, wake_write = self.wake = os.pipe()
        os.set_blocking(wake_write, False)
        signal.set_wakeup_fd(wake_write)  # SIGCHLD wakes the loop: statuses go out at once
        signal.signal(signal.SIGCHLD, lambda *_: None)
        last_active = time.monotonic()
        while True:
            self._reap()
            if self.channels:
                last_active = time.monotonic()
            if self.accepting and not self._still_ours():
                self._stop_accepting()  # `stop` removed it, or a newer server took the name
            idle = time.monotonic() - last_active
            if self.accepting and idle >= self.idle_seconds:
                self._stop_accepting()
            if not self.accepting and not self.channels:
                return
            watched: list[int | socket.socket] = [wake_read]
            if self.accepting:
                watched.append(self.listener)
            ready, _, _ = select.select(watched, [], [], min(5.0, self.idle_seconds))
            if wake_read in ready:
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_read, 4096)
            if self.listener in ready:
                last_active = time.monotonic()
                self.last_used = time.time()
                self._answer()

    def _answer(self) -> None:
        try:
            client, _ = self.listener.accept()
        except OSError:
            return
        fds: list[int] = []
        try:
            self._answer_one(client, fds)
        except Exception as error:  # one bad request never ends the server
            with contextlib.suppress(Exception):
                print(f"tfjs-build: server: a request failed: {error!r}", flush=True)
            client.close()
        finally:
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)

    def _answer_one(self, client: socket.socket, fds: list[int]) -> None:
        """Read and answer one request; `fds` gets the descriptors it came with."""
        peer_pid, peer_uid = _peer(client)
        if peer_uid != os.getuid():
            client.close()
            return
        request, received = _read_request(client)
        fds.extend(received)
        op = request.get("op")
        if op == "fork":
            if peer_pid is not None:  # the build's pid as the kernel says it, not as it wrote
                request["parent_pid"] = peer_pid
            self._fork(client, request, fds)
            return
        if op == "status":
            _send(client, self._status())
        elif op == "stop":
            _send(client, {"stopping": os.getpid()})
            self._stop_accepting()
        else:
            _send(client, {"error": f"unknown request {op!r}"})
        client.close()

    def _fork(self, client: socket.socket, request: dict[str, object], fds: list[int]) -> None:
        connection_fd, dump_fd = fds
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            held = [self.listener, client, *self.channels.values()]
            _become_worker(request, connection_fd, dump_fd, held, self.wake)
        self.channels[pid] = client
        try:
            _send(client, {"pid": pid})
        except OSError:  # the build gave up on this worker (or is gone): nobody may run it
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            client = self.channels.pop(pid, None)
            if client is not None:
                with contextlib.suppress(OSError):
                    _send(client, {"status": os.waitstatus_to_exitcode(status)})
                client.close()

    def _still_ours(self) -> bool:
        try:
            return os.stat(self.path).st_ino == self.bound
        except OSError:
            return False

    def _stop_accepting(self) -> None:
        """No new workers; the ones running finish (their statuses are still sent)."""
        if self._still_ours():
            with contextlib.suppress(OSError):
                os.unlink(self.path)
        self.listener.close()
        self.accepting = False

    def _status(self) -> dict[str, object]:
        return {
            "pid": os.getpid(),
            "key": self.key,
            "workers": sorted(self.channels),
            "started": self.started,
            "idle_seconds": self.idle_seconds,
            "resident_bytes": _resident_bytes(),
            "last_used": self.last_used,
        }


def _become_worker(
    request: dict[str, object],
    connection_fd: int,
    dump_fd: int,
    inherited: list[socket.socket],
    wake: tuple[int, int],
) -> None:
    """In the forked child: take the build's environment, then be a worker; never return."""
    try:
        for held in inherited:  # the server's, and other builds' connections
            held.close()
        signal.set_wakeup_fd(-1)
        for fd in wake:
            os.close(fd)
        for number in (signal.SIGCHLD, signal.SIGHUP):
            signal.signal(number, signal.SIG_DFL)
        os.setpgid(0, 0)  # its own group, as a started worker: killed with what it starts
        environment = request["env"]
        path = request["sys_path"]
        if not isinstance(environment, dict) or not isinstance(path, list):
            raise TypeError("a fork request's env and sys_path")
        os.environ.clear()
        os.environ.update({str(name): str(value) for name, value in environment.items()})
        sys.path[:] = [str(entry) for entry in path]
        os.chdir(str(request["cwd"]))
        os.umask(int(str(request["umask"])))
        time.tzset()  # TZ as the build has it
        tempfile.tempdir = None  # TMPDIR as the build has it
        sys.argv[:] = ["-c"]  # as a fresh worker's (`python -c ...`), not the server's
        from tfjsbuild.worker.serve import serve

        serve(
            connection_fd,
            dump_fd,
            int(str(request["parent_pid"])),
            str(request["log_path"]),
            forked=True,
        )
    except BaseException:  # said in the server's log; the build sees the worker exit
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)
    atexit._run_exitfuncs()  # as a fresh interpreter's exit runs them (the server's are none)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(0)


def _read_request(client: socket.socket) -> tuple[dict[str, object], list[int]]:
    """One JSON line and the file descriptors sent with it, within REQUEST_WAIT in all."""
    deadline = time.monotonic() + REQUEST_WAIT
    client.settimeout(REQUEST_WAIT)
    data, fds, _, _ = socket.recv_fds(client, 65536, 2)
    chunks = [data]
    size = len(data)
    while not chunks[-1].endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or size > MAX_REQUEST:
            raise ValueError("a request not sent whole in time")
        client.settimeout(left)
        more = client.recv(65536)
        if not more:
            break
        chunks.append(more)
        size += len(more)
    client.settimeout(None)
    request = json.loads(b"".join(chunks))
    if not isinstance(request, dict):
        raise TypeError(f"a request of {type(request).__name__}")
    if request.get("op") == "fork" and len(fds) != 2:
        raise ValueError(f"a fork request with {len(fds)} file descriptors, not 2")
    return request, list(fds)


def _send(client: socket.socket, message: dict[str, object]) -> None:
    client.sendall(json.dumps(message, allow_nan=False).encode() + b"\n")


def _resident_bytes() -> int | None:
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _peer(client: socket.socket) -> tuple[int | None, int]:
    """The pid and user id of the process at the other end (Linux); elsewhere no pid, and our
    own user id (the socket's folder is this user's only)."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return None, os.getuid()
    credentials = client.getsockopt(socket.SOL_SOCKET, option, struct.calcsize("3i"))
    pid, uid, _ = struct.unpack("3i", credentials)
    return int(pid), int(uid)
