"""Verification on several TensorFlow.js backends: cpu and wasm in Node.js, webgl in headless
Chromium (SwiftShader: no GPU), each with its own result, tolerances and failures."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

import tfjsbuild
from conftest import run_cli

ARCHITECTURES = """
version: 1
output_dir: web
defaults:
  verify: {backends: [cpu, wasm, webgl]}
models:
  mobilenet:
    saved_model: mobilenet
    signatures: [serving_default]
  attention:
    saved_model: attention
    signatures: [serving_default]
    verify: {backends: [cpu, wasm]}
"""


def _verdicts(result: tfjsbuild.BuildResult) -> dict[str, list[tuple[str, bool]]]:
    return {
        r.item.model: [(run.backend, run.passed) for run in r.verification.backends]
        for r in result.results
        if r.verification is not None
    }


@pytest.mark.slow
def test_each_backend_is_run_compared_and_recorded(
    project: Callable[..., Path], architectures: Path
) -> None:
    if shutil.which("chromium") is None:
        pytest.fail("Debian's chromium is not installed: apt-get install chromium (.ci/run does)")
    manifest = project(
        ARCHITECTURES,
        {
            "mobilenet": architectures / "mobilenet_v2-keras3",
            "attention": architectures / "transformer-keras3",
        },
    )
    result = tfjsbuild.build([manifest])
    # A MobileNet passes on all three; Keras's MultiHeadAttention runs Einsum, which wasm lacks:
    # found in the graph before running it there, named with its node.
    assert _verdicts(result) == {
        "mobilenet": [("cpu", True), ("wasm", True), ("webgl", True)],
        "attention": [("cpu", True), ("wasm", False)],
    }
    (failed,) = result.failed
    assert (failed.error or "").startswith(
        "The wasm backend of TensorFlow.js has no kernel for op Einsum at nodes "
        "'StatefulPartitionedCall/functional_1_1/multi_head_attention_1/einsum/Einsum', "
    )
    assert "Verify on cpu or webgl instead, or avoid the op" in (failed.error or "")
    assert not (manifest.parent / "web/attention").exists()  # a failed output is not kept
    mobilenet = manifest.parent / "web/mobilenet/serving_default"
    index = json.loads((manifest.parent / "web/tfjs-build.json").read_text())
    entry = index["models"]["mobilenet"]["serving_default"]["verification"]
    assert list(entry["backends"]) == ["cpu", "wasm", "webgl"]
    assert all(run["passed"] and run["max_abs_error"] < 1e-3 for run in entry["backends"].values())
    shown = run_cli("report", "--html", "report.html", cwd=manifest.parent, check=True).stdout
    assert "(cpu, wasm, webgl)" in shown
    page = (manifest.parent / "report.html").read_text()
    assert "ok on cpu (" in page and "ok on wasm (" in page and "ok on webgl (" in page

    # Only WebGL's tolerance is tightened, past what it measured: verified again, not converted,
    # and it fails on WebGL alone; the output and its recorded verification stay.
    webgl_error = entry["backends"]["webgl"]["max_abs_error"]
    assert webgl_error > 0
    tight = f"verify: {{backends: {{cpu: {{}}, wasm: {{}}, webgl: {{atol: {webgl_error / 10}, rtol: 0}}}}}}"
    manifest.write_text(ARCHITECTURES.replace("verify: {backends: [cpu, wasm, webgl]}", tight))
    model_json = (mobilenet / "model.json").read_bytes()
    done = run_cli("run", "--json", "mobilenet", cwd=manifest.parent)
    assert done.returncode == 1, done.stderr
    (signature,) = json.loads(done.stdout)["signatures"]
    assert (signature["action"], signature["status"]) == ("verify", "failed")
    assert signature["error"].startswith(
        "TensorFlow.js (webgl backend) does not match TensorFlow: output 'output_0' differs by "
    )
    runs = signature["verification"]["backends"]
    assert {name: run["passed"] for name, run in runs.items()} == {
        "cpu": True,
        "wasm": True,
        "webgl": False,
    }
    assert runs["webgl"]["atol"] == webgl_error / 10 and runs["webgl"]["rtol"] == 0
    assert all(isinstance(run["seconds"], float) for run in runs.values())
    assert (mobilenet / "model.json").read_bytes() == model_json
    assert json.loads((manifest.parent / "web/tfjs-build.json").read_text()) == index

    # uint8-quantized: converted again; cpu and wasm accept its error, WebGL's tolerance does
    # not. It fails on WebGL alone, and the float output stays in place.
    quantized = ARCHITECTURES.replace(
        "verify: {backends: [cpu, wasm, webgl]}",
        "quantization: {uint8: ['*']}\n"
        "  verify: {backends: {cpu: {atol: 1}, wasm: {atol: 1}, webgl: {atol: 1.0e-6, rtol: 0}}}",
    )
    manifest.write_text(quantized)
    done = run_cli("run", "--json", "mobilenet", cwd=manifest.parent)
    assert done.returncode == 1, done.stderr
    (signature,) = json.loads(done.stdout)["signatures"]
    assert (signature["action"], signature["status"]) == ("build", "failed")
    assert signature["error"].startswith("TensorFlow.js (webgl backend) does not match TensorFlow")
    runs = signature["verification"]["backends"]
    assert {name: run["passed"] for name, run in runs.items()} == {
        "cpu": True,
        "wasm": True,
        "webgl": False,
    }
    assert runs["webgl"]["max_abs_error"] > 1e-4  # quantization's error, not WebGL's
    assert (mobilenet / "model.json").read_bytes() == model_json


MANIFEST = """
version: 1
output_dir: web
models:
  net:
    saved_model: model
    signatures: [mix]
    verify: {backends: [cpu, webgl]}
"""


@pytest.mark.slow
def test_webgl_without_a_browser_is_skipped_with_a_warning_unless_required(
    project: Callable[..., Path], model_store: Callable[..., Path]
) -> None:
    manifest = project(MANIFEST, {"model": model_store("einsum")})
    root = manifest.parent
    none = {"TFJS_BUILD_CHROMIUM": ""}
    done = run_cli("run", cwd=root, env=none)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "verified on cpu (max error " in lines[1]
    assert lines[1].endswith(", webgl skipped  (first build)")
    assert lines[-1] == (
        "warning: not verified on webgl for 1 signature: no Chromium is used here "
        "($TFJS_BUILD_CHROMIUM is set empty)"
    )
    assert run_cli("plan", cwd=root, env=none, check=True).stdout.count("up-to-date") == 1
    # A browser found: verified on WebGL now, without converting (Einsum runs there).
    plan = tfjsbuild.plan([manifest])
    assert [(i.action, i.reasons) for i in plan.items] == [
        ("verify", ("not verified on webgl yet: a browser is found now",))
    ]
    result = tfjsbuild.build([manifest])
    assert result.ok, [r.error for r in result.failed]
    assert _verdicts(result) == {"net": [("cpu", True), ("webgl", True)]}

    # Verified on WebGL here: that stands for a build without a browser (CI, say).
    assert run_cli("plan", cwd=root, env=none, check=True).stdout.count("up-to-date") == 1

    # WebGL alone and no browser: built, but nothing verified, and said so (not "passed").
    manifest.write_text(MANIFEST.replace("[cpu, webgl]", "[webgl]"))
    done = run_cli("run", "--json", cwd=root, env=none)
    assert done.returncode == 0, done.stderr
    (signature,) = json.loads(done.stdout)["signatures"]
    assert signature["status"] == "verified"
    verification = signature["verification"]
    assert (verification["passed"], verification["max_abs_error"]) == (False, "NaN")
    assert verification["backends"]["webgl"]["skipped"] is True
    shown = run_cli("run", "--force", cwd=root, env=none).stdout.splitlines()
    assert shown[1].endswith("not verified (webgl skipped)  (forced)"), shown
    assert shown[-1].startswith("warning: not verified on webgl for 1 signature: ")
    assert run_cli("plan", cwd=root, env=none, check=True).stdout.count("up-to-date") == 1
    # Verified again (a tolerance changed) with nothing that could run: not counted "verified".
    manifest.write_text(MANIFEST.replace("[cpu, webgl]", "{webgl: {atol: 0.5}}"))
    again = run_cli("run", cwd=root, env=none, check=True).stdout.splitlines()
    assert re.fullmatch(r"1 not verified in [\d.]+s", again[-2]), again

    # Required, and no browser: the signature fails before any work, saying what to do.
    manifest.write_text(MANIFEST.replace("[cpu, webgl]", "{cpu: {}, webgl: {required: true}}"))
    failed = run_cli("run", cwd=root, env=none)
    assert failed.returncode == 1
    assert (
        "WebGL is required (verify.backends.webgl.required), but no Chromium is used here "
        "($TFJS_BUILD_CHROMIUM is set empty); or make WebGL optional"
    ) in failed.stdout + failed.stderr
    assert "Converting" not in failed.stdout  # known when planning: no worker was started
    missing = run_cli("run", cwd=root, env={"TFJS_BUILD_CHROMIUM": str(root / "no-chromium")})
    assert missing.returncode == 1
    assert f"$TFJS_BUILD_CHROMIUM={root / 'no-chromium'} is not an executable" in (
        missing.stdout + missing.stderr
    )
    assert subprocess.run(["pgrep", "-f", "tfjs-build-chromium"], check=False).returncode == 1
