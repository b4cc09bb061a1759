"""The real `tfjs-build` command: exit codes, clean errors, JSON output."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import jsonschema
import pytest

from conftest import REPO, run_cli


def test_validate_error_exit_code_and_no_traceback(tmp_path: Path) -> None:
    (tmp_path / "tfjs-build.yaml").write_text(
        "version: 1\nmodels:\n  a:\n    saved_model: m\n    quantisation: {}\n"
    )
    done = run_cli("validate", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr == (
        "tfjs-build.yaml:5:5: models.a.quantisation: unknown key 'quantisation'; did you mean 'quantization'?\n"
        "    5 |     quantisation: {}\n"
        "      |     ^\n"
        "1 problem found; nothing was built.\n"
    )
    # A run with a bad manifest writes nothing at all.
    assert run_cli("run", cwd=tmp_path).returncode == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tfjs-build.yaml"]


def test_missing_manifest_is_a_usage_error(tmp_path: Path) -> None:
    done = run_cli("plan", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr == (
        "tfjs-build: error: no manifest: tfjs-build.yaml does not exist in the current folder "
        "(pass -f FILE to use another)\n"
    )


def test_unknown_selection_lists_what_exists(
    tmp_path: Path, project: Callable[..., Path], model_store: Callable[..., Path]
) -> None:
    project("version: 1\nmodels:\n  m:\n    saved_model: m\n", {"m": model_store("multihead")})
    done = run_cli("plan", "nope", "m:regres", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr == (
        "tfjs-build: error: unknown model or signature: nope, m:regres "
        "(available: m, m:classify, m:features, m:regress)\n"
    )


def test_watch_without_a_manifest_is_a_usage_error(tmp_path: Path) -> None:
    done = run_cli("watch", cwd=tmp_path)
    assert (done.returncode, done.stderr) == (
        2,
        "tfjs-build: error: no manifest: tfjs-build.yaml does not exist\n",
    )


def test_inspect_lists_tags_signatures_and_tensors(
    model_store: Callable[..., Path], tmp_path: Path
) -> None:
    path = model_store("multihead")
    done = run_cli("inspect", str(path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    masked = re.sub(r"\b[0-9a-f]{8,}\b", "<hex>", done.stdout)
    assert masked == (
        f"SavedModel {path}\n"
        "  tags: serve\n"
        "    signature classify\n"
        "      input  x: float32 [?, 8]\n"
        "      output logits: float32 [?, 4]\n"
        "      output probs: float32 [?, 4]\n"
        "      fingerprint <hex>  graph <hex>\n"
        "        variable  backbone  1:(8, 16):512:<hex>\n"
        "        variable  head_a  1:(16, 4):256:<hex>\n"
        "    signature features\n"
        "      input  x: float32 [?, 8]\n"
        "      output features: float32 [?, 16]\n"
        "      fingerprint <hex>  graph <hex>\n"
        "        variable  backbone  1:(8, 16):512:<hex>\n"
        "    signature regress\n"
        "      input  x: float32 [?, 8]\n"
        "      output value: float32 [?, 1]\n"
        "      fingerprint <hex>  graph <hex>\n"
        "        variable  backbone  1:(8, 16):512:<hex>\n"
        "        variable  head_b  1:(16, 1):64:<hex>\n"
    )
    as_json = json.loads(run_cli("inspect", "--json", str(path), cwd=tmp_path).stdout)
    assert [s["name"] for s in as_json["meta_graphs"][0]["signatures"]] == [
        "classify",
        "features",
        "regress",
    ]
    assert run_cli("inspect", str(tmp_path), cwd=tmp_path).returncode == 2


@pytest.mark.slow
def test_inspect_keras_files_and_python_sources(
    model_store: Callable[..., Path], tmp_path: Path
) -> None:
    keras_file = model_store("keras_file")
    done = run_cli("inspect", str(keras_file), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    # TensorFlow is imported here, in this process: its C++ log lines (CUDA registrations, a
    # failed cuInit on a machine without a GPU) stay off the terminal.
    assert done.stderr == ""
    assert re.sub(r"\b[0-9a-f]{16}\b", "<hex>", done.stdout) == (
        f"Keras model {keras_file} (keras_v3)\n"
        "  fingerprint <hex>\n"
        "    signature serving_default\n"
        "      input  x: float32 [?, 8]\n"
        "      output output_0: float32 [?, 16]\n"
        "      output output_1: float32 [?, 4]\n"
        "      output output_2: float32 [?, 1]\n"
    )
    (tmp_path / "net.py").write_text(
        "import tensorflow as tf\n"
        "spec = tf.TensorSpec([None, 3], tf.int32, name='ids')\n"
        "def build():\n"
        "    return {'count': tf.function(lambda ids: {'n': tf.reduce_sum(ids, 1)}, "
        "input_signature=[spec]),\n"
        "            'untyped': tf.function(lambda ids: ids)}\n"
    )
    as_json = json.loads(run_cli("inspect", "--json", "net:build", cwd=tmp_path).stdout)
    assert as_json["inputs"] == ["net.py"]
    assert as_json["signatures"][0] == {
        "name": "count",
        "inputs": [{"name": "ids", "dtype": "int32", "shape": [None, 3]}],
        "outputs": [{"name": "n", "dtype": "int32", "shape": [None]}],
    }
    assert as_json["signatures"][1]["name"] == "untyped"
    assert "needs an input_signature" in as_json["signatures"][1]["error"]
    missing = run_cli("inspect", "nothere:build", cwd=tmp_path)
    assert missing.returncode == 2
    assert missing.stderr.startswith("tfjs-build: error: module 'nothere' is not in ")


@pytest.mark.slow
def test_run_json_follows_its_schema_and_fails_with_exit_1(
    tmp_path: Path, project: Callable[..., Path], model_store: Callable[..., Path]
) -> None:
    project(
        "version: 1\nmodels:\n  m:\n    saved_model: m\n", {"m": model_store("with_unsupported")}
    )
    schema = json.loads((REPO / "schemas/build-report.schema.json").read_text())
    planned = json.loads(run_cli("plan", "--json", cwd=tmp_path).stdout)
    jsonschema.validate(planned, schema)
    assert [(s["signature"], s["action"], s["reasons"]) for s in planned["signatures"]] == [
        ("bad", "build", ["first build"]),
        ("good", "build", ["first build"]),
    ]
    done = run_cli("run", "--json", "-j", "1", cwd=tmp_path)
    assert done.returncode == 1
    report = json.loads(done.stdout)
    jsonschema.validate(report, schema)
    assert report["ok"] is False
    by_name = {s["signature"]: s for s in report["signatures"]}
    assert by_name["bad"]["status"] == "failed"
    assert by_name["bad"]["error"] == "Unsupported Ops in the model before optimization: Lgamma"
    assert by_name["good"]["status"] == "built"
    assert by_name["good"]["bytes"] == sum(
        p.stat().st_size for p in (tmp_path / "dist/m/good").iterdir()
    )
    assert "m:bad failed" in done.stderr
    # Human output of a second run: the failure again, the success up to date.
    again = run_cli("run", "-j", "1", cwd=tmp_path)
    assert again.returncode == 1
    *_, log, counts = again.stdout.splitlines()
    assert counts.startswith("1 up-to-date, 1 failed in ")
    assert log == "the workers' messages are in .tfjs-build/manifests/tfjs-build.yaml/worker.log"


@pytest.mark.slow
def test_clean_removes_outputs_and_state(
    tmp_path: Path, project: Callable[..., Path], model_store: Callable[..., Path]
) -> None:
    project(
        "version: 1\nmodels:\n  m:\n    saved_model: m\n    signatures: [features]\n",
        {"m": model_store("multihead")},
    )
    assert run_cli("run", cwd=tmp_path).returncode == 0
    (tmp_path / "dist/keep.txt").write_text("mine")
    done = run_cli("clean", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "removed dist/m/features\nRemoved 1 output and the build state.\n"
    assert sorted(
        p.relative_to(tmp_path).as_posix()
        for p in tmp_path.rglob("*")
        if "m/" not in p.as_posix()[len(str(tmp_path)) :]
    ) == ["dist", "dist/keep.txt", "m", "tfjs-build.yaml"]


def test_dry_run_shows_the_plan_and_writes_nothing(
    tmp_path: Path, project: Callable[..., Path], model_store: Callable[..., Path]
) -> None:
    project(
        "version: 1\nmodels:\n  m:\n    saved_model: m\n    signatures: [regress]\n",
        {"m": model_store("multihead")},
    )
    done = run_cli("run", "--dry-run", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == (
        "  build       m:regress → dist/m/regress\n"
        "      because: first build\n"
        "1 to build, 0 up to date, 0 to remove\n"
    )
    report = json.loads(run_cli("run", "--dry-run", "--json", cwd=tmp_path).stdout)
    jsonschema.validate(report, json.loads((REPO / "schemas/build-report.schema.json").read_text()))
    assert (report["dry_run"], [s["status"] for s in report["signatures"]]) == (True, ["skipped"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m", "tfjs-build.yaml"]


def test_run_keeps_going_after_a_failure_unless_told_to_stop() -> None:
    from tfjsbuild.cli.main import build_parser

    parser = build_parser()
    assert parser.parse_args(["run"]).fail_fast is False
    assert parser.parse_args(["run", "--keep-going"]).fail_fast is False
    assert parser.parse_args(["run", "--fail-fast"]).fail_fast is True
    assert parser.parse_args(["run"]).verify is True
    assert parser.parse_args(["run", "--no-verify"]).verify is False
    assert parser.parse_args(["watch", "--no-verify"]).verify is False


@pytest.mark.parametrize(
    ("in_the_way", "path", "why"),
    [
        ("lock", ".tfjs-build/manifests/tfjs-build.yaml/lock", "Is a directory (EISDIR)"),
        ("state folder", ".tfjs-build/manifests/tfjs-build.yaml", "File exists (EEXIST)"),
        ("tool folder", ".tfjs-build", "Not a directory (ENOTDIR)"),
    ],
)
def test_something_in_the_way_of_the_tools_files_is_a_clear_error(
    tmp_path: Path, in_the_way: str, path: str, why: str
) -> None:
    """A folder where a file goes, or a file where a folder goes: exit 1 naming it, never 3."""
    (tmp_path / "tfjs-build.yaml").write_text("version: 1\nmodels:\n  m:\n    saved_model: m\n")
    if in_the_way == "lock":
        (tmp_path / path).mkdir(parents=True)
    else:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("")
    done = run_cli("run", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.endswith(
        f"{why}; what is there is not what tfjs-build expects: move it away, then run again\n"
    ), done.stderr
    assert str(tmp_path) in done.stderr


@pytest.mark.parametrize("period", ["-1", "nan", "inf"])
def test_watch_refuses_a_quiet_period_it_could_never_honour(tmp_path: Path, period: str) -> None:
    (tmp_path / "tfjs-build.yaml").write_text("version: 1\nmodels:\n  m:\n    saved_model: m\n")
    done = run_cli("watch", "--quiet-period", period, cwd=tmp_path, timeout=60)
    assert (done.returncode, done.stderr) == (
        2,
        f"tfjs-build: error: --quiet-period must be between 0 and 3600 seconds, "
        f"got {float(period)}\n",
    )


def test_every_command_shows_examples_that_parse() -> None:
    """Each command's --help ends with the invocations people use; each of them is a command
    line the parser accepts (shell redirections aside)."""
    import argparse
    import shlex

    from tfjsbuild.cli.main import build_parser

    parser = build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for name, command in commands.choices.items():
        epilog = command.epilog or ""
        assert epilog.startswith("examples:\n"), name
        for line in epilog.splitlines()[1:]:
            words = shlex.split(line.split("  ")[1].split(">")[0])
            assert words[0] == "tfjs-build", line
            args = parser.parse_args(words[1:])
            assert args.command == name, line


def test_the_progress_line_says_what_the_workers_are_on() -> None:
    from tfjsbuild.render.console import working_text

    assert working_text({}) == "converting"
    assert working_text({"m:b": "verifying in TensorFlow.js", "m:a": "converting"}) == (
        "converting m:a (+1 more)"
    )
    assert working_text({"[red]x:y": "loading the source"}) == "loading the source \\[red]x:y"
