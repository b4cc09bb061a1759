"""tfjs-build's fast graph passes write the bytes tensorflowjs's own passes write.

The contract of `tfjsbuild/worker/optimize.py` and `fold_batch_norms.py`: for every
architecture in tests/architectures.py, exported by Keras 3 and by Keras 2, a build with the fast
passes and a build with tensorflowjs's (`TFJS_BUILD_STOCK_PASSES=1`) give the same model.json
(parsed) and the same weight bytes.
"""

from __future__ import annotations

import json
import shutil
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

import tfjsbuild
from conftest import read_output, run_cli
from tfjsbuild.building.run import passes_notice
from tfjsbuild.version import FAST_PASSES_TENSORFLOWJS, STOCK_PASSES_VARIABLE, fast_passes_apply

pytestmark = pytest.mark.slow

ARCHITECTURES = ("mobilenet_v2", "resnet", "transformer", "lstm", "prelu")
MODELS = [f"{name}-keras{version}" for name in ARCHITECTURES for version in ("3", "2")]
# Keras 2 exports FusedBatchNormV3 after these models' convolutions: the pass that was slow.
FOLDED = ("mobilenet_v2-keras2", "resnet-keras2", "prelu-keras2")


def build(
    models: Path, project: Path, names: list[str], monkeypatch: pytest.MonkeyPatch, stock: bool
) -> dict[str, tuple[str, set[str]]]:
    """Build `names` (copies of the SavedModels in `models`) in `project` without verifying, with
    TFJS_BUILD_STOCK_PASSES set or not (the workers inherit it); by model, its status and the
    phases its worker timed (the fast passes time each of theirs)."""
    lines = ["version: 1", "output_dir: web", "models:"]
    for name in names:
        shutil.copytree(models / name, project / name)
        lines += [f"  {name}:", f"    saved_model: {name}", "    signatures: [serving_default]"]
    (project / "tfjs-build.yaml").write_text("\n".join(lines) + "\n")
    with monkeypatch.context() as patched:
        patched.setenv(STOCK_PASSES_VARIABLE, "1" if stock else "")
        result = tfjsbuild.build([project / "tfjs-build.yaml"], jobs=2, verify=False)
    return {r.item.model: (r.status, set(r.timings or {})) for r in result.results}


def statuses(stdout: str) -> dict[str, str]:
    return {row["model"]: row["status"] for row in json.loads(stdout)["signatures"]}


def test_the_fast_passes_write_what_tensorflowjs_passes_write(
    architectures: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert metadata.version("tensorflowjs") == FAST_PASSES_TENSORFLOWJS  # else both are stock
    fast_env, stock_env = {STOCK_PASSES_VARIABLE: ""}, {STOCK_PASSES_VARIABLE: "1"}
    assert fast_passes_apply(FAST_PASSES_TENSORFLOWJS, fast_env)
    assert not fast_passes_apply(FAST_PASSES_TENSORFLOWJS, stock_env)
    (tmp_path / "fast").mkdir()
    (tmp_path / "stock").mkdir()
    fast = build(architectures, tmp_path / "fast", MODELS, monkeypatch, stock=False)
    stock = build(architectures, tmp_path / "stock", MODELS, monkeypatch, stock=True)
    assert {status for status, _ in [*fast.values(), *stock.values()]} == {"built"}
    # Each build took the passes asked for: only the fast ones time each pass.
    assert all("optimize: fold_batch_norms" in phases for _, phases in fast.values())
    assert not any(
        phase.startswith("optimize: ") for _, phases in stock.values() for phase in phases
    )

    for name in MODELS:
        fast_json, fast_files = read_output(tmp_path / "fast" / "web" / name / "serving_default")
        stock_json, stock_files = read_output(tmp_path / "stock" / "web" / name / "serving_default")
        assert fast_json == stock_json, name
        assert fast_files.keys() == stock_files.keys(), name
        for file, content in fast_files.items():
            assert content == stock_files[file], f"{name}: {file} differs"
        weights = [w["name"] for group in fast_json["weightsManifest"] for w in group["weights"]]
        # Not vacuous: where Keras 2 put batch norms after convolutions, both folded them.
        assert any(w.endswith("_bn_offset") for w in weights) == (name in FOLDED), name
        if name in FOLDED:
            nodes = fast_json["modelTopology"]["node"]  # type: ignore[index]
            assert all(node["op"] != "FusedBatchNormV3" for node in nodes), name

    # And right: TF.js runs them as TensorFlow does, but for two that tensorflowjs_converter's
    # own output fails the same way (TF.js 4.22 limits, which verification is there to catch).
    done = run_cli("run", "--json", cwd=tmp_path / "fast", timeout=900)
    verified = statuses(done.stdout)
    assert verified.pop("lstm-keras3") == "failed"  # "Cannot compute the outputs [Identity]"
    assert verified.pop("transformer-keras2") == "failed"  # NaN: tf_keras's LayerNormalization
    assert verified == {name: "verified" for name in MODELS if name in verified}
    assert len(verified) == len(MODELS) - 2

    # Whoever asks for tensorflowjs's passes gets them: outputs of the fast ones are not kept.
    monkeypatch.setenv(STOCK_PASSES_VARIABLE, "1")
    replanned = tfjsbuild.plan([tmp_path / "fast" / "tfjs-build.yaml"]).items
    assert [item.action for item in replanned] == ["build"] * len(MODELS)


def tensorflowjs_loop(weights: np.ndarray, scale: np.ndarray, op: str) -> np.ndarray:
    """tensorflowjs 4.22's per-element loop (fold_batch_norms.py), as the reference."""
    scaled_weights = np.copy(weights)
    it = np.nditer(scaled_weights, flags=["multi_index"], op_flags=[["readwrite"]])
    multiplier = weights.shape[3]
    while not it.finished:
        index = it.multi_index
        channel = index[3] if op == "Conv2D" else index[2] * multiplier + index[3]
        it[0] *= scale[channel]
        it.iternext()
    return scaled_weights


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.float64])
@pytest.mark.parametrize("op", ["Conv2D", "DepthwiseConv2dNative"])
def test_weights_are_scaled_as_tensorflowjs_scales_them(op: str, dtype: type) -> None:
    from tfjsbuild.worker.fold_batch_norms import scaled

    random = np.random.default_rng(7)
    weights = random.normal(0, 1, (3, 3, 4, 5)).astype(dtype)
    channels = 5 if op == "Conv2D" else 20
    scale = 1.0 / np.sqrt(random.uniform(0.01, 2.0, channels)) * random.uniform(0.5, 1.5, channels)
    assert scale.dtype == np.float64
    expected = tensorflowjs_loop(weights, scale, op)
    result = scaled(weights, scale, op)
    assert result.dtype == expected.dtype
    assert result.tobytes() == expected.tobytes()


def test_another_tensorflowjs_takes_its_own_passes_and_the_build_says_so() -> None:
    assert fast_passes_apply("4.22.0", {})
    assert fast_passes_apply("4.22.0", {STOCK_PASSES_VARIABLE: "0"})
    assert not fast_passes_apply("4.23.0", {})
    assert not fast_passes_apply("4.22.0", {STOCK_PASSES_VARIABLE: "1"})


def test_the_notice_names_both_versions_only_when_something_was_converted() -> None:
    from tfjsbuild.building.results import SignatureResult
    from tfjsbuild.planning.plan import PlanItem

    manifest = Path("tfjs-build.yaml")
    converted = SignatureResult(PlanItem(manifest, "m", "s", "web/m/s", "build", ()), "built")
    unchanged = SignatureResult(
        PlanItem(manifest, "m", "s", "web/m/s", "up-to-date", ()), "up-to-date"
    )
    (notice,) = passes_notice([converted], "4.23.0", {})
    assert "tensorflowjs 4.23.0 is installed" in notice
    assert FAST_PASSES_TENSORFLOWJS in notice
    assert passes_notice([unchanged], "4.23.0", {}) == []
    assert passes_notice([converted], FAST_PASSES_TENSORFLOWJS, {}) == []
    assert passes_notice([converted], "4.23.0", {STOCK_PASSES_VARIABLE: "1"}) == []
