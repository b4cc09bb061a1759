"""The TensorFlow.js side of verification: one long-lived Node.js per worker, the WebAssembly
backend by default, and the CPU backend where WebAssembly lacks a kernel the model uses."""

from __future__ import annotations

import json
import os
import signal
import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import tfjsbuild
from conftest import run_cli
from tfjsbuild.errors import BuildError
from tfjsbuild.verify.runtime import find_runtime
from tfjsbuild.verify.verifier import BackendFailed, Verifier

MANIFEST = """
version: 1
output_dir: web
models:
  net:
    saved_model: model
    signatures: {mix: {}, shifted: {}, dense: {}}
"""


def _weights() -> np.ndarray:  # savedmodels.WithEinsum's `w`
    return np.random.RandomState(8).uniform(-1, 1, [8, 3]).astype("float32")


def test_one_node_answers_every_request_and_a_dead_one_is_replaced(
    project: Callable[..., Path], model_store: Callable[..., Path]
) -> None:
    manifest = project(
        MANIFEST.replace(
            "output_dir: web", "output_dir: web\ndefaults: {verify: {enabled: false}}"
        ),
        {"model": model_store("einsum")},
    )
    assert tfjsbuild.build([manifest]).ok
    model = manifest.parent / "web" / "net" / "dense"
    x = np.random.default_rng(0).uniform(-1, 1, [2, 8]).astype("float32")
    expected = x @ _weights()
    verifier = Verifier(find_runtime(install=False))
    try:
        first = verifier.run(model, [{"x": x}, {"x": x * 2}])
        pid = verifier.pid
        assert first.backend == "wasm" and first.fallback is None
        np.testing.assert_allclose(first.outputs[0]["y"], expected, atol=1e-5)
        np.testing.assert_allclose(first.outputs[1]["y"], 2 * expected, atol=1e-5)
        # Node.js's start and TF.js's import are said once, in the first answer.
        assert set(first.seconds) == {"startup", "backend", "load", "run"}
        # The same process answers the next request, on the backend asked for.
        second = verifier.run(model, [{"x": x}], backend="cpu")
        assert verifier.pid == pid and second.backend == "cpu"
        assert set(second.seconds) == {"backend", "load", "run"}
        np.testing.assert_allclose(second.outputs[0]["y"], expected, atol=1e-5)
        # A request it cannot serve is answered with an error; the process lives on.
        with pytest.raises(BuildError, match=r"cannot read model file .*nothing/model\.json"):
            verifier.run(model.parent / "nothing", [{"x": x}])
        # So is a model a backend cannot run on the inputs given: that backend's failure.
        with pytest.raises(BackendFailed) as refused:
            verifier.run(model, [{"x": np.zeros([2, 5], "float32")}])
        assert str(refused.value).startswith(
            "the cpu backend of TensorFlow.js could not run the model: The shape of dict['x'] "
            "provided in model.execute(dict) must be [-1,8], but was [2,5]"
        )
        assert verifier.pid == pid
        # TensorFlow's side fails while TF.js computes: its answer is read and dropped, so the
        # same process answers the next request.

        def tensorflow_fails() -> None:
            raise RuntimeError("TensorFlow's side failed")

        with pytest.raises(RuntimeError, match="TensorFlow's side failed"):
            verifier.run(model, [{"x": x}], meanwhile=tensorflow_fails)
        assert verifier.pid == pid
        np.testing.assert_allclose(
            verifier.run(model, [{"x": x}]).outputs[0]["y"], expected, atol=1e-5
        )
        # Killed between requests (the OOM killer, say): the next request is answered by a new
        # one, whether or not the old one was seen dead first.
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        third = verifier.run(model, [{"x": x}])
        assert verifier.pid not in (None, pid)
        np.testing.assert_allclose(third.outputs[0]["y"], expected, atol=1e-5)
    finally:
        verifier.close()


def _einsum_nodes(model_dir: Path) -> list[str]:
    """The converted graph's Einsum nodes, as the kernel check must name them."""
    topology = json.loads((model_dir / "model.json").read_text())["modelTopology"]
    nodes = [*topology["node"]]
    for function in topology.get("library", {}).get("function", []):
        nodes += function.get("nodeDef", [])
    return [node["name"] for node in nodes if node["op"] == "Einsum"]


def test_auto_verifies_on_wasm_and_on_cpu_where_wasm_lacks_a_kernel(
    project: Callable[..., Path], model_store: Callable[..., Path]
) -> None:
    manifest = project(MANIFEST, {"model": model_store("einsum")})
    result = tfjsbuild.build([manifest])
    assert result.ok, [r.error for r in result.failed]
    verified = {r.item.signature: r.verification for r in result.results}
    assert {
        name: [run.backend for run in v.backends] for name, v in verified.items() if v is not None
    } == {"mix": ["cpu"], "shifted": ["cpu"], "dense": ["wasm"]}
    (einsum,) = _einsum_nodes(manifest.parent / "web/net/mix")
    log = (manifest.parent / ".tfjs-build/manifests/tfjs-build.yaml/worker.log").read_text()
    # Found in the graph before running it on wasm: the op, and the node.
    assert (
        "verified signature 'mix' on the CPU backend: the wasm backend of TensorFlow.js has no "
        f"kernel for op Einsum at node '{einsum}': the model cannot run there. Verify on cpu "
        "instead, or avoid the op"
    ) in log
    assert (
        "verified signature 'shifted' on the CPU backend: the wasm backend of TensorFlow.js could "
        "not run the model: _FusedMatMul only supports rank-1 bias but got rank 0"
    ) in log
    index = json.loads((manifest.parent / "web" / "tfjs-build.json").read_text())
    signatures = index["models"]["net"]
    assert {
        name: list(entry["verification"]["backends"]) for name, entry in signatures.items()
    } == {
        "mix": ["cpu"],
        "shifted": ["cpu"],
        "dense": ["wasm"],
    }

    # Asking for cpu and wasm verifies again, without converting: `mix` passes on cpu and fails
    # on wasm, naming the op and its node, before running there; it keeps its output and its
    # recorded verification.
    manifest.write_text(
        MANIFEST.replace(
            "output_dir: web", "output_dir: web\ndefaults: {verify: {backends: [wasm, cpu]}}"
        )
    )
    plan = tfjsbuild.plan([manifest])
    changed = "verification changed: backends.auto, backends.cpu, backends.wasm"
    assert [(i.signature, i.action, i.reasons) for i in plan.items] == [
        (name, "verify", (changed,)) for name in ("mix", "shifted", "dense")
    ]
    mix_model = (manifest.parent / "web/net/mix/model.json").read_bytes()
    result = tfjsbuild.build([manifest])
    by_name = {r.item.signature: r for r in result.results}
    assert by_name["dense"].status == "verified"
    assert by_name["mix"].status == "failed"
    assert by_name["mix"].error == (
        f"The wasm backend of TensorFlow.js has no kernel for op Einsum at node '{einsum}': the "
        "model cannot run there. Verify on cpu or webgl instead, or avoid the op. The output and "
        "its recorded verification are kept."
    )
    mix = by_name["mix"].verification
    assert mix is not None and [(r.backend, r.passed) for r in mix.backends] == [
        ("cpu", True),
        ("wasm", False),
    ]
    assert by_name["shifted"].status == "failed"
    assert "_FusedMatMul only supports rank-1 bias" in (by_name["shifted"].error or "")
    assert (manifest.parent / "web/net/mix/model.json").read_bytes() == mix_model
    again = tfjsbuild.plan([manifest])
    assert [(i.signature, i.action) for i in again.items] == [
        ("mix", "verify"),
        ("shifted", "verify"),
        ("dense", "up-to-date"),
    ]


def test_the_report_says_which_backend_verified(
    project: Callable[..., Path], model_store: Callable[..., Path]
) -> None:
    manifest = project(
        textwrap.dedent(MANIFEST).replace("{mix: {}, shifted: {}, dense: {}}", "{dense: {}}"),
        {"model": model_store("einsum")},
    )
    assert tfjsbuild.build([manifest]).ok
    rows = tfjsbuild.report([manifest])
    (row,) = rows
    assert row.verification is not None
    assert [run.backend for run in row.verification.backends] == ["wasm"]
    shown = run_cli("report", cwd=manifest.parent, check=True).stdout
    assert "ok 0 (wasm)" in shown or "(wasm)" in shown.split("net")[-1], shown


def test_a_first_install_of_the_runtime_is_said_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """npm ci takes a while and fetches ~300 MB: the build says so before, once. (`npm` here is
    a stand-in that installs nothing: what is tested is when the notice comes.)"""
    tools = tmp_path / "bin"
    tools.mkdir()
    (tools / "npm").write_text("#!/bin/sh\nexit 0\n")
    (tools / "npm").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tools}:{os.environ['PATH']}")
    monkeypatch.delenv("TFJS_BUILD_TFJS_RUNTIME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    said: list[str] = []
    runtime = find_runtime(announce=said.append)
    assert runtime.folder.parent == tmp_path / "cache" / "tfjs-build"
    assert said == [
        f"Installing the TensorFlow.js runtime (once; npm, ~300 MB) into {runtime.folder} ..."
    ]
    assert find_runtime(announce=said.append) == runtime and len(said) == 1
