"""User code that ends, crashes or hangs its worker fails only its own signature, located.

The other signatures build (running beside the dying worker or queued behind it), the exit code
is 1, and no worker outlives the build.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import jsonschema
import pytest

import tfjsbuild
from conftest import REPO, STATE, default_sigint, run_cli
from tfjsbuild.building.finish import finish
from tfjsbuild.building.project import Project
from tfjsbuild.manifest.load import load_manifest
from tfjsbuild.planning.plan import PlanItem
from tfjsbuild.planning.targets import resolve_targets
from tfjsbuild.stores.state import BuildState, load_state
from tfjsbuild.worker.task import ConversionOutcome, ConversionTask

HANG_TIMEOUT = 2

# Model name -> (its module models/<name>.py, what the build must say about it).
# `{log}` stands for the worker log; the line numbers are the modules' own.
MISBEHAVING: dict[str, tuple[str, str]] = {
    "exits": (
        "import sys\n\n\ndef build():\n    sys.exit(0)\n",
        "sys.exit(0) was called while loading the source (at models/exits.py:5); "
        "to fail, raise an exception instead of exiting",
    ),
    "interrupts": (
        "def build():\n    raise KeyboardInterrupt\n",
        "KeyboardInterrupt was raised while loading the source (at models/interrupts.py:2)",
    ),
    "generator_exit": (
        "def build():\n    raise GeneratorExit('closed')\n",
        "GeneratorExit was raised (closed) while loading the source "
        "(at models/generator_exit.py:2)",
    ),
    "os_exit": (
        "import os\n\n\ndef build():\n    os._exit(1)\n",
        "the worker process exited with status 1 while loading the source; see {log}",
    ),
    "segfault": (
        "import ctypes\n\n\ndef build():\n    ctypes.string_at(0)\n",
        "the worker process crashed with SIGSEGV while loading the source "
        "(at models/segfault.py:5); see {log}",
    ),
    "oom": (
        "import os\nimport signal\n\n\ndef build():\n    os.kill(os.getpid(), signal.SIGKILL)\n",
        "the worker process was killed by SIGKILL (out of memory?) while loading the source; "
        "see {log}",
    ),
    "hang": (
        "def build():\n    while True: pass\n",
        f"did not finish within {HANG_TIMEOUT} s (timeout) while loading the source "
        "(at models/hang.py:2); raise `timeout` in tfjs-build.yaml if it needs longer",
    ),
    # Dies while its signature is traced, not while the source loads: the signature's line.
    "exits_tracing": (
        textwrap.dedent(
            """\
            import os

            import tensorflow as tf


            @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
            def double(x):
                os._exit(3)


            def build():
                return {"a": double}
            """
        ),
        "the worker process exited with status 3 while converting; see {log}",
    ),
}


def misbehaving_manifest() -> str:
    lines = [
        "version: 1",
        "models:",
        "  good:",
        "    saved_model: multi",
        "    signatures: [regress, classify]",
    ]
    for name in MISBEHAVING:
        lines += [f"  {name}:", f"    python: models.{name}:build", "    signatures: [a]"]
        if name == "hang":
            lines.append(f"    timeout: {HANG_TIMEOUT}")
    return "\n".join(lines) + "\n"


def located(manifest: str, model: str, key: str, column: int, message: str) -> str:
    """A located error as tfjs-build prints it, at `key` (python or signatures) of `model`."""
    lines = manifest.splitlines()
    number = lines.index(f"  {model}:") + 1
    while not lines[number].startswith(f"    {key}:"):
        number += 1
    key_path = f"models.{model}.python" if key == "python" else f"models.{model}.signatures[0]"
    return (
        f"tfjs-build.yaml:{number + 1}:{column}: {key_path}: {message}\n"
        f"{number + 1:>5} | {lines[number]}\n"
        f"      | {' ' * (column - 1)}^"
    )


@pytest.fixture(scope="module")
def misbehaved(
    tmp_path_factory: pytest.TempPathFactory, model_store: Callable[..., Path]
) -> tuple[Path, subprocess.CompletedProcess[str], dict[str, Any]]:
    """One build of every misbehaving source next to a good SavedModel, through the CLI."""
    root = tmp_path_factory.mktemp("misbehaving")
    shutil.copytree(model_store("multihead"), root / "multi")
    (root / "models").mkdir()
    for name, (module, _) in MISBEHAVING.items():
        (root / "models" / f"{name}.py").write_text(module)
    (root / "tfjs-build.yaml").write_text(misbehaving_manifest())
    done = run_cli("run", "--json", "-j", "2", cwd=root)
    return root, done, json.loads(done.stdout)


@pytest.mark.slow
def test_a_misbehaving_source_fails_the_build_and_the_good_model_builds(
    misbehaved: tuple[Path, subprocess.CompletedProcess[str], dict[str, Any]],
) -> None:
    root, done, report = misbehaved
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    jsonschema.validate(report, json.loads((REPO / "schemas/build-report.schema.json").read_text()))
    assert report["ok"] is False
    statuses = {f"{s['model']}:{s['signature']}": s["status"] for s in report["signatures"]}
    assert statuses == {
        "good:regress": "built",
        "good:classify": "built",
        **{f"{name}:a": "failed" for name in MISBEHAVING},
    }
    state, warnings = load_state(root / STATE)
    assert warnings == []
    assert sorted(state.records) == ["good:classify", "good:regress"]
    for key in ("good:classify", "good:regress"):
        record = state.records[key]
        output = root / record.output
        assert output == root / "dist/good" / key.split(":")[1]
        assert sorted(p.name for p in output.iterdir()) == sorted(f.path for f in record.files)
        assert (output / "model.json").is_file()
    # What the errors point to is there: the crash's and the hang's stacks.
    log = (root / STATE / "worker.log").read_text()
    assert "Fatal Python error: Segmentation fault" in log
    assert f"models.hang:build was stopped after {HANG_TIMEOUT} s (timeout)" in log
    assert f'{root.resolve() / "models/hang.py"}", line 2 in build' in log
    # A build with dead workers still cleans up its staging.
    assert not (root / STATE / "staging").exists()


@pytest.mark.slow
@pytest.mark.parametrize("name", list(MISBEHAVING))
def test_each_misbehaviour_fails_its_own_signature_with_a_located_error(
    misbehaved: tuple[Path, subprocess.CompletedProcess[str], dict[str, Any]], name: str
) -> None:
    root, _, report = misbehaved
    message = MISBEHAVING[name][1].format(log=root.resolve() / STATE / "worker.log")
    if name == "exits_tracing":  # died tracing its signature: the signature's line
        expected = located(misbehaving_manifest(), name, "signatures", 18, message)
    else:
        expected = located(misbehaving_manifest(), name, "python", 13, message)
    (result,) = [s for s in report["signatures"] if s["model"] == name]
    assert result["error"] == expected


GOOD_MODULE = """
import os
import time
from pathlib import Path

import tensorflow as tf

HERE = Path(__file__).parent


class Net(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
    def double(self, x):
        return {"y": x * 2.0}

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
    def half(self, x):
        return {"y": x * 0.5}


def build():
    with open(HERE / "good.loads", "a") as loads:
        loads.write(f"{os.getpid()}\\n")
    deadline = time.monotonic() + 120
    while not (HERE / "dies.now").exists():
        if time.monotonic() > deadline:
            raise RuntimeError("the other worker never got to dying")
        time.sleep(0.05)
    time.sleep(1)  # still loading when the other worker dies
    return Net()
"""

DIES_MODULE = """
import os
import time
from pathlib import Path

HERE = Path(__file__).parent


def build():
    deadline = time.monotonic() + 120
    while not (HERE / "good.loads").exists():
        if time.monotonic() > deadline:
            raise RuntimeError("the good source never started loading")
        time.sleep(0.05)
    (HERE / "dies.now").write_text("")
    os._exit(1)
"""


@pytest.mark.slow
def test_a_dying_worker_takes_down_only_its_own_task(
    project: Callable[..., Path], tmp_path: Path
) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "models/good.py").write_text(GOOD_MODULE)
    (tmp_path / "models/dies.py").write_text(DIES_MODULE)
    manifest = project(
        """
        version: 1
        models:
          dies:
            python: models.dies:build
            signatures: [a]
          good:
            python: models.good:build
            signatures: [double, half]
        """
    )
    result = tfjsbuild.build([manifest], jobs=2)
    statuses = {r.item.key: r.status for r in result.results}
    assert statuses == {"dies:a": "failed", "good:double": "built", "good:half": "built"}
    (failed,) = result.failed
    assert failed.error == (
        f"{manifest}:4:13: models.dies.python: the worker process exited with status 1 "
        f"while loading the source; see {tmp_path.resolve() / STATE}/worker.log\n"
        "    4 |     python: models.dies:build\n"
        "      |             ^"
    )
    state, _ = load_state(tmp_path / STATE)
    assert sorted(state.records) == ["good:double", "good:half"]
    # `good:double` was loading beside the death; a worker never loads the same source twice.
    loads = (tmp_path / "models/good.loads").read_text().split()
    assert len(loads) == len(set(loads)) >= 1


@pytest.mark.slow
def test_fail_fast_skips_what_is_queued_after_a_misbehaving_source(
    project: Callable[..., Path], model_store: Callable[..., Path], tmp_path: Path
) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "models/exits.py").write_text(MISBEHAVING["exits"][0])
    manifest = project(
        """
        version: 1
        models:
          exits:
            python: models.exits:build
            signatures: [a]
          good:
            saved_model: multi
            signatures: [regress, features, classify]
        """,
        {"multi": model_store("multihead")},
    )
    result = tfjsbuild.build([manifest], jobs=1, fail_fast=True)
    statuses = {r.item.key: r.status for r in result.results}
    # The one worker may have started `regress` before the parent heard of the failure.
    assert statuses.pop("good:regress") in ("built", "skipped")
    assert statuses == {"exits:a": "failed", "good:features": "skipped", "good:classify": "skipped"}
    skipped = [r.error for r in result.results if r.item.key == "good:classify"]
    assert skipped == ["not built: --fail-fast stopped the build"]


HANG_MODULE = """
import os
from pathlib import Path


def build():
    (Path(__file__).parent / "worker.pid").write_text(str(os.getpid()))
    while True: pass
"""


def process_state(pid: int) -> tuple[int, str] | None:
    """(parent pid, state letter) from /proc, or None once the process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    return int(fields[1]), fields[0]


def alive(pid: int) -> bool:
    found = process_state(pid)
    return found is not None and found[1] not in ("Z", "X")  # a zombie holds no memory


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
@pytest.mark.parametrize("how", ["SIGKILL", "SIGINT"])
def test_no_worker_outlives_the_build(
    project: Callable[..., Path], tmp_path: Path, how: str
) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "models/hang.py").write_text(HANG_MODULE)
    project("version: 1\nmodels:\n  hang:\n    python: models.hang:build\n    signatures: [a]\n")
    build = subprocess.Popen(
        [sys.executable, "-m", "tfjsbuild", "run", "-j", "1"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's Ctrl-C would reach
        preexec_fn=default_sigint,
    )
    try:
        marker = tmp_path / "models/worker.pid"
        deadline = time.monotonic() + 180
        while not marker.exists() or not marker.read_text():
            assert build.poll() is None, build.communicate()
            assert time.monotonic() < deadline, "the worker never started the source"
            time.sleep(0.05)
        worker = int(marker.read_text())
        found = process_state(worker)
        assert found is not None and found[0] == build.pid  # a worker of this build
        if how == "SIGKILL":
            os.kill(build.pid, signal.SIGKILL)  # the parent alone, as the OOM killer would
        else:
            os.killpg(build.pid, signal.SIGINT)
        _, stderr = build.communicate(timeout=60)
        deadline = time.monotonic() + 10
        while alive(worker) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(worker), f"worker {worker} outlived the build ({how})"
        if how == "SIGINT":
            assert build.returncode == 130, stderr
            assert "Traceback" not in stderr
        else:
            assert build.returncode == -signal.SIGKILL
    finally:
        if build.poll() is None:
            build.kill()
            build.communicate()


@pytest.mark.slow
def test_changing_timeout_rebuilds_nothing(
    misbehaved: tuple[Path, subprocess.CompletedProcess[str], dict[str, Any]], tmp_path: Path
) -> None:
    root = tmp_path / "copy"
    shutil.copytree(misbehaved[0], root, symlinks=True)
    manifest = root / "tfjs-build.yaml"
    text = manifest.read_text()
    assert "    saved_model: multi\n" in text
    manifest.write_text(
        text.replace("    saved_model: multi\n", "    saved_model: multi\n    timeout: 99\n")
    )
    plan = {item.key: item.action for item in tfjsbuild.plan([manifest]).items}
    assert plan["good:regress"] == plan["good:classify"] == "up-to-date"
    # ...whereas a setting the output depends on does rebuild (so the plan above could fail).
    manifest.write_text(
        text.replace(
            "    saved_model: multi\n", "    saved_model: multi\n    strip_debug_ops: false\n"
        )
    )
    plan = {item.key: item.action for item in tfjsbuild.plan([manifest]).items}
    assert plan["good:regress"] == plan["good:classify"] == "build"


@pytest.mark.parametrize("raised", [SystemExit(0), KeyboardInterrupt(), RuntimeError("lost")])
def test_whatever_an_executor_raises_fails_only_that_signature_located(
    tmp_path: Path, raised: BaseException
) -> None:
    """Never re-raised in the parent: a SystemExit(0) there once made `run` exit 0."""
    (tmp_path / "models").mkdir()
    (tmp_path / "models/net.py").write_text("")
    manifest = load_manifest(
        write_manifest(
            tmp_path,
            "version: 1\nmodels:\n  m:\n    python: models.net:build\n    signatures: [a]\n",
        )
    )
    (target,) = resolve_targets(manifest).targets
    item = PlanItem(manifest.path, "m", "a", target.output, "build", ("first build",), None, target)
    task = ConversionTask("0", target.source, "a", target.options, "", "", "")
    future: Future[ConversionOutcome] = Future()
    future.set_exception(raised)
    result = finish(item, task, future, Project(manifest, BuildState()))
    assert result.status == "failed"
    assert result.error == (
        f"{manifest.path}:4:13: models.m.python: the conversion task failed: "
        f"{type(raised).__name__}: {raised}\n"
        "    4 |     python: models.net:build\n"
        "      |             ^"
    )


def write_manifest(folder: Path, text: str) -> Path:
    path = folder / "tfjs-build.yaml"
    path.write_text(text)
    return path
