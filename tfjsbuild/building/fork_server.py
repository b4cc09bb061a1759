"""The parent's end of the fork server: whether a build uses one, finding or starting it,
asking it for a worker (`forked_worker` is that worker as the pool sees it), status and stop.

A server serves the builds that would have started the same workers: same Python, `sys.path`,
installed packages and tfjs-build code, environment (but a terminal's variables and
tfjs-build's own), `keras.json`, control group, namespaces, resource limits, niceness and CPUs.
All of that makes its key, and its socket's name: a build that differs in any of them gets (and
starts) another server, and one no longer wanted ends after its idle time. Anything wrong with
a server (it will not start, died, is stopped, answers nonsense, its folder is not this user's
alone) is said in the workers' log and the build starts its workers itself, as without one.
The server's own end is `tfjsbuild.worker.fork_server`; this module imports no TensorFlow.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import resource
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from tfjsbuild.building.forked_worker import STATUS_WAIT, ForkedWorker

VARIABLE = "TFJS_BUILD_SERVER"  # off: no server; on: one even where CI is set
DIR_VARIABLE = "TFJS_BUILD_SERVER_DIR"
IDLE_VARIABLE = "TFJS_BUILD_SERVER_IDLE_SECONDS"
DEFAULT_IDLE = 3 * 3600.0  # as Bazel's and Gradle's servers
START_WAIT = 10.0  # seconds for a started server to bind its socket (TensorFlow comes later)
READY_WAIT = 20.0  # seconds for a server to answer a fork (its import of TensorFlow first)
CONNECT_WAIT = 5.0  # seconds for a connection to be taken (a stopped server never takes it)
MAX_SERVERS = 3  # a user's servers in one folder: starting one more stops the least used
# Every environment variable is part of a server's key (any may be read as TensorFlow, Keras or
# their libraries are imported) but these, which a terminal or session changes and no import
# reads, and tfjs-build's own (read by the build, and given to each worker as it is forked).
VOLATILE = frozenset(
    {"PWD", "OLDPWD", "SHLVL", "_", "COLUMNS", "LINES", "PS1", "PS2", "PROMPT_COMMAND", "MAIL"}
    | {"DISPLAY", "WINDOWID", "STY", "WINDOW", "LS_COLORS", "GPG_TTY", "SSH_AUTH_SOCK"}
    | {"DBUS_SESSION_BUS_ADDRESS", "KRB5CCNAME", "HISTFILE", "HISTSIZE", "HISTCONTROL"}
)
VOLATILE_PREFIXES = ("TFJS_BUILD_", "SSH_", "TERM", "TMUX", "XDG_SESSION_", "XDG_SEAT", "LC_TERM")
OFF = ("0", "off", "false", "no")
# CI systems that do not set CI: Jenkins, Azure Pipelines, TeamCity, AWS CodeBuild.
CI_MARKS = ("JENKINS_URL", "TF_BUILD", "TEAMCITY_VERSION", "CODEBUILD_BUILD_ID")
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
    last_used: float  # its last request, as time.time()
    resident_bytes: int | None


class ServerUnavailable(Exception):
    """Why no server forked the worker: the build starts it itself."""


def enabled(environ: Mapping[str, str]) -> bool:
    """TFJS_BUILD_SERVER, else on except on CI (a CI job's machine starts cold, and nothing
    should outlive its job there): `CI` set to anything but a no, or a CI system's own mark."""
    setting = environ.get(VARIABLE, "").strip().lower()
    if setting:
        return setting not in OFF
    if environ.get("CI", "").strip().lower() not in ("", *OFF):
        return False
    return not any(environ.get(mark, "").strip() for mark in CI_MARKS)


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
        digest.update(json.dumps(part, sort_keys=True, allow_nan=False, default=repr).encode())
        digest.update(b"\0")
    return digest.hexdigest()[:24]


def _key_parts(environ: Mapping[str, str]) -> list[object]:
    """Everything a worker forked from a server shares with it, and a fresh worker would take
    from this process: what is imported and how (code, packages, the environment and files
    read on import), and the process's place and limits (control group, namespaces, resource
    limits, niceness, CPUs)."""
    code = Path(__file__).resolve().parents[1]  # tfjsbuild/
    code_digest = hashlib.sha256()
    for path in sorted(code.rglob("*.py")):
        code_digest.update(str(path.relative_to(code)).encode() + b"\0" + _read(str(path)).encode())
    installed = []
    for entry in map(str, sys.path):
        if "-packages" in entry:  # site- or dist-packages: what is installed, .pth files too
            with contextlib.suppress(OSError):
                installed.append(sorted(os.listdir(entry)))
    place: list[object] = [_read("/proc/self/cgroup")]
    for name in sorted(n for n in dir(resource) if n.startswith("RLIMIT_")):
        with contextlib.suppress(ValueError, OSError):
            place.append(resource.getrlimit(getattr(resource, name)))
    with contextlib.suppress(AttributeError, OSError):
        place.append(os.getpriority(os.PRIO_PROCESS, 0))
        place.append(sorted(os.sched_getaffinity(0)))
    for namespace in ("mnt", "pid", "net", "user", "uts", "ipc", "cgroup"):
        with contextlib.suppress(OSError):
            place.append(os.readlink(f"/proc/self/ns/{namespace}"))
    keyed = {
        name: value
        for name, value in environ.items()
        if name not in VOLATILE and not name.startswith(VOLATILE_PREFIXES)
    }
    keras_home = environ.get("KERAS_HOME") or str(Path(environ.get("HOME", "~")) / ".keras")
    keras = _read(str(Path(keras_home).expanduser() / "keras.json"))  # read on import
    paths = [str(entry) for entry in sys.path]
    return [sys.executable, paths, code_digest.hexdigest(), installed, place, keyed, keras]


def _read(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def fork_worker(connection: socket.socket, dump: IO[bytes], log_path: Path) -> ForkedWorker:
    """A worker forked by this build's server (started if there is none), talking on
    `connection` and dumping its stacks into `dump`; ServerUnavailable says why not (then the
    server may still fork one later, on these descriptors: the caller must not reuse them)."""
    try:
        return _fork_worker(connection, dump, log_path)
    except ServerUnavailable:
        raise
    except Exception as error:  # whatever it is, the build starts its worker itself
        raise ServerUnavailable(f"{type(error).__name__}: {error}") from None


def _fork_worker(connection: socket.socket, dump: IO[bytes], log_path: Path) -> ForkedWorker:
    environ = os.environ
    folder = _own_folder(server_dir(environ))
    key = server_key(environ)
    path = folder / f"{key}.sock"
    if len(os.fsencode(path)) > 100:
        raise ServerUnavailable(f"its socket's path is too long for a Unix socket: {path}")
    channel = _connect_or_start(folder, key, path, environ)
    try:
        server_pid = _server_pid(channel)
        umask = os.umask(0)
        os.umask(umask)
        request = {
            "op": "fork",
            "env": dict(environ),
            "sys_path": [str(entry) for entry in sys.path],
            "cwd": os.getcwd(),
            "umask": umask,
            "parent_pid": os.getpid(),
            "log_path": str(log_path),
        }
        data = json.dumps(request, allow_nan=False).encode() + b"\n"
        try:
            socket.send_fds(channel, [data], [connection.fileno(), dump.fileno()])
            reply = _read_line(channel, READY_WAIT)
        except TimeoutError:
            raise ServerUnavailable(
                f"the server at {path} did not fork a worker within {READY_WAIT:g} s"
            ) from None
        except (OSError, ValueError) as error:
            raise ServerUnavailable(
                f"the server at {path} did not fork a worker: {error}"
            ) from None
        pid = reply.get("pid")
        if not isinstance(pid, int) or isinstance(pid, bool):
            raise ServerUnavailable(f"the server at {path} answered {reply!r}")
        return ForkedWorker(pid, channel, server_pid)
    except BaseException:
        channel.close()  # a fork it still makes cannot tell us its pid: the server kills it
        raise


def _server_pid(channel: socket.socket) -> int:
    """The pid of the server at the other end, checked to run as this user (Linux)."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return -1
    pid, uid, _ = struct.unpack("3i", channel.getsockopt(socket.SOL_SOCKET, option, 12))
    if uid != os.getuid():
        raise ServerUnavailable(f"the process at its socket runs as user {uid}, not as this one")
    return int(pid)


def how_workers_start(environ: Mapping[str, str]) -> str:
    """What starting a worker costs now, as the build's first line says it."""
    if not enabled(environ):
        return "importing TensorFlow"
    with contextlib.suppress(Exception):  # whatever it is, a worker will start anyway
        key = server_key(environ)
        path = server_dir(environ) / f"{key}.sock"
        if _status(ask(path, {"op": "status"}, timeout=1.0), key).current:
            return "forked from the server, TensorFlow imported"
    return "starting the server: importing TensorFlow, kept for later builds"


def servers(environ: Mapping[str, str]) -> list[ServerStatus]:
    """This user's servers in the servers' folder that answer, oldest first."""
    return _servers_in(server_dir(environ), server_key(environ))


def _servers_in(folder: Path, current: str) -> list[ServerStatus]:
    found = []
    with contextlib.suppress(OSError):
        for path in sorted(folder.glob("*.sock")):
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError, RecursionError):
                found.append(_status(ask(path, {"op": "status"}, timeout=1.0), current))
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
    used = answer.get("last_used", started)
    if not (isinstance(pid, int) and isinstance(key, str) and isinstance(workers, list)):
        raise TypeError("a status answer's pid, key or workers")
    if not isinstance(started, (int, float)) or not isinstance(used, (int, float)):
        raise TypeError("a status answer's started or last_used")
    if not isinstance(resident, (int, type(None))):
        raise TypeError("a status answer's resident_bytes")
    return ServerStatus(
        pid, key, key == current, len(workers), float(started), float(used), resident
    )


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
    for started in list(_started):
        if started.poll() is not None:
            _started.remove(started)
    # Room for it: the least recently used of this folder's servers are stopped (each exits
    # once its running workers have ended).
    running = sorted(_servers_in(folder, key), key=lambda server: server.last_used)
    for unused in running[: max(0, len(running) - MAX_SERVERS + 1)]:
        with contextlib.suppress(OSError, ValueError, RecursionError):
            ask(folder / f"{unused.key}.sock", {"op": "stop"}, timeout=1.0)
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
        channel.settimeout(CONNECT_WAIT)
        channel.connect(str(path))
        channel.settimeout(None)
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
