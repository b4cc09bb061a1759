"""`quantization: auto` and the static check of quantized weights' ranges.

Real SavedModels, real conversions, real verification in TensorFlow.js: `auto` keeps the
smallest setting that passes (never one that fails), records what it tried, rebuilds nothing
when nothing changed, chooses again when the verification changes, and restores from the cache.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import jsonschema
import numpy as np
import pytest

import tfjsbuild
from conftest import REPO, run_cli, run_tfjs, stored_dtypes
from savedmodels import run_signature
from tfjsbuild.errors import UsageError
from tfjsbuild.planning.reasons import AUTO_CHOOSES_AGAIN
from tfjsbuild.stores.records import SignatureRecord
from tfjsbuild.stores.state import load_state
from tfjsbuild.verify.quantization import (
    CandidateRecord,
    QuantizationChoice,
    WeightRange,
    choice_from_json,
    range_problems,
    range_warnings,
)

STATE = ".tfjs-build/manifests/tfjs-build.yaml"
WEIGHT = "StatefulPartitionedCall/MatMul/ReadVariableOp"  # the wide model's one weight


def record(manifest: Path, key: str) -> SignatureRecord:
    state, warnings = load_state(manifest.parent / STATE)
    assert warnings == []
    return state.records[key]


def schema(name: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(json.loads((REPO / "schemas" / name).read_text()))


def assert_within_tolerance(
    output: Path, saved_model: Path, signature: str, atol: float, rtol: float
) -> None:
    """The chosen output, run in TF.js on inputs of its own, against TensorFlow."""
    inputs = {"x": np.random.RandomState(7).uniform(-1, 1, [4, 8]).astype("float32")}
    want, got = run_signature(saved_model, signature, inputs), run_tfjs(output, inputs)
    for key, expected in want.items():
        np.testing.assert_allclose(got[key], expected, atol=atol, rtol=rtol)


def test_auto_keeps_the_smallest_setting_that_passes(
    project: Callable[..., Path], model_store: Callable[..., Path]
) -> None:
    manifest = project(
        """
        version: 1
        models:
          multi:
            saved_model: multi
            quantization: auto
            signatures: [classify, regress]
          loose:
            saved_model: multi
            quantization: auto
            verify: {atol: 0.05, rtol: 0.01}
            signatures: [regress]
        """,
        {"multi": model_store("multihead")},
    )
    result = tfjsbuild.build([manifest], jobs=1)
    assert result.ok, [r.error for r in result.failed]
    root = manifest.parent
    # Default tolerances (atol 1e-4): uint8's steps are too coarse for these weights, uint16's
    # are not, and uint16 verifies: half the bytes of float32.
    for key in ("multi:classify", "multi:regress"):
        chosen = record(manifest, key)
        choice = chosen.quantization_choice
        assert choice is not None and choice.chosen == "uint16"
        assert [(c.setting, c.outcome) for c in choice.candidates] == [
            ("uint8", "skipped"),
            ("uint16", "passed"),
            ("float16", "not tried"),
            ("float32", "not tried"),
        ]
        assert "uint8 rounds it by up to" in (choice.candidates[0].note or "")
        assert choice.weight_bytes == choice.float32_weight_bytes // 2
        assert chosen.verification is not None and chosen.verification.passed
        assert chosen.verification.max_abs_error <= 1e-4 + 1e-3
        assert choice.summary() == "uint16 (-50% weights vs float32)"
        assert stored_dtypes(root / "dist" / key.replace(":", "/")) == {"uint16"}
    assert_within_tolerance(root / "dist/multi/regress", root / "multi", "regress", 1e-4, 1e-3)
    # Looser tolerances: uint8, a quarter of float32's bytes, still within them.
    loose = record(manifest, "loose:regress").quantization_choice
    assert loose is not None and loose.chosen == "uint8"
    assert loose.summary() == "uint8 (-75% weights vs float32)"
    assert stored_dtypes(root / "dist/loose/regress") == {"uint8"}
    assert_within_tolerance(root / "dist/loose/regress", root / "multi", "regress", 0.05, 0.01)
    # What was chosen is in --json, the asset index and the report, each valid by its schema.
    payload = json.loads(result.to_json())
    schema("build-report.schema.json").validate(payload)
    by_key = {f"{s['model']}:{s['signature']}": s for s in payload["signatures"]}
    assert by_key["loose:regress"]["quantization_choice"]["chosen"] == "uint8"
    assert by_key["multi:regress"]["quantization_choice"]["summary"] == (
        "uint16 (-50% weights vs float32)"
    )
    index = json.loads((root / "dist/tfjs-build.json").read_text())
    schema("asset-index.schema.json").validate(index)
    assert index["models"]["loose"]["regress"]["quantization"]["chosen"] == "uint8"
    report = run_cli("report", "--html", "report.html", cwd=root, check=True)
    assert "auto: uint8 (-75% weights vs float32)" in report.stdout
    assert "<td>auto: uint8 (-75% weights vs float32)</td>" in (root / "report.html").read_text()
    rows = json.loads(run_cli("report", "--json", cwd=root, check=True).stdout)
    schema("build-report.schema.json").validate(rows)
    assert {row["quantization_choice"]["chosen"] for row in rows["signatures"]} == {
        "uint8",
        "uint16",
    }


def test_auto_on_a_wide_weight_picks_a_larger_setting(
    project: Callable[..., Path], model_store: Callable[..., Path]
) -> None:
    manifest = project(
        """
        version: 1
        defaults:
          quantization: auto
        models:
          wide:
            saved_model: wide
          huge:
            saved_model: huge
            verify: {atol: 0.01}
        """,
        {"wide": model_store("wide"), "huge": model_store("wide", big=1.0e5)},
    )
    done = run_cli("run", "-j", "1", cwd=manifest.parent)
    assert done.returncode == 0, done.stderr
    assert "quantization auto: float16 (-50% weights vs float32)" in done.stdout, done.stdout
    # One weight of 100 among weights of 0.01: uint8 and uint16 round them by more than atol
    # 1e-4, so they are ruled out before being written; float16 holds 100 and verifies.
    wide = record(manifest, "wide:serving_default")
    assert wide.quantization_choice is not None
    assert [(c.setting, c.outcome, c.note) for c in wide.quantization_choice.candidates] == [
        (
            "uint8",
            "skipped",
            f"'{WEIGHT}' ranges over [-0.009955, 100]: uint8 rounds it by up to 0.2, more than "
            "verify.atol 0.0001",
        ),
        (
            "uint16",
            "skipped",
            f"'{WEIGHT}' ranges over [-0.009955, 100]: uint16 rounds it by up to 0.00076, more "
            "than verify.atol 0.0001",
        ),
        ("float16", "passed", None),
        ("float32", "not tried", None),
    ]
    assert wide.verification is not None and wide.verification.passed
    assert wide.verification.max_abs_error <= 1e-4 + 1e-3 * 100
    assert_within_tolerance(
        manifest.parent / "dist/wide/serving_default",
        manifest.parent / "wide",
        "serving_default",
        1e-4,
        1e-3,
    )
    # 1e5 is beyond float16: nothing smaller than float32 can hold it within atol 0.01.
    huge = record(manifest, "huge:serving_default").quantization_choice
    assert huge is not None and huge.chosen == "float32"
    assert [c.outcome for c in huge.candidates] == ["skipped", "skipped", "skipped", "passed"]
    assert huge.candidates[2].note == (
        f"'{WEIGHT}' ranges over [-0.009955, 1e+05], beyond float16's largest value 65504"
    )
    assert huge.summary() == "float32 (no smaller setting passed the range check and verification)"


def test_auto_keeps_only_the_weights_the_range_check_names_wider(
    project: Callable[..., Path], model_store: Callable[..., Path]
) -> None:
    manifest = project(
        """
        version: 1
        models:
          mixed:
            saved_model: mixed
            quantization: auto
            verify: {atol: 0.01, rtol: 0.1}
        """,
        {"mixed": model_store("wide_backbone")},
    )
    result = tfjsbuild.build([manifest], jobs=1)
    assert result.ok, [r.error for r in result.failed]
    # The backbone (one weight of 100) rounds by 0.2 at uint8: kept at float16; the head in
    # [-1, 1] stays uint8. Smaller than uint16 for both (384 bytes), and it verifies.
    choice = record(manifest, "mixed:serving_default").quantization_choice
    assert choice is not None
    assert [(c.setting, c.outcome, dict(c.kept), c.weight_bytes) for c in choice.candidates] == [
        ("uint8", "skipped", {}, None),
        ("uint8", "passed", {WEIGHT: "float16"}, 128 * 2 + 64),
        ("uint16", "not tried", {}, None),
        ("float16", "not tried", {}, None),
        ("float32", "not tried", {}, None),
    ]
    assert choice.summary() == "uint8 (1 weight kept at float16) (-58% weights vs float32)"
    output = manifest.parent / "dist/mixed/serving_default"
    weights = json.loads((output / "model.json").read_text())["weightsManifest"][0]["weights"]
    assert {w["name"]: w["quantization"]["dtype"] for w in weights} == {
        WEIGHT: "float16",
        "StatefulPartitionedCall/MatMul_1/ReadVariableOp": "uint8",
    }
    verification = record(manifest, "mixed:serving_default").verification
    assert verification is not None and verification.passed
    assert_within_tolerance(output, manifest.parent / "mixed", "serving_default", 0.01, 0.1)


def test_auto_is_up_to_date_chooses_again_when_verification_changes_and_restores(
    project: Callable[..., Path], model_store: Callable[..., Path]
) -> None:
    text = """
        version: 1
        models:
          multi:
            saved_model: multi
            quantization: auto
            verify: {atol: 0.05, rtol: 0.01}
            signatures: [regress]
        """
    manifest = project(text, {"multi": model_store("multihead")})
    first = tfjsbuild.build([manifest], jobs=1)
    assert first.ok, [r.error for r in first.failed]
    built = record(manifest, "multi:regress")
    # Unchanged: up to date, no candidate run again.
    again = tfjsbuild.build([manifest], jobs=1)
    assert [r.status for r in again.results] == ["up-to-date"]
    assert again.results[0].quantization == built.quantization_choice
    plan = run_cli("plan", cwd=manifest.parent, check=True)
    assert plan.stdout.splitlines()[0] == (
        "  up-to-date  multi:regress  (quantization auto: uint8 (-75% weights vs float32))"
    )
    planned = json.loads(run_cli("plan", "--json", cwd=manifest.parent, check=True).stdout)
    schema("build-report.schema.json").validate(planned)
    assert planned["signatures"][0]["quantization_choice"]["chosen"] == "uint8"
    # The choice depends on the tolerance: a new one chooses again, and the plan says why.
    manifest.write_text(manifest.read_text().replace("atol: 0.05", "atol: 0.0001"))
    (item,) = tfjsbuild.plan([manifest]).items
    assert (item.action, item.reasons) == (
        "build",
        (AUTO_CHOOSES_AGAIN, "verification changed: backends.auto.atol"),
    )
    stricter = tfjsbuild.build([manifest], jobs=1)
    assert [r.status for r in stricter.results] == ["built"]
    rechosen = record(manifest, "multi:regress").quantization_choice
    assert rechosen is not None and rechosen.chosen == "uint16"
    # Back to the first tolerance: the cache holds that choice, restored with what it chose.
    manifest.write_text(manifest.read_text().replace("atol: 0.0001", "atol: 0.05"))
    restored = tfjsbuild.build([manifest], jobs=1)
    assert [(r.status, r.cache) for r in restored.results] == [("restored", "local")]
    assert restored.results[0].quantization == built.quantization_choice
    after = record(manifest, "multi:regress")
    assert after.quantization_choice == built.quantization_choice
    assert after.content_hash == built.content_hash


def test_auto_needs_verification(
    project: Callable[..., Path], model_store: Callable[..., Path]
) -> None:
    manifest = project(
        "version: 1\nmodels:\n  wide:\n    saved_model: wide\n    quantization: auto\n",
        {"wide": model_store("wide")},
    )
    done = run_cli("run", "--no-verify", cwd=manifest.parent)
    assert done.returncode == 1
    assert (
        "✗ wide:serving_default failed: quantization: auto chooses the smallest quantization "
        "that passes verification, and --no-verify turns verification off; run without "
        "--no-verify, or give dtype -> weight globs"
    ) in done.stdout
    assert not (manifest.parent / "dist/wide").exists()
    with pytest.raises(UsageError, match="quantization='auto' chooses by verifying"):
        tfjsbuild.convert_concrete_function(None, manifest.parent / "out", quantization="auto")


def test_auto_fails_as_verification_does_when_nothing_passes(
    project: Callable[..., Path], model_store: Callable[..., Path]
) -> None:
    manifest = project(
        """
        version: 1
        models:
          multi:
            saved_model: multi
            quantization: auto
            verify: {atol: 0, rtol: 0}
            signatures: [classify]
        """,
        {"multi": model_store("multihead")},
    )
    done = run_cli("run", "--json", cwd=manifest.parent)
    assert done.returncode == 1
    (failed,) = json.loads(done.stdout)["signatures"]
    assert failed["status"] == "failed"
    assert failed["error"].startswith(
        "TensorFlow.js (wasm backend) does not match TensorFlow: output '"
    )
    assert "The previous output is kept." in failed["error"]
    choice = failed["quantization_choice"]
    assert choice["chosen"] is None and choice["weight_bytes"] is None
    # Steps of any size exceed atol 0; float16 and float32 are verified, and both fail (the
    # softmax of TF.js differs from TensorFlow's in the last bits).
    assert [(c["setting"], c["outcome"]) for c in choice["candidates"]] == [
        ("uint8", "skipped"),
        ("uint16", "skipped"),
        ("float16", "failed"),
        ("float32", "failed"),
    ]
    assert failed["verification"]["passed"] is False
    assert list((manifest.parent / "dist").rglob("*")) == []  # no candidate left behind
    state, _ = load_state(manifest.parent / STATE)
    assert state.records == {}


def test_explicit_quantization_warns_about_weights_it_cannot_hold(
    project: Callable[..., Path], model_store: Callable[..., Path]
) -> None:
    manifest = project(
        """
        version: 1
        models:
          huge:
            saved_model: huge
            quantization: {float16: ["*"]}
            verify: {atol: 0.01}
          coarse:
            saved_model: wide
            quantization: {uint8: ["*"]}
            verify: {atol: 0.5, rtol: 0.5}
        """,
        {"huge": model_store("wide", big=1.0e5), "wide": model_store("wide")},
    )
    done = run_cli("run", "-j", "1", "--json", cwd=manifest.parent)
    assert done.returncode == 1
    float16 = (
        f"1 weight may not survive float16 quantization: '{WEIGHT}' ranges over "
        "[-0.009955, 1e+05], beyond float16's largest value 65504; under float16 it becomes "
        "infinite; keep it float32 (leave it out of quantization.float16) or quantize it to uint16"
    )
    assert f"warning: huge:serving_default: {float16}\n" in done.stderr
    payload = json.loads(done.stdout)
    schema("build-report.schema.json").validate(payload)
    by_key = {f"{s['model']}:{s['signature']}": s for s in payload["signatures"]}
    assert by_key["huge:serving_default"]["warnings"] == [float16]
    assert by_key["huge:serving_default"]["status"] == "failed"  # infinite in TF.js: as warned
    # uint8 rounds by up to 0.2, within atol 0.5: no warning, and it verifies.
    assert by_key["coarse:serving_default"]["warnings"] == []
    assert by_key["coarse:serving_default"]["status"] == "built"
    assert by_key["coarse:serving_default"]["quantization_choice"] is None


def test_range_check_wording() -> None:
    ranges = [
        WeightRange("small", -0.01, 0.01),
        WeightRange("wide", -2.0, 3.0),
        WeightRange("wider", -100.0, 7.0e4),
    ]
    problems = range_problems(ranges, dict.fromkeys(["small", "wide", "wider"], "uint8"), 1e-3)
    assert problems == {
        "uint8": [
            "'wider' ranges over [-100, 7e+04]: uint8 rounds it by up to 1.4e+02, more than "
            "verify.atol 0.001",
            "'wide' ranges over [-2, 3]: uint8 rounds it by up to 0.0098, more than verify.atol "
            "0.001",
        ]
    }
    assert range_warnings(problems) == [
        "2 weights may not survive uint8 quantization: "
        "'wider' ranges over [-100, 7e+04]: uint8 rounds it by up to 1.4e+02, more than "
        "verify.atol 0.001; "
        "'wide' ranges over [-2, 3]: uint8 rounds it by up to 0.0098, more than verify.atol "
        "0.001; "
        "quantize it to uint16 or float16 (or leave it out of quantization.uint8), or raise "
        "verify.atol"
    ]
    # float16: only the range matters; without a tolerance (verification off), only float16.
    assert range_problems(ranges, {"wider": "float16", "wide": "uint8"}, None) == {
        "float16": ["'wider' ranges over [-100, 7e+04], beyond float16's largest value 65504"]
    }


def test_choice_round_trips_through_json() -> None:
    choice = QuantizationChoice(
        "uint16",
        512,
        (
            CandidateRecord("uint8", "failed", 128, float("inf"), "output 'y' differs"),
            CandidateRecord("uint16", "passed", 256, 1.5e-5),
            CandidateRecord("float16", "not tried"),
            CandidateRecord("float32", "not tried"),
        ),
    )
    written = json.loads(json.dumps(choice.to_json_dict(), allow_nan=False))
    assert written["candidates"][0]["max_abs_error"] == "Infinity"
    assert choice_from_json(written, "choice") == choice
    assert choice.summary() == "uint16 (-50% weights vs float32)"
    # Nothing float32 to quantize (a lookup table's strings): uint8 passes and saves nothing.
    nothing = QuantizationChoice("uint8", 38, (CandidateRecord("uint8", "passed", 38, 0.0),))
    assert nothing.summary() == "uint8 (no smaller than float32: nothing to quantize)"
