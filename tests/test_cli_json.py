"""`--json` prints exactly one JSON object for every outcome, and only that on stdout.

Each outcome (a report, a failed build, a usage, manifest or lock error, a bug, an
interruption) is parsed by Node's JSON.parse, which refuses NaN and Infinity and anything
after the one value, and checked against schemas/build-report.schema.json.
"""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from conftest import REPO, STATE, run_cli
from tfjsbuild import api
from tfjsbuild.cli import main as cli
from tfjsbuild.stores.lock import BuildLock
from tfjsbuild.stores.state import BuildState, save_state, state_path

SCHEMA = json.loads((REPO / "schemas" / "build-report.schema.json").read_text())
NODE = shutil.which("node")


def one_json_object(stdout: str, *, schema: bool = True) -> dict[str, Any]:
    """stdout as the one JSON object a script reads with JSON.parse, checked by the schema."""
    assert NODE is not None, "Node.js is needed to check JSON as browsers and scripts read it"
    parsed = subprocess.run(
        [NODE, "-e", "const fs = require('fs'); JSON.parse(fs.readFileSync(0, 'utf8'))"],
        input=stdout,
        capture_output=True,
        text=True,
        check=False,
    )
    assert parsed.returncode == 0, f"JSON.parse refused stdout:\n{stdout}\n{parsed.stderr}"
    value: dict[str, Any] = json.loads(stdout)
    if schema:
        jsonschema.Draft202012Validator(SCHEMA).validate(value)
    return value


def error_of(stdout: str, exit_code: int, kind: str) -> dict[str, Any]:
    value = one_json_object(stdout)
    assert {k: value[k] for k in ("version", "ok", "exit_code")} == {
        "version": 1,
        "ok": False,
        "exit_code": exit_code,
    }
    assert value["error"]["kind"] == kind
    error: dict[str, Any] = value["error"]
    return error


@pytest.mark.parametrize(
    ("args", "stderr_end", "message"),
    [
        (
            ["run", "--json", "-j", "abc"],
            "tfjs-build run: error: argument -j/--jobs: invalid int value: 'abc'\n",
            "argument -j/--jobs: invalid int value: 'abc'",
        ),
        (  # argparse reads --js as --json; the top-level parser reports the unknown flag
            ["plan", "--js", "--bogus"],
            "tfjs-build: error: unrecognized arguments: --bogus\n",
            "unrecognized arguments: --bogus",
        ),
        (
            ["run", "--json"],
            "tfjs-build: error: no manifest: tfjs-build.yaml does not exist in the current "
            "folder (pass -f FILE to use another)\n",
            "no manifest: tfjs-build.yaml does not exist in the current folder "
            "(pass -f FILE to use another)",
        ),
        (
            ["report", "--json", "-f", "other.yaml"],
            "tfjs-build: error: no manifest: other.yaml does not exist\n",
            "no manifest: other.yaml does not exist",
        ),
        (
            ["watch", "--json"],
            "tfjs-build: error: no manifest: tfjs-build.yaml does not exist\n",
            "no manifest: tfjs-build.yaml does not exist",
        ),
        (
            ["inspect", "--json", "nothing"],
            "tfjs-build: error: nothing is not a SavedModel folder (no saved_model.pb), a "
            ".keras or .h5 file, or a Python source module:callable\n",
            "nothing is not a SavedModel folder (no saved_model.pb), a .keras or .h5 file, "
            "or a Python source module:callable",
        ),
    ],
)
def test_usage_errors(args: list[str], stderr_end: str, message: str, tmp_path: Path) -> None:
    done = run_cli(*args, cwd=tmp_path, timeout=120)
    assert done.returncode == 2
    assert done.stderr.endswith(stderr_end)
    assert error_of(done.stdout, 2, "usage") == {
        "kind": "usage",
        "message": message,
        "problems": [],
    }


def test_manifest_errors_list_every_problem(tmp_path: Path) -> None:
    (tmp_path / "tfjs-build.yaml").write_text(
        "version: 1\nmodels:\n  a:\n    saved_model: m\n    verify: {atol: .inf}\n"
        "    quantisation: {}\n"
    )
    for command in ("run", "plan", "report"):
        done = run_cli(command, "--json", cwd=tmp_path)
        assert done.returncode == 2
        error = error_of(done.stdout, 2, "manifest")
        assert error["message"] + "\n" == done.stderr  # the same text, for scripts to show
        assert error["problems"] == [
            {
                "file": "tfjs-build.yaml",
                "line": 5,
                "column": 20,
                "key_path": "models.a.verify.atol",
                "message": ".inf is not a finite number (reports and the state are JSON, "
                "which has no NaN or infinity): write a number; to accept any difference, "
                "set `verify: {enabled: false}`",
            },
            {
                "file": "tfjs-build.yaml",
                "line": 6,
                "column": 5,
                "key_path": "models.a.quantisation",
                "message": "unknown key 'quantisation'; did you mean 'quantization'?",
            },
        ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tfjs-build.yaml"]


def test_lock_held_by_another_build(tmp_path: Path) -> None:
    (tmp_path / "tfjs-build.yaml").write_text("version: 1\nmodels:\n  a:\n    saved_model: m\n")
    with BuildLock(tmp_path / STATE):
        done = run_cli("run", "--json", cwd=tmp_path)
    assert done.returncode == 1
    error = error_of(done.stdout, 1, "lock")
    assert error["message"].startswith(
        f"another build holds the lock {tmp_path / STATE}/lock: pid "
    )
    assert done.stderr == f"tfjs-build: error: {error['message']}\n"


def test_failed_build_and_blocked_plan_are_reports(tmp_path: Path) -> None:
    (tmp_path / "tfjs-build.yaml").write_text("version: 1\nmodels:\n  a:\n    saved_model: m\n")
    for command in ("plan", "run"):
        (tmp_path / STATE).mkdir(parents=True, exist_ok=True)
        state_path(tmp_path / STATE).write_text("{")
        done = run_cli(command, "--json", cwd=tmp_path)
        assert done.returncode == 1
        # Warnings are not lost with --json: they go to stderr with the progress.
        warning = f"warning: {tmp_path / STATE}/state.json is unreadable (not JSON: "
        assert warning in done.stderr
        report = one_json_object(done.stdout)
        assert (report["ok"], report["exit_code"], "error" in report) == (False, 1, False)
        (signature,) = report["signatures"]
        assert signature["reasons"][0].startswith(
            "tfjs-build.yaml:4:18: models.a.saved_model: SavedModel folder "
        )
    assert signature["status"] == "failed"


def test_reports_of_other_commands_carry_the_same_outcome(tmp_path: Path) -> None:
    (tmp_path / "tfjs-build.yaml").write_text("version: 1\nmodels:\n  a:\n    saved_model: m\n")
    done = run_cli("report", "--json", cwd=tmp_path)
    assert done.returncode == 0
    assert one_json_object(done.stdout) == {
        "version": 1,
        "ok": True,
        "exit_code": 0,
        "signatures": [],
    }


@pytest.mark.parametrize("command", ["run", "plan", "report"])
def test_a_bug_is_reported_as_json_too(
    command: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """A bug simulated where the CLI calls the API (argument plumbing, not behaviour)."""

    def broken(*args: object, **kwargs: object) -> None:
        print("a stray print while the bug happens")
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(api, {"run": "build"}.get(command, command), broken)
    monkeypatch.chdir(tmp_path)
    assert cli.main([command, "--json"]) == 3
    out, err = capfd.readouterr()
    error = error_of(out, 3, "internal")
    assert error == {
        "kind": "internal",
        "message": "RuntimeError: simulated bug\nThis is a bug in tfjs-build: rerun as "
        "`tfjs-build --debug COMMAND ...` for the traceback and report it.",
        "problems": [],
    }
    assert (
        err
        == f"a stray print while the bug happens\ntfjs-build: internal error: {error['message']}\n"
    )


def test_an_interruption_is_reported_as_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(api, "build", interrupted)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["run", "--json"]) == 130
    out, err = capfd.readouterr()
    assert error_of(out, 130, "interrupted")["message"] == (
        "interrupted; finished outputs and state are kept"
    )
    assert err == "tfjs-build: interrupted; finished outputs and state are kept\n"


def test_every_json_write_refuses_nan() -> None:
    """JSON.parse rejects NaN and Infinity: every json.dumps in the package says allow_nan,
    and only these (which check or hash, never write) allow them."""
    allowed = {"canonical_json", "_metadata_problems"}
    found = set()
    for path in sorted((REPO / "tfjsbuild").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for function in ast.walk(tree):
            if not isinstance(function, ast.FunctionDef):
                continue
            for call in ast.walk(function):
                if not (
                    isinstance(call, ast.Call)
                    and isinstance(call.func, ast.Attribute)
                    and call.func.attr == "dumps"
                    and isinstance(call.func.value, ast.Name)
                    and call.func.value.id == "json"
                ):
                    continue
                keyword = next((k for k in call.keywords if k.arg == "allow_nan"), None)
                where = f"{path.relative_to(REPO)}: {function.name}"
                assert keyword is not None, f"{where}: json.dumps without allow_nan=False"
                if not (isinstance(keyword.value, ast.Constant) and keyword.value.value is False):
                    found.add(function.name)
    assert found == allowed


def test_state_with_nan_is_a_loud_bug_not_a_broken_file(tmp_path: Path) -> None:
    state = BuildState(stat_cache={"digest": [float("nan")]})
    with pytest.raises(ValueError, match="Out of range float values are not JSON compliant"):
        save_state(tmp_path, state)
    assert not state_path(tmp_path).exists()


PRINTING_SOURCE = """\
import os
import sys

import tensorflow as tf

print("print at import")
os.write(1, b"descriptor 1 at import\\n")


def build():
    print("print in build")
    sys.__stdout__.write("sys.__stdout__ in build\\n")
    sys.__stdout__.flush()

    @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x")])
    def double(x):
        print("print while tracing")
        return {"y": x * 2.0}

    return {"double": double}
"""
PRINTED = [
    "print at import",
    "descriptor 1 at import",
    "print in build",
    "sys.__stdout__ in build",
    "print while tracing",
]


@pytest.mark.slow
def test_user_code_printing_in_process_goes_to_stderr(tmp_path: Path) -> None:
    """`inspect module:fn` runs the user's code in this process: its output must not mix
    into the JSON, whether it prints, writes to sys.__stdout__ or to descriptor 1."""
    (tmp_path / "net.py").write_text(PRINTING_SOURCE)
    done = run_cli("inspect", "--json", "net:build", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    described = one_json_object(done.stdout, schema=False)
    assert (described["ok"], described["python"]) == (True, "net:build")
    assert described["signatures"] == [
        {
            "name": "double",
            "inputs": [{"name": "x", "dtype": "float32", "shape": [None, 2]}],
            "outputs": [{"name": "y", "dtype": "float32", "shape": [None, 2]}],
        }
    ]
    assert [line for line in done.stderr.splitlines() if line in PRINTED] == PRINTED
    # Without --json the same output is the user's to see, on stdout as before.
    text = run_cli("inspect", "net:build", cwd=tmp_path)
    assert [line for line in text.stdout.splitlines() if line in PRINTED] == PRINTED


@pytest.mark.slow
def test_user_code_printing_in_a_worker_goes_to_the_worker_log(tmp_path: Path) -> None:
    (tmp_path / "net.py").write_text(PRINTING_SOURCE)
    (tmp_path / "tfjs-build.yaml").write_text(
        "version: 1\nmodels:\n  net:\n    python: net:build\n    signatures: [double]\n"
    )
    done = run_cli("run", "--json", "-j", "1", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    report = one_json_object(done.stdout)
    assert [(s["signature"], s["status"]) for s in report["signatures"]] == [("double", "built")]
    log = (tmp_path / STATE / "worker.log").read_text()
    assert [line for line in log.splitlines() if line in PRINTED] == PRINTED
    assert not any(line in PRINTED for line in done.stderr.splitlines())


@pytest.mark.slow
def test_plan_of_a_real_model_is_ok(
    tmp_path: Path, project: Callable[..., Path], model_store: Callable[..., Path]
) -> None:
    project("version: 1\nmodels:\n  m:\n    saved_model: m\n", {"m": model_store("multihead")})
    done = run_cli("plan", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    planned = one_json_object(done.stdout)
    assert (planned["ok"], planned["exit_code"]) == (True, 0)
    assert [s["signature"] for s in planned["signatures"]] == ["classify", "features", "regress"]
