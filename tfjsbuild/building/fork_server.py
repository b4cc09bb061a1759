"""The parent's end of the fork server: whether a build uses one, finding or starting it, and a
worker forked from it, seen as a process the pool can poll, wait for and kill.

A server serves the builds that would have started the same workers: same Python, `sys.path`,
installed packages and tfjs-build code, the environment variables TensorFlow reads as it is
imported, the same control group and resource limits. All of that makes its key, and its
socket's name: a build that differs in any of them gets (and starts) another server, and one
that is no longer wanted ends after its idle time. Anything wrong with a server (it will not
start, it died, its folder is not this user's alone) is said in the workers' log and the build
starts its workers itself, as without one. The server's own end is
`tfjsbuild.worker.fork_server`; this module imports no TensorFlow.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import resource
import select
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

VARIABLE = "TFJS_BUILD_SERVER"  # off: no server; on: one even where CI is set
DIR_VARIABLE = "TFJS_BUILD_SERVER_DIR"
IDLE_VARIABLE = "TFJS_BUILD_SERVER_IDLE_SECONDS"
DEFAULT_IDLE = 3 * 3600.0  # as Bazel's and Gradle's servers
START_WAIT = 10.0  # seconds for a started server to bind its socket (TensorFlow comes later)
READY_WAIT = 60.0  # seconds for a server to answer a fork (its import of TensorFlow first)
STATUS_WAIT = 5.0  # seconds a worker's exit status may lag behind its exit
# Read by TensorFlow, its libraries or Python as they start: part of a server's key.
KEYED_PREFIXES = (
    *("TF_", "TFJS_", "CUDA", "XLA_", "OMP_", "KMP_", "MKL", "OPENBLAS", "LD_"),
    *("PYTHON", "JAX_", "KERAS_", "TPU_"),
)
OFF = ("0", "off", "false", "no")
BOOTSTRAP = (
    "import sys, json; sys.path[:] = json.loads(sys.argv[1]); "
    "from tfjsbuild.worker.fork_server import main; "
    "main(sys.argv[2], sys.argv[3], float(sys.argv[4]))"
)
_started: list[subprocess.Popen[bytes]] = []  # servers this process started, reaped when gone


@dataclass(frozen=True)
class ServerStatus:
    """A running server, as it answered `status`."""

    pid: int
    key: str
    current: bool  # builds started from here now would use it
    workers: int  # workers it forked that are still running
    started: float  # when, as time.time()
    resident_bytes: int | None


class ServerUnavailable(Exception):
    """Why no server forked the worker: the build starts it itself."""


def enabled(environ: Mapping[str, str]) -> bool:
    """TFJS_BUILD_SERVER, else on unless CI is set (a CI job's machine starts cold anyway, and
    nothing should outlive its build there)."""
    setting = environ.get(VARIABLE, "").strip().lower()
    if setting:
        return setting not in OFF
    return environ.get("CI", "").strip().lower() in ("", *OFF)


def server_dir(environ: Mapping[str, str]) -> Path:
    """TFJS_BUILD_SERVER_DIR, else $XDG_RUNTIME_DIR/tfjs-build, else /tmp/tfjs-build-<uid>."""
    if chosen := environ.get(DIR_VARIABLE, "").strip():
        return Path(chosen)
    if runtime := environ.get("XDG_RUNTIME_DIR", "").strip():
        return Path(runtime) / "tfjs-build"
    return Path(tempfile.gettempdir()) / f"tfjs-build-{os.getuid()}"


def idle_seconds(environ: Mapping[str, str]) -> float:
    text = environ.get(IDLE_VARIABLE, "").strip()
    try:
        seconds = float(text) if text else DEFAULT_IDLE
    except ValueError:
        seconds = DEFAULT_IDLE
    return seconds if seconds > 0 and seconds < 10**9 else DEFAULT_IDLE


def server_key(environ: Mapping[str, str]) -> str:
    """What a server's workers would share with workers this process starts, as 24 hex."""
    digest = hashlib.sha256()
    for part in _key_parts(environ):
        digest.update(json.dumps(part, sort_keys=True, allow_nan=False).encode() + b"\0")
    return digest.hexdigest()[:24]


def _key_parts(environ: Mapping[str, str]) -> list[object]:
    code = Path(__file__).resolve().parents[1]  # tfjsbuild/
    sources = sorted(code.rglob("*.py"))
    code_digest = hashlib.sha256()
    for path in sources:
        code_digest.update(str(path.relative_to(code)).encode() + b"\0" + path.read_bytes())
    installed = []
    for entry in sys.path:
        with contextlib.suppress(OSError):
            installed.append(sorted(n for n in os.listdir(entry or ".") if n.endswith("-info")))
    limits = [resource.getrlimit(getattr(resource, n)) for n in dir(resource) if n[:7] == "RLIMIT_"]
    cgroup = ""
    with contextlib.suppress(OSError):
        cgroup = Path("/proc/self/cgroup").read_text()
    keyed = {n: v for n, v in environ.items() if n.startswith(KEYED_PREFIXES) and n != VARIABLE}
    return [sys.executable, sys.path, code_digest.hexdigest(), installed, limits, cgroup, keyed]


class ForkedWorker:
    """A worker forked by the server, with what `subprocess.Popen` offers the pool: its pid,
    `poll`, `wait`, `kill` and `send_signal`. Its exit status comes from the server."""

    def __init__(self, pid: int, channel: socket.socket) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._channel = channel
        self._pending = b""

    def poll(self) -> int | None:
        if self.returncode is None:
            self._read_status(0.0)
            if self.returncode is None and not _alive(self.pid):
                self._read_status(STATUS_WAIT)  # exited: the server says how, at once
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise subprocess.TimeoutExpired(f"worker pid {self.pid}", timeout or 0.0)
            self._read_status(1.0 if left is None else min(1.0, left))
        return self.returncode if self.returncode is not None else -signal.SIGKILL

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def send_signal(self, number: int) -> None:
        if self.poll() is None:
            with contextlib.suppress(OSError):
                os.kill(self.pid, number)

    def _read_status(self, timeout: float) -> None:
        ready, _, _ = select.select([self._channel], [], [], timeout)
        if not ready:
            return
        try:
            data = self._channel.recv(4096)
        except OSError:
            data = b""
        if not data:  # the server is gone, and with it (parent-death signal) the worker
            if not _alive(self.pid):
                self.returncode = -signal.SIGKILL
                self._channel.close()
            return
        self._pending += data
        if b"\n" in self._pending:
            try:
                status = json.loads(self._pending.split(b"\n", 1)[0])["status"]
            except (ValueError, TypeError, KeyError):
                status = None  # a server that makes no sense: as if it were gone
            self.returncode = status if isinstance(status, int) else -signal.SIGKILL
            self._channel.close()


def fork_worker(connection: socket.socket, dump: IO[bytes], log_path: Path) -> ForkedWorker:
    """A worker forked by this build's server (started if there is none), talking on
    `connection` and dumping its stacks into `dump`; ServerUnavailable says why not."""
    environ = os.environ
    folder = _own_folder(server_dir(environ))
    key = server_key(environ)
    path = folder / f"{key}.sock"
    if len(os.fsencode(path)) > 100:
        raise ServerUnavailable(f"its socket's path is too long for a Unix socket: {path}")
    channel = _connect_or_start(folder, key, path, environ)
    umask = os.umask(0)
    os.umask(umask)
    request = {
        "op": "fork",
        "env": dict(environ),
        "sys_path": sys.path,
        "cwd": os.getcwd(),
        "umask": umask,
        "parent_pid": os.getpid(),
        "log_path": str(log_path),
    }
    try:
        data = json.dumps(request, allow_nan=False).encode() + b"\n"
        socket.send_fds(channel, [data], [connection.fileno(), dump.fileno()])
        reply = _read_line(channel, READY_WAIT)
    except (OSError, ValueError) as error:
        channel.close()
        raise ServerUnavailable(f"the server at {path} did not fork a worker: {error}") from None
    pid = reply.get("pid")
    if not isinstance(pid, int):
        channel.close()
        raise ServerUnavailable(f"the server at {path} answered {reply!r}")
    return ForkedWorker(pid, channel)


def how_workers_start(environ: Mapping[str, str]) -> str:
    """What starting a worker costs now, as the build's first line says it."""
    if not enabled(environ):
        return "importing TensorFlow"
    path = server_dir(environ) / f"{server_key(environ)}.sock"
    with contextlib.suppress(OSError, ValueError):
        if "pid" in ask(path, {"op": "status"}):
            return "forked from the server, TensorFlow imported"
    return "starting the server: importing TensorFlow, kept for later builds"


def servers(environ: Mapping[str, str]) -> list[ServerStatus]:
    """This user's servers in the servers' folder that answer, oldest first."""
    folder = server_dir(environ)
    current = server_key(environ)
    found = []
    with contextlib.suppress(OSError):
        for path in sorted(folder.glob("*.sock")):
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                found.append(_status(ask(path, {"op": "status"}), current))
    return sorted(found, key=lambda server: server.started)


def stop_servers(environ: Mapping[str, str]) -> list[ServerStatus]:
    """Stop every server `servers` finds: each stops taking builds now and exits once the
    workers it forked have ended. The ones told to stop."""
    stopped = []
    for server in servers(environ):
        path = server_dir(environ) / f"{server.key}.sock"
        with contextlib.suppress(OSError, ValueError):
            if ask(path, {"op": "stop"}).get("stopping") == server.pid:
                stopped.append(server)
    return stopped


def _status(answer: Mapping[str, object], current: str) -> ServerStatus:
    pid, key, workers = answer["pid"], answer["key"], answer["workers"]
    started, resident = answer["started"], answer.get("resident_bytes")
    if not (isinstance(pid, int) and isinstance(key, str) and isinstance(workers, list)):
        raise TypeError("a status answer's pid, key or workers")
    if not isinstance(started, (int, float)) or not isinstance(resident, (int, type(None))):
        raise TypeError("a status answer's started or resident_bytes")
    return ServerStatus(pid, key, key == current, len(workers), float(started), resident)


def ask(path: Path, request: dict[str, object], timeout: float = STATUS_WAIT) -> dict[str, object]:
    """One request to the server at `path`, and its answer (OSError, ValueError: none)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as channel:
        channel.settimeout(timeout)
        channel.connect(str(path))
        channel.sendall(json.dumps(request, allow_nan=False).encode() + b"\n")
        return _read_line(channel, timeout)


def _connect_or_start(
    folder: Path, key: str, path: Path, environ: Mapping[str, str]
) -> socket.socket:
    with contextlib.suppress(OSError):
        return _connect(path)
    # One build starts it; the others wait for this lock, then connect to it.
    with open(folder / f"{key}.lock", "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with contextlib.suppress(OSError):
            return _connect(path)
        with contextlib.suppress(FileNotFoundError):
            if not stat.S_ISSOCK(os.lstat(path).st_mode):
                raise ServerUnavailable(f"{path} is in the way: not a socket")
            os.unlink(path)  # a server that is gone left it
        _start(folder, key, path, environ)
        deadline = time.monotonic() + START_WAIT
        while True:
            try:
                return _connect(path)
            except OSError as error:
                if time.monotonic() > deadline or _started[-1].poll() is not None:
                    log = folder / f"{key}.log"
                    raise ServerUnavailable(f"it did not start ({error}); see {log}") from None
                time.sleep(0.02)


def _start(folder: Path, key: str, path: Path, environ: Mapping[str, str]) -> None:
    for server in list(_started):
        if server.poll() is not None:
            _started.remove(server)
    log = os.open(folder / f"{key}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        server = subprocess.Popen(
            [
                sys.executable,
                "-c",
                BOOTSTRAP,
                json.dumps([str(entry) for entry in sys.path], allow_nan=False),
                str(path),
                key,
                str(idle_seconds(environ)),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            cwd="/",
            start_new_session=True,  # not in the terminal's group: Ctrl-C is for the build
        )
    finally:
        os.close(log)
    _started.append(server)


def _connect(path: Path) -> socket.socket:
    channel = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        channel.connect(str(path))
    except OSError:
        channel.close()
        raise
    return channel


def _own_folder(folder: Path) -> Path:
    """The servers' folder, made if missing; refused unless only this user can use it."""
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = os.lstat(folder)
    except OSError as error:
        raise ServerUnavailable(f"its folder {folder} cannot be made: {error}") from None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise ServerUnavailable(
            f"its folder {folder} is not a folder only this user can use (mode "
            f"{stat.filemode(info.st_mode)}); remove it, or set {DIR_VARIABLE}"
        )
    return folder


def _read_line(channel: socket.socket, timeout: float) -> dict[str, object]:
    channel.settimeout(timeout)
    data = b""
    while b"\n" not in data:
        more = channel.recv(65536)
        if not more:
            raise ValueError("the server closed the connection without an answer")
        data += more
    channel.settimeout(None)
    answer = json.loads(data.split(b"\n", 1)[0])
    if not isinstance(answer, dict):
        raise ValueError(f"an answer of {type(answer).__name__}")
    return answer


def _alive(pid: int) -> bool:
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
