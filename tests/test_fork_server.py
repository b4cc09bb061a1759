"""The fork server: workers forked from a process that imported TensorFlow once build the same
bytes as fresh workers, take the build's environment, die with the build, and are reported as
fresh ones are when they crash. Anything wrong with a server leaves the build to start its own
workers, as without one. Real builds, real TensorFlow, real processes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import SCALER_MODULE, STATE, default_sigint, run_cli
from tfjsbuild.building import fork_server

# A python: source that says, as it is loaded, what its worker process sees.
PROBE_MODULE = (
    SCALER_MODULE.format(scale=2.0).replace("def build():", "def _unused():")
    + """
import json, os
from pathlib import Path


def build():
    umask = os.umask(0)
    os.umask(umask)
    seen = {
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "pgid": os.getpgid(0),
        "cwd": os.getcwd(),
        "umask": umask,
        "probe": os.environ.get("TFJS_BUILD_PROBE_VALUE"),
        "parent": Path(f"/proc/{os.getppid()}/cmdline").read_text().replace("\\0", " "),
        "scale": SCALE,
    }
    (Path(__file__).parent / "seen.json").write_text(json.dumps(seen))
    if os.environ.get("PROBE_HANG"):
        while True:
            pass
    return Scaler()
"""
)
MANIFEST = (
    "version: 1\nmodels:\n  probe:\n    python: models.probe:build\n    signatures: [scale]\n"
)


@pytest.fixture
def servers() -> Iterator[dict[str, str]]:
    """The environment of builds using a fork server of their own (a short folder: a Unix
    socket's path is at most ~100 bytes); its servers stopped at the end."""
    folder = Path(tempfile.mkdtemp(prefix="tfjs-srv-"))
    environment = {"TFJS_BUILD_SERVER": "on", "TFJS_BUILD_SERVER_DIR": str(folder)}
    yield environment
    every = {**os.environ, **environment}
    stopped = fork_server.stop_servers(every)
    _wait_while(lambda: any(_alive(server.pid) for server in stopped), 30)
    shutil.rmtree(folder, ignore_errors=True)


def _wait_while(condition: Callable[[], object], seconds: float) -> None:
    """Until `condition` is false, or `seconds` have passed (the caller asserts what it needs)."""
    deadline = time.monotonic() + seconds
    while condition() and time.monotonic() < deadline:
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def _running(environment: dict[str, str]) -> list[fork_server.ServerStatus]:
    return fork_server.servers({**os.environ, **environment})


def _probe_project(tmp_path: Path, project: Callable[..., Path]) -> Path:
    (tmp_path / "models").mkdir()
    (tmp_path / "models/probe.py").write_text(PROBE_MODULE)
    return project(MANIFEST)


def _probe_built_by_a_server(
    tmp_path: Path, project: Callable[..., Path], servers: dict[str, str]
) -> fork_server.ServerStatus:
    """The probe project built once with a server of its own: that server."""
    _probe_project(tmp_path, project)
    run_cli("run", cwd=tmp_path, check=True, env=servers)
    [server] = _running(servers)
    return server


def _socket(servers: dict[str, str], server: fork_server.ServerStatus) -> Path:
    return Path(servers["TFJS_BUILD_SERVER_DIR"]) / f"{server.key}.sock"


def _seen(tmp_path: Path) -> dict[str, object]:
    seen: dict[str, object] = json.loads((tmp_path / "models/seen.json").read_text())
    return seen


def _outputs(folder: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


@pytest.mark.slow
def test_forked_workers_build_the_bytes_fresh_workers_build(
    project: Callable[..., Path],
    model_store: Callable[..., Path],
    tmp_path: Path,
    servers: dict[str, str],
) -> None:
    project(
        "version: 1\noutput_dir: web\nmodels:\n  m:\n    saved_model: model\n",
        {"model": model_store("multihead")},
    )
    run_cli("run", "-j", "2", cwd=tmp_path, check=True)
    fresh = _outputs(tmp_path / "web")
    assert fresh
    first = run_cli("run", "--force", "-j", "2", cwd=tmp_path, check=True, env=servers)
    assert "starting 2 (starting the server: importing TensorFlow" in first.stdout
    assert _outputs(tmp_path / "web") == fresh
    [server] = _running(servers)
    assert server.workers == 0  # (`current` is for this test process, whose sys.path differs)
    warm = run_cli("run", "--force", "-j", "2", cwd=tmp_path, check=True, env=servers)
    assert "starting 2 (forked from the server, TensorFlow imported)" in warm.stdout
    assert _outputs(tmp_path / "web") == fresh
    log = (tmp_path / STATE / "worker.log").read_text()
    assert log.count("ready: TensorFlow imported in 0.0 s") == 2, log
    assert [s.pid for s in _running(servers)] == [server.pid]  # the same server served both

    status = run_cli("server", "status", cwd=tmp_path, check=True, env=servers)
    assert f"server pid {server.pid} (this installation's) running" in status.stdout
    stopped = run_cli("server", "stop", cwd=tmp_path, check=True, env=servers)
    assert f"server pid {server.pid} (this installation's) stopping" in stopped.stdout
    _wait_while(lambda: _alive(server.pid), 10)
    assert not _alive(server.pid)
    assert not list(Path(servers["TFJS_BUILD_SERVER_DIR"]).glob("*.sock"))
    after = run_cli("server", "status", cwd=tmp_path, check=True, env=servers)
    assert after.stdout == "no fork server is running\n"


@pytest.mark.slow
def test_a_forked_worker_takes_the_builds_environment(
    project: Callable[..., Path], tmp_path: Path, servers: dict[str, str]
) -> None:
    _probe_project(tmp_path, project)

    def build(value: str, **more: str) -> dict[str, object]:
        done = subprocess.run(
            [sys.executable, "-m", "tfjsbuild", "run", "--force"],
            cwd=tmp_path,
            env={**os.environ, **servers, "TFJS_BUILD_PROBE_VALUE": value, **more},
            preexec_fn=lambda: os.umask(0o027),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return _seen(tmp_path)

    first = build("one")
    [server] = _running(servers)
    assert first["ppid"] == server.pid  # forked: not a fresh interpreter
    assert "fork_server import main" in str(first["parent"])
    assert first["pgid"] == first["pid"]  # its own process group, as a started worker
    assert first["cwd"] == str(tmp_path)
    assert first["umask"] == 0o027
    assert first["probe"] == "one"
    # tfjs-build's own variables are not part of the key: the same server, the build's value.
    second = build("two")
    assert (second["ppid"], second["probe"]) == (server.pid, "two")
    # A variable TensorFlow may read as it is imported: another server, started for it.
    third = build("three", TF_TFJS_BUILD_TEST="1")
    assert third["ppid"] != server.pid and third["probe"] == "three"
    assert len(_running(servers)) == 2
    # User code is never imported by the server: the edited module is what the next build runs.
    (tmp_path / "models/probe.py").write_text(PROBE_MODULE.replace("SCALE = 2.0", "SCALE = 3.0"))
    fourth = build("four")
    assert (fourth["ppid"], fourth["scale"]) == (server.pid, 3.0)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["SIGKILL", "SIGINT"])
def test_a_forked_worker_never_outlives_its_build(
    project: Callable[..., Path], tmp_path: Path, servers: dict[str, str], how: str
) -> None:
    _probe_project(tmp_path, project)
    build = subprocess.Popen(
        [sys.executable, "-m", "tfjsbuild", "run", "-j", "1"],
        cwd=tmp_path,
        env={**os.environ, **servers, "PROBE_HANG": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's Ctrl-C would reach
        preexec_fn=default_sigint,
    )
    try:
        deadline = time.monotonic() + 180
        while not (tmp_path / "models/seen.json").exists():
            assert build.poll() is None, build.communicate()
            assert time.monotonic() < deadline, "the worker never loaded the source"
            time.sleep(0.05)
        seen = _seen(tmp_path)
        [server] = _running(servers)
        assert seen["ppid"] == server.pid and server.workers == 1
        worker = int(str(seen["pid"]))
        if how == "SIGKILL":
            os.kill(build.pid, signal.SIGKILL)  # the build alone, as the OOM killer would
        else:
            os.killpg(build.pid, signal.SIGINT)  # a terminal's Ctrl-C: the worker is not in it
        _, stderr = build.communicate(timeout=60)
        _wait_while(lambda: _alive(worker), 10)
        assert not _alive(worker), f"worker {worker} outlived the build ({how})"
        assert build.returncode == (130 if how == "SIGINT" else -signal.SIGKILL), stderr
        # The server lives on, and has forgotten the worker.
        _wait_while(lambda: _running(servers)[0].workers, 10)
        assert [(s.pid, s.workers) for s in _running(servers)] == [(server.pid, 0)]
    finally:
        if build.poll() is None:
            build.kill()
            build.communicate()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("body", "said"),
    [
        ("os._exit(3)", "the worker process exited with status 3 while loading the source"),
        ("os.kill(os.getpid(), 11)", "the worker process crashed with SIGSEGV while loading"),
    ],
)
def test_a_forked_worker_that_dies_is_reported_as_a_fresh_one_is(
    project: Callable[..., Path], tmp_path: Path, servers: dict[str, str], body: str, said: str
) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "models/dies.py").write_text(f"import os\n\n\ndef build():\n    {body}\n")
    project("version: 1\nmodels:\n  dies:\n    python: models.dies:build\n    signatures: [a]\n")
    failed = run_cli("run", cwd=tmp_path, env=servers)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert said in failed.stdout
    log = (tmp_path / STATE / "worker.log").read_text()
    assert "ready: TensorFlow imported in 0.0 s" in log and "no fork server" not in log  # forked
    [server] = _running(servers)  # one crashing worker leaves the server as it was
    assert server.workers == 0


@pytest.mark.slow
def test_a_server_that_cannot_be_used_leaves_the_build_to_start_workers(
    project: Callable[..., Path], tmp_path: Path, servers: dict[str, str]
) -> None:
    _probe_project(tmp_path, project)
    folder = Path(servers["TFJS_BUILD_SERVER_DIR"])
    folder.chmod(0o755)  # others could reach its sockets: refused
    run_cli("run", cwd=tmp_path, check=True, env=servers)
    assert "-m tfjsbuild run" in str(_seen(tmp_path)["parent"])  # started by the build itself
    log = (tmp_path / STATE / "worker.log").read_text()
    assert f"no fork server: its folder {folder} is not a folder only this user can use" in log
    assert not list(folder.iterdir())

    folder.chmod(0o700)
    run_cli("run", "--force", cwd=tmp_path, check=True, env=servers)
    [server] = _running(servers)
    assert _seen(tmp_path)["ppid"] == server.pid
    # A server killed outright leaves its socket behind: the next build starts another.
    os.kill(server.pid, signal.SIGKILL)
    run_cli("run", "--force", cwd=tmp_path, check=True, env=servers)
    [replaced] = _running(servers)
    assert replaced.pid != server.pid and _seen(tmp_path)["ppid"] == replaced.pid

    # Something else where the socket goes: never removed, the build starts its own workers.
    replaced_socket = folder / f"{replaced.key}.sock"
    fork_server.stop_servers({**os.environ, **servers})
    _wait_while(lambda: replaced_socket.exists(), 10)
    replaced_socket.write_text("mine")
    run_cli("run", "--force", cwd=tmp_path, check=True, env=servers)
    assert "-m tfjsbuild run" in str(_seen(tmp_path)["parent"])
    assert replaced_socket.read_text() == "mine"
    assert "is in the way: not a socket" in (tmp_path / STATE / "worker.log").read_text()


@pytest.mark.slow
def test_an_idle_server_exits(
    project: Callable[..., Path], tmp_path: Path, servers: dict[str, str]
) -> None:
    _probe_project(tmp_path, project)
    idle = {**servers, "TFJS_BUILD_SERVER_IDLE_SECONDS": "1"}
    run_cli("run", cwd=tmp_path, check=True, env=idle)
    server = int(str(_seen(tmp_path)["ppid"]))
    _wait_while(lambda: _alive(server), 30)
    assert not _alive(server)
    assert not list(Path(servers["TFJS_BUILD_SERVER_DIR"]).glob("*.sock"))


# Answers whatever it is asked with ANSWER (a line of JSON), at the socket given.
FAKE_SERVER = """
import socket, sys
listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
listener.bind(sys.argv[1])
listener.listen(8)
print("ready", flush=True)
while True:
    client, _ = listener.accept()
    client.recv(1 << 20)
    client.sendall(sys.argv[2].encode() + b"\\n")
    client.close()
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    "answer", ['{"pid": -1}', '{"pid": 0}', '{"pid": 1}', '{"pid": true}', "["]
)
def test_whatever_answers_at_the_socket_never_chooses_what_the_build_signals(
    project: Callable[..., Path], tmp_path: Path, servers: dict[str, str], answer: str
) -> None:
    server = _probe_built_by_a_server(tmp_path, project, servers)
    fork_server.stop_servers({**os.environ, **servers})
    path = _socket(servers, server)
    _wait_while(lambda: path.exists(), 10)
    fake = subprocess.Popen(
        [sys.executable, "-c", FAKE_SERVER, str(path), answer], stdout=subprocess.PIPE, text=True
    )
    try:
        assert fake.stdout is not None and fake.stdout.readline() == "ready\n"
        # A pid of -1 or 0 signalled would kill this test's own processes, or every one.
        done = run_cli("run", "--force", cwd=tmp_path, check=True, env=servers)
        assert "starting 1 (starting the server" in done.stdout  # its status answer is no pid
        assert "-m tfjsbuild run" in str(_seen(tmp_path)["parent"])  # a worker it started
        log = (tmp_path / STATE / "worker.log").read_text()
        assert "no fork server: " in log, log
        assert fake.poll() is None
    finally:
        fake.kill()
        fake.wait()


@pytest.mark.slow
def test_a_stopped_server_delays_a_build_but_never_hangs_or_doubles_it(
    project: Callable[..., Path], tmp_path: Path, servers: dict[str, str]
) -> None:
    server = _probe_built_by_a_server(tmp_path, project, servers)
    os.kill(server.pid, signal.SIGSTOP)  # as a frozen cgroup or `docker pause` would
    try:
        start = time.monotonic()
        done = run_cli("run", "--force", cwd=tmp_path, check=True, env=servers, timeout=120)
        assert time.monotonic() - start < 90
        assert "-m tfjsbuild run" in str(_seen(tmp_path)["parent"])
        log = (tmp_path / STATE / "worker.log").read_text()
        assert "did not fork a worker" in log, done.stdout + log
    finally:
        os.kill(server.pid, signal.SIGCONT)
    # The request it took late forks a worker for a build that gave up on it: that worker must
    # not run (it is killed, or finds the build's end of its socket closed and exits).
    _wait_while(lambda: _running(servers)[0].workers, 20)
    assert [(s.pid, s.workers) for s in _running(servers)] == [(server.pid, 0)]


@pytest.mark.slow
def test_a_malformed_request_leaves_the_server_serving(
    project: Callable[..., Path], tmp_path: Path, servers: dict[str, str]
) -> None:
    server = _probe_built_by_a_server(tmp_path, project, servers)
    path = _socket(servers, server)
    for request in (b"[" * 200_000 + b"\n", b'{"op": "fork"}\n', b"\xff\n", b""):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(str(path))
            client.sendall(request)
            client.shutdown(socket.SHUT_WR)
            client.settimeout(10)
            while client.recv(4096):
                pass
    assert [s.pid for s in _running(servers)] == [server.pid]
    run_cli("run", "--force", cwd=tmp_path, check=True, env=servers)
    assert _seen(tmp_path)["ppid"] == server.pid


def test_whether_a_build_uses_a_server() -> None:
    assert fork_server.enabled({})
    assert not fork_server.enabled({"CI": "true"})
    assert fork_server.enabled({"CI": "false"})
    assert fork_server.enabled({"CI": "true", "TFJS_BUILD_SERVER": "on"})
    assert not fork_server.enabled({"JENKINS_URL": "http://ci/"})
    assert not fork_server.enabled({"TF_BUILD": "True"})  # Azure Pipelines
    for off in ("0", "off", "OFF", "false", "no"):
        assert not fork_server.enabled({"TFJS_BUILD_SERVER": off})


def test_what_makes_another_server(tmp_path: Path) -> None:
    base = {"HOME": str(tmp_path), "PATH": "/usr/bin"}
    key = fork_server.server_key(base)
    # What a terminal changes, and tfjs-build's own settings (each worker gets them as forked).
    for same in ("PWD", "SHLVL", "TERM", "SSH_CONNECTION", "TFJS_BUILD_WORKER_MEMORY_MB"):
        assert fork_server.server_key({**base, same: "1"}) == key, same
    # Anything an import may read: TensorFlow's, Keras's, Python's, the time zone, the locale.
    for keyed in ("TF_ENABLE_ONEDNN_OPTS", "CUDA_VISIBLE_DEVICES", "PYTHONHASHSEED", "TZ", "LANG"):
        assert fork_server.server_key({**base, keyed: "1"}) != key, keyed
    assert fork_server.server_key({**base, "HOME": str(tmp_path / "other")}) != key
    # Keras reads ~/.keras/keras.json as it is imported (floatx: float64 changes the graph).
    (tmp_path / ".keras").mkdir()
    (tmp_path / ".keras/keras.json").write_text('{"floatx": "float64"}')
    assert fork_server.server_key(base) != key
