"""Verification: converted signatures run in TensorFlow.js and compared with TensorFlow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import tfjsbuild
from conftest import STATE, run_cli
from tfjsbuild.building.execute import _verify_task
from tfjsbuild.building.finish import _record_verification
from tfjsbuild.building.project import Project
from tfjsbuild.files.artifacts import TensorSpec
from tfjsbuild.manifest.load import load_manifest
from tfjsbuild.stores.state import load_state
from tfjsbuild.verify.compare import (
    UNKNOWN_DIM,
    BackendVerification,
    OutputComparison,
    Verification,
    VerificationError,
    compare,
    generate_inputs,
    load_inputs,
)
from tfjsbuild.verify.record import VerificationRecord
from tfjsbuild.worker.task import LOADING, VERIFYING, ConversionOutcome, ConversionTask, run_task

SPECS = [
    TensorSpec("image", "float32", (None, 4, 4, 3)),
    TensorSpec("ids", "int64", (None, None)),
    TensorSpec("words", "string", (2,)),
    TensorSpec("mask", "bool", None),
]


def test_generated_inputs_are_deterministic_and_follow_the_specs() -> None:
    first = generate_inputs(SPECS, 2, "model:signature")
    assert len(first) == 2
    sample = first[0]
    assert sample["image"].shape == (1, 4, 4, 3) and sample["image"].dtype == np.float32
    assert sample["image"].min() >= -1 and sample["image"].max() <= 1
    assert sample["ids"].shape == (1, UNKNOWN_DIM) and sample["ids"].dtype == np.int32
    assert sample["words"].shape == (2,) and all(isinstance(w, str) for w in sample["words"])
    assert sample["mask"].shape == (1, UNKNOWN_DIM) and sample["mask"].dtype == bool
    again = generate_inputs(SPECS, 2, "model:signature")
    for a, b in zip(first, again, strict=True):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    other = generate_inputs(SPECS, 1, "model:other")
    assert not np.array_equal(other[0]["image"], first[0]["image"])
    assert not np.array_equal(first[0]["image"], first[1]["image"])
    with pytest.raises(VerificationError, match="dtype complex128; give real inputs"):
        generate_inputs([TensorSpec("z", "complex128", (1,))], 1, "s")


def test_inputs_from_a_npz_file(tmp_path: Path) -> None:
    path = tmp_path / "inputs.npz"
    np.savez(path, x=np.ones([2, 8], "float32"), extra=np.zeros(1))
    (sample,) = load_inputs(path, [TensorSpec("x", "float32", (None, 8))])
    np.testing.assert_array_equal(sample["x"], np.ones([2, 8]))
    with pytest.raises(VerificationError, match=r"has no array for input y \(it has: extra, x\)"):
        load_inputs(path, [TensorSpec("y", "float32", (1,))])


def test_compare_uses_atol_plus_rtol_and_names_the_worst_sample() -> None:
    want = [{"y": np.array([1.0, 100.0]), "ids": np.array([1, 2])} for _ in range(2)]
    got = [
        {"y": np.array([1.00005, 100.05]), "ids": np.array([1, 2])},
        {"y": np.array([1.0, 100.2]), "ids": np.array([1, 3])},
    ]
    ids, y = compare(want, got, atol=1e-4, rtol=1e-3)
    assert ids == OutputComparison("ids", 1.0, 1.0, False, 1)
    assert y.key == "y" and y.sample == 1 and not y.passed
    assert y.max_abs_error == pytest.approx(0.2)
    assert y.max_rel_error == pytest.approx(0.002)
    (y_loose, _) = compare(want[:1], got[:1], atol=1e-4, rtol=1e-3)[::-1]
    assert y_loose.passed


def test_compare_handles_non_finite_values() -> None:
    want = [{"y": np.array([np.nan, np.inf, 1.0], "float32")}]
    same = [{"y": np.array([np.nan, np.inf, 1.0], "float32")}]
    assert compare(want, same, 0.0, 0.0)[0].passed
    overflow = [{"y": np.array([np.nan, np.inf, np.inf], "float32")}]
    (result,) = compare(want, overflow, 1.0, 1.0)
    assert not result.passed and result.max_abs_error == np.inf
    run = BackendVerification("wasm", 1.0, 1.0, (result,))
    recorded = Verification(1, "generated", (run,)).as_record().to_json_dict()
    assert recorded["backends"]["wasm"]["outputs"]["y"]["max_abs_error"] == "Infinity"
    assert recorded["max_abs_error"] == "Infinity" and recorded["passed"] is False
    # A backend that could not run the model measured nothing: NaN, and its reason.
    refused = BackendVerification("webgl", 1.0, 1.0, error="the webgl backend could not run it")
    both = Verification(1, "generated", (run, refused)).as_record().to_json_dict()
    assert both["max_abs_error"] == "NaN"
    assert both["backends"]["webgl"]["note"] == "the webgl backend could not run it"
    with pytest.raises(VerificationError, match=r"output 'y' has shape \[2\] in TensorFlow.js"):
        compare(want, [{"y": np.zeros(2)}], 1.0, 1.0)


WIDE = """
version: 1
models:
  wide:
    saved_model: wide
"""


def record(root: Path, key: str) -> VerificationRecord | None:
    state, _ = load_state(root / ".tfjs-build/manifests/tfjs-build.yaml")
    return state.records[key].verification


@pytest.mark.slow
def test_a_float32_build_is_verified_and_recorded(
    project: Callable[..., Path], model_store: Callable[..., Path]
) -> None:
    manifest = project(
        WIDE + "    verify: {atol: 1.0e-6, rtol: 1.0e-5, samples: 4}\n",
        {"wide": model_store("wide")},
    )
    result = tfjsbuild.build([manifest])
    assert result.ok, [r.error for r in result.failed]
    (built,) = result.results
    verification = built.verification
    assert verification is not None
    assert verification.passed is True
    assert verification.samples == 4 and verification.inputs == "generated"
    (ran,) = verification.to_json_dict()["backends"].values()
    assert ran["outputs"]["y"]["passed"] is True
    assert verification.max_abs_error < 1e-5
    assert record(manifest.parent, "wide:serving_default") == verification
    index = json.loads((manifest.parent / "dist/tfjs-build.json").read_text())
    assert index["models"]["wide"]["serving_default"]["verification"]["passed"] is True
    # An unchanged, verified signature is not verified again.
    again = tfjsbuild.build([manifest])
    assert [r.status for r in again.results] == ["up-to-date"]


@pytest.mark.slow
def test_uint8_that_breaks_the_model_fails_and_keeps_the_previous_output(
    project: Callable[..., Path], model_store: Callable[..., Path]
) -> None:
    manifest = project(WIDE, {"wide": model_store("wide")})
    root = manifest.parent
    assert tfjsbuild.build([manifest]).ok
    before = (root / "dist/wide/serving_default/group1-shard1of1.bin").read_bytes()
    state_before = (root / ".tfjs-build/manifests/tfjs-build.yaml/state.json").read_text()

    manifest.write_text(WIDE + "    quantization: {uint8: ['*']}\n")
    result = tfjsbuild.build([manifest])
    (failed,) = result.failed
    assert failed.error is not None
    assert failed.error.startswith(
        "TensorFlow.js (wasm backend) does not match TensorFlow: output 'y' differs by up to "
    )
    assert "(allowed: atol 0.0001 + rtol 0.001 x |expected|). The previous output is kept." in (
        failed.error
    )
    assert failed.verification is not None and failed.verification.passed is False
    # The previous output and state stay as they were; the next run tries again.
    assert (root / "dist/wide/serving_default/group1-shard1of1.bin").read_bytes() == before
    assert (root / ".tfjs-build/manifests/tfjs-build.yaml/state.json").read_text() == state_before
    assert [i.action for i in tfjsbuild.plan([manifest]).items] == ["build"]

    # Through the CLI: exit code 1, and the JSON report carries the errors per output.
    done = run_cli("run", "--json", cwd=root)
    assert done.returncode == 1
    (entry,) = json.loads(done.stdout)["signatures"]
    assert entry["status"] == "failed"
    (ran,) = entry["verification"]["backends"].values()
    assert ran["outputs"]["y"]["passed"] is False
    assert ran["outputs"]["y"]["max_abs_error"] > 0.01


@pytest.mark.slow
def test_float16_overflow_is_caught(
    project: Callable[..., Path], model_store: Callable[..., Path]
) -> None:
    manifest = project(
        WIDE + "    quantization: {float16: ['*']}\n", {"wide": model_store("wide", big=1.0e5)}
    )
    result = tfjsbuild.build([manifest])
    (failed,) = result.failed
    assert failed.verification is not None
    (ran,) = failed.verification.to_json_dict()["backends"].values()
    assert ran["outputs"]["y"]["max_abs_error"] == "Infinity"
    assert "output 'y' differs by up to inf" in (failed.error or "")
    assert not (manifest.parent / "dist/wide").exists()


@pytest.mark.slow
def test_real_inputs_and_no_verify(
    project: Callable[..., Path], model_store: Callable[..., Path]
) -> None:
    manifest = project(WIDE, {"wide": model_store("wide")})
    root = manifest.parent
    assert tfjsbuild.build([manifest], verify=False).ok
    assert record(root, "wide:serving_default") is None
    assert [(i.action, i.reasons) for i in tfjsbuild.plan([manifest]).items] == [
        ("verify", ("not verified yet (built with --no-verify or verify.enabled false)",))
    ]
    np.savez(root / "samples.npz", x=np.full([5, 8], 0.5, "float32"))
    manifest.write_text(WIDE + "    verify: {inputs: samples.npz}\n")
    result = tfjsbuild.build([manifest])
    assert result.ok, [r.error for r in result.failed]
    assert [r.status for r in result.results] == ["verified"]
    verification = record(root, "wide:serving_default")
    assert verification is not None
    assert verification.inputs == str(root / "samples.npz")
    assert verification.samples == 1
    # Other sample inputs: verified again.
    np.savez(root / "samples.npz", x=np.full([5, 8], -0.5, "float32"))
    assert [(i.action, i.reasons) for i in tfjsbuild.plan([manifest]).items] == [
        ("verify", ("verification changed: inputs_sha256",))
    ]
    (root / "samples.npz").unlink()
    (blocked,) = tfjsbuild.plan([manifest]).items
    assert blocked.blocked is not None and "verify.inputs" in blocked.blocked
    assert "does not exist: save sample inputs there with numpy.savez" in blocked.blocked


@pytest.mark.slow
def test_over_budget_fails_naming_the_biggest_weights(
    project: Callable[..., Path], model_store: Callable[..., Path]
) -> None:
    manifest = project(
        "version: 1\nmodels:\n  multi:\n    saved_model: multi\n    signatures: [classify]\n"
        "    max_bytes: 600\n",
        {"multi": model_store("multihead")},
    )
    done = run_cli("run", cwd=manifest.parent)
    assert done.returncode == 1
    # Weights are named as model.json names them: what quantization globs match.
    assert done.stdout.splitlines()[1] == (
        "✗ multi:classify failed: output is 3.2 KB (3303 bytes), over its max_bytes budget of "
        "600 B (600 bytes); the biggest weights: StatefulPartitionedCall/MatMul/ReadVariableOp "
        "(float32 [8, 16], 512 B), StatefulPartitionedCall/MatMul_1/ReadVariableOp (float32 "
        "[16, 4], 256 B). Quantize them (e.g. quantization: {float16: [...]}) or raise max_bytes"
    )
    assert not (manifest.parent / "dist/multi").exists()
    # Within budget it builds; lowering the budget later fails the build without rebuilding.
    manifest.write_text(manifest.read_text().replace("max_bytes: 600", "max_bytes: 100000"))
    assert run_cli("run", cwd=manifest.parent).returncode == 0
    manifest.write_text(manifest.read_text().replace("max_bytes: 100000", "max_bytes: 700"))
    result = tfjsbuild.build([manifest])
    (failed,) = result.failed
    assert "over its max_bytes budget of 700 B" in (failed.error or "")
    assert (manifest.parent / "dist/multi/classify/model.json").is_file()


@pytest.mark.slow
def test_missing_node_is_a_clear_error(
    project: Callable[..., Path], model_store: Callable[..., Path]
) -> None:
    manifest = project(WIDE, {"wide": model_store("wide")})
    env = {**os.environ, "PATH": str(Path(sys.executable).parent)}
    done = subprocess.run(
        [sys.executable, "-m", "tfjsbuild", "run"],
        cwd=manifest.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "tfjs-build: error: verification runs each converted model in Node.js, and `node` is "
        "not on PATH: install Node.js 18 or newer, or build with --no-verify (or "
        "`verify: {enabled: false}` in the manifest)"
    )
    assert not (manifest.parent / "dist").exists()
    offline = subprocess.run(
        [sys.executable, "-m", "tfjsbuild", "run", "--no-verify", "-q"],
        cwd=manifest.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert offline.returncode == 0, offline.stderr


PAGE = """<!doctype html>
<meta charset="utf-8">
<script src="/tf.min.js"></script>
<script>
(async () => {
  let body;
  try {
    await tf.setBackend("cpu");
    const model = await tf.loadGraphModel("/model/model.json");
    const request = %s;
    const x = tf.tensor(request.data, request.shape, "float32");
    const outputs = await model.executeAsync({x}, request.outputs);
    const values = {};
    for (const [i, key] of request.outputs.entries()) values[key] = Array.from(await outputs[i].data());
    body = JSON.stringify({backend: tf.getBackend(), outputs: values});
  } catch (error) {
    body = JSON.stringify({error: String(error && error.stack || error)});
  }
  await fetch("/result", {method: "POST", body});
})();
</script>
"""


@pytest.mark.slow
def test_a_built_model_runs_in_headless_chromium_like_in_node(
    project: Callable[..., Path], model_store: Callable[..., Path], tmp_path: Path
) -> None:
    """Where users run these models: tf.loadGraphModel over HTTP in a real browser."""
    import shutil

    from browser import run_page
    from conftest import TFJS_RUNTIME, run_tfjs
    from savedmodels import run_signature

    manifest = project(
        "version: 1\nmodels:\n  multi:\n    saved_model: multi\n    signatures: [classify]\n",
        {"multi": model_store("multihead")},
    )
    assert tfjsbuild.build([manifest]).ok
    site = tmp_path / "site"
    shutil.copytree(manifest.parent / "dist/multi/classify", site / "model")
    shutil.copyfile(
        TFJS_RUNTIME / "node_modules/@tensorflow/tfjs/dist/tf.min.js", site / "tf.min.js"
    )
    x = np.random.RandomState(3).uniform(-1, 1, [4, 8]).astype("float32")
    request = {"data": x.ravel().tolist(), "shape": [4, 8], "outputs": ["logits", "probs"]}
    (site / "index.html").write_text(PAGE % json.dumps(request))

    received = run_page(site, "index.html", tmp_path / "profile")
    assert "error" not in received, received.get("error")
    assert received["backend"] == "cpu"
    in_browser = {k: np.array(v, "float32").reshape(4, -1) for k, v in received["outputs"].items()}
    in_node = run_tfjs(manifest.parent / "dist/multi/classify", {"x": x})
    expected = run_signature(manifest.parent / "multi", "classify", {"x": x})
    for key in ("logits", "probs"):
        np.testing.assert_array_equal(in_browser[key], in_node[key])
        np.testing.assert_allclose(in_browser[key], expected[key], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_inputs_the_model_cannot_take_ask_for_real_ones(tmp_path: Path) -> None:
    (tmp_path / "picky.py").write_text(
        "import tensorflow as tf\n"
        "spec = tf.TensorSpec([None], tf.float32, name='x')\n"
        "def build():\n"
        "    return {'rows': tf.function(lambda x: {'y': tf.reshape(x, [-1, 7])},"
        " input_signature=[spec])}\n"
    )
    manifest = tmp_path / "tfjs-build.yaml"
    manifest.write_text(
        "version: 1\nmodels:\n  picky:\n    python: picky:build\n    signatures: [rows]\n"
    )
    (failed,) = tfjsbuild.build([manifest]).failed
    assert (failed.error or "").startswith(
        "TensorFlow could not run the signature on the verification inputs (InvalidArgumentError: "
    )
    assert (failed.error or "").endswith(
        "give inputs it accepts with verify.inputs (a .npz keyed by input name)"
    )
    np.savez(tmp_path / "rows.npz", x=np.arange(14, dtype="float32"))
    manifest.write_text(manifest.read_text() + "    verify: {inputs: rows.npz}\n")
    assert tfjsbuild.build([manifest]).ok


def files_with_mtimes(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {
        p.relative_to(folder).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def report_of(done: subprocess.CompletedProcess[str]) -> dict[str, object]:
    """A `--json` report, checked against the published schema."""
    import jsonschema

    report = json.loads(done.stdout)
    schema = json.loads(
        (Path(__file__).parent.parent / "schemas/build-report.schema.json").read_text()
    )
    jsonschema.validate(report, schema)
    return report  # type: ignore[no-any-return]


# uint8 weights of the wide model are off by far more than float32 rounding: a tolerance that
# passes, one that passes too, and one that cannot.
QUANTIZED = WIDE + "    quantization: {uint8: ['*']}\n    verify: {atol: 1000, rtol: 1}\n"


@pytest.mark.slow
def test_no_verify_builds_are_verified_later_without_converting(
    project: Callable[..., Path], model_store: Callable[..., Path]
) -> None:
    manifest = project(QUANTIZED, {"wide": model_store("wide")})
    root = manifest.parent
    output = root / "dist/wide/serving_default"
    state_file = root / STATE / "state.json"
    log = root / STATE / "worker.log"
    not_yet = "not verified yet (built with --no-verify or verify.enabled false)"

    built = run_cli("run", "--no-verify", "--json", cwd=root)
    assert built.returncode == 0, built.stderr
    (entry,) = report_of(built)["signatures"]  # type: ignore[misc]
    assert (entry["status"], entry["verification"]) == ("built", None)
    log_written = log.stat().st_mtime_ns

    # Built without verification: up to date for --no-verify runs (no worker started).
    again = run_cli("run", "--no-verify", "--json", cwd=root)
    assert again.returncode == 0, again.stderr
    (entry,) = report_of(again)["signatures"]  # type: ignore[misc]
    assert (entry["action"], entry["status"]) == ("up-to-date", "up-to-date")
    assert log.stat().st_mtime_ns == log_written
    assert run_cli("plan", "--no-verify", cwd=root).stdout.startswith("  up-to-date  wide:")

    # The next run that verifies runs the output as it is.
    planned = report_of(run_cli("plan", "--json", cwd=root))
    assert [(s["action"], s["reasons"]) for s in planned["signatures"]] == [  # type: ignore[attr-defined]
        ("verify", [not_yet])
    ]
    assert run_cli("plan", cwd=root).stdout == (
        "  verify      wide:serving_default → dist/wide/serving_default  (as built)\n"
        f"      because: {not_yet}\n"
        "0 to build, 1 to verify, 0 up to date, 0 to remove\n"
    )
    dry = run_cli("run", "--dry-run", "--json", cwd=root)
    (entry,) = report_of(dry)["signatures"]  # type: ignore[misc]
    assert (entry["action"], entry["status"]) == ("verify", "skipped")
    # An output changed on disk since it was recorded is converted again, not verified.
    before = files_with_mtimes(output)
    shard = output / "group1-shard1of1.bin"
    shard.write_bytes(bytes(len(before["group1-shard1of1.bin"][0])))
    assert [(i.action, i.reasons) for i in tfjsbuild.plan([manifest]).items] == [
        ("build", ("output modified: dist/wide/serving_default/group1-shard1of1.bin",))
    ]
    shard.write_bytes(before["group1-shard1of1.bin"][0])  # same bytes, a newer mtime
    os.utime(shard, ns=(before["group1-shard1of1.bin"][1],) * 2)
    before = files_with_mtimes(output)

    result = tfjsbuild.build([manifest])
    assert result.ok, [r.error for r in result.failed]
    (verified,) = result.results
    assert verified.status == "verified" and verified.item.action == "verify"
    assert verified.timings is not None  # loaded and verified; no conversion phase
    assert {phase.split(":")[0] for phase in verified.timings} == {"load", "verify"}
    assert files_with_mtimes(output) == before  # not converted, not touched
    assert verified.verification is not None and verified.verification.passed is True
    state, _ = load_state(root / STATE)
    recorded = state.records["wide:serving_default"]
    assert recorded.verification == verified.verification
    assert recorded.verified_with is not None
    assert [b.atol for b in recorded.verified_with.backends] == [1000]
    index = json.loads((root / "dist/tfjs-build.json").read_text())
    verification = index["models"]["wide"]["serving_default"]["verification"]
    assert [b["atol"] for b in verification["backends"].values()] == [1000]
    assert [i.action for i in tfjsbuild.plan([manifest]).items] == ["up-to-date"]

    # Only verify settings change: verified again, not converted, through a selector.
    manifest.write_text(QUANTIZED.replace("atol: 1000", "atol: 500"))
    done = run_cli("run", "wide", cwd=root)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "Verifying 1 signature with 1 worker, starting 1 (importing TensorFlow)"
    assert lines[1].startswith("✓ wide:serving_default → dist/wide/serving_default  ")
    assert lines[1].endswith(
        " as built, not converted again  (verification changed: backends.auto.atol)"
    )
    assert lines[2].startswith("1 verified in ")
    assert files_with_mtimes(output) == before
    assert load_state(root / STATE)[0].records["wide:serving_default"].verified_with == replace(
        recorded.verified_with, backends=(replace(recorded.verified_with.backends[0], atol=500),)
    )

    # A tolerance the quantized output cannot meet: the signature fails, nothing changes.
    state_before = state_file.read_bytes()
    index_before = (root / "dist/tfjs-build.json").read_bytes()
    manifest.write_text(QUANTIZED.replace("atol: 1000, rtol: 1", "atol: 1.0e-9, rtol: 0"))
    failed = run_cli("run", "--json", cwd=root)
    assert failed.returncode == 1, failed.stderr
    (entry,) = report_of(failed)["signatures"]  # type: ignore[misc]
    assert (entry["action"], entry["status"]) == ("verify", "failed")
    assert entry["error"].startswith(
        "TensorFlow.js (wasm backend) does not match TensorFlow: output 'y' differs"
    )
    assert (
        "(allowed: atol 1e-09 + rtol 0 x |expected|). The output and its recorded "
        in (entry["error"])
    )
    assert entry["verification"]["passed"] is False
    passed = {**entry["verification"], "passed": True}
    assert files_with_mtimes(output) == before
    assert state_file.read_bytes() == state_before
    assert (root / "dist/tfjs-build.json").read_bytes() == index_before
    assert [(i.action, i.reasons) for i in tfjsbuild.plan([manifest]).items] == [
        # the next run tries again
        ("verify", ("verification changed: backends.auto.atol, backends.auto.rtol",))
    ]

    # The output changed while a worker verified it: what it verified is not recorded.
    (item,) = tfjsbuild.plan([manifest]).items
    loaded = load_manifest(manifest)
    shard = output / "group1-shard1of1.bin"
    shard.write_bytes(bytes(len(before["group1-shard1of1.bin"][0])))
    done_by_worker = ConversionOutcome("0", None, 1.0, {"verify": 1.0}, verification=passed)
    raced = _record_verification(
        item, Project(loaded, load_state(root / STATE)[0]), done_by_worker, output
    )
    assert (raced.status, raced.error) == (
        "failed",
        "output modified: dist/wide/serving_default/group1-shard1of1.bin while it was being "
        "verified; the next run converts it again",
    )
    assert state_file.read_bytes() == state_before
    shard.write_bytes(before["group1-shard1of1.bin"][0])
    os.utime(shard, ns=(before["group1-shard1of1.bin"][1],) * 2)

    # Turning verification off rebuilds nothing either; the recorded verification stands.
    manifest.write_text(
        QUANTIZED.replace("verify: {atol: 1000, rtol: 1}", "verify: {enabled: false}")
    )
    assert [r.status for r in tfjsbuild.build([manifest]).results] == ["up-to-date"]
    assert state_file.read_bytes() == state_before
    assert files_with_mtimes(output) == before


@pytest.mark.slow
def test_a_verify_task_loads_and_verifies_and_never_converts(
    project: Callable[..., Path], model_store: Callable[..., Path], tmp_path: Path
) -> None:
    from tfjsbuild.verify.runtime import find_runtime

    manifest = project(WIDE, {"wide": model_store("wide")})
    assert tfjsbuild.build([manifest], verify=False).ok
    (item,) = tfjsbuild.plan([manifest]).items
    assert item.action == "verify" and item.target is not None
    output = manifest.parent / item.output
    before = files_with_mtimes(output)
    task = ConversionTask(
        key="0",
        source=item.target.source,
        signature=item.signature,
        options=item.target.options,
        staging_dir=str(tmp_path / "staging"),
        model_key="wide",
        scratch_dir=str(tmp_path / "scratch"),
        verify=_verify_task(item, find_runtime()),
        kind="verify",
        output_dir=str(output),
    )
    phases: list[str] = []
    outcome = run_task(task, phases.append)
    assert (outcome.error, phases) == (None, [LOADING, VERIFYING])  # a failure names these
    assert outcome.verification is not None and outcome.verification.passed is True
    assert not (tmp_path / "staging").exists()
    assert files_with_mtimes(output) == before


@pytest.mark.slow
def test_state_from_an_older_fingerprint_scheme_rebuilds_once(
    project: Callable[..., Path], model_store: Callable[..., Path]
) -> None:
    manifest = project(WIDE, {"wide": model_store("wide")})
    root = manifest.parent
    assert tfjsbuild.build([manifest], verify=False).ok
    # What a scheme 1 tfjs-build wrote: verification settings hashed into the fingerprint.
    state_file = root / STATE / "state.json"
    payload = json.loads(state_file.read_text())
    old = payload["signatures"]["wide:serving_default"]
    old["fingerprint"] = "5" * 64
    old["parts"] |= {"scheme": "1", "verify": "6" * 64}
    old["options"]["verify"] = {"samples": 3, "atol": 1e-4, "rtol": 1e-3, "inputs": None}
    del old["verified_with"]
    state_file.write_text(json.dumps(payload))
    done = run_cli("run", "--json", cwd=root)
    assert done.returncode == 0, done.stderr
    (entry,) = report_of(done)["signatures"]  # type: ignore[misc]
    assert (entry["action"], entry["reasons"], entry["status"]) == (
        "build",
        ["fingerprint scheme changed: 1 -> 2"],
        "built",
    )
    assert entry["verification"]["passed"] is True
    assert [i.action for i in tfjsbuild.plan([manifest]).items] == ["up-to-date"]
