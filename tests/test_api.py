"""End-to-end builds through the Python API: real SavedModels, real conversions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import tfjsbuild
from conftest import run_tfjs
from savedmodels import run_signature
from tfjsbuild.errors import LockHeldError
from tfjsbuild.stores.lock import BuildLock
from tfjsbuild.stores.state import load_state

pytestmark = pytest.mark.slow

MULTIHEAD = """
version: 1
output_dir: web
models:
  multi:
    saved_model: multi
"""


def statuses(result: tfjsbuild.BuildResult) -> dict[str, str]:
    return {r.item.key: r.status for r in result.results}


def reasons(manifest: Path) -> dict[str, tuple[str, ...]]:
    return {item.key: item.reasons for item in tfjsbuild.plan([manifest]).items}


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Relative path -> (inode, mtime): proves a file was not rewritten."""
    return {
        p.relative_to(folder).as_posix(): (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def multihead(project: Callable[..., Path], model_store: Callable[..., Path]) -> Path:
    return project(MULTIHEAD, {"multi": model_store("multihead")})


def test_first_build_converts_every_signature_faithfully(multihead: Path) -> None:
    root = multihead.parent
    result = tfjsbuild.build([multihead], jobs=2)
    assert statuses(result) == {
        "multi:classify": "built",
        "multi:features": "built",
        "multi:regress": "built",
    }
    assert result.ok

    for signature in ("classify", "features", "regress"):
        files = sorted(p.name for p in (root / "web/multi" / signature).iterdir())
        assert files == ["group1-shard1of1.bin", "model.json"]
    # No staging folder is left behind, and the state names every output it wrote.
    # The local cache is shared by the folder's manifests; the state is the manifest's own.
    assert sorted(p.name for p in (root / ".tfjs-build").iterdir()) == ["cache", "manifests"]
    assert sorted(p.name for p in (root / ".tfjs-build/manifests").iterdir()) == ["tfjs-build.yaml"]
    assert sorted(p.name for p in (root / ".tfjs-build/manifests/tfjs-build.yaml").iterdir()) == [
        "lock",
        "state.json",
        "worker.log",
    ]
    state, warnings = load_state(root / ".tfjs-build/manifests/tfjs-build.yaml")
    assert warnings == []
    assert sorted(state.records) == ["multi:classify", "multi:features", "multi:regress"]

    # The outputs run in TensorFlow.js and answer like TensorFlow, output by output, by name.
    x = np.random.RandomState(0).uniform(-1, 1, [3, 8]).astype("float32")
    for signature in ("classify", "features", "regress"):
        expected = run_signature(root / "multi", signature, {"x": x})
        got = run_tfjs(root / "web/multi" / signature, {"x": x})
        assert sorted(got) == sorted(expected)
        for key in expected:
            np.testing.assert_allclose(got[key], expected[key], rtol=1e-5, atol=1e-5)

    model_json = json.loads((root / "web/multi/classify/model.json").read_text())
    assert sorted(model_json["signature"]["outputs"]) == ["logits", "probs"]

    index = json.loads((root / "web/tfjs-build.json").read_text())
    classify = index["models"]["multi"]["classify"]
    assert classify["path"] == "multi/classify/model.json"
    assert classify["inputs"] == [{"name": "x", "dtype": "float32", "shape": [None, 8]}]
    assert classify["outputs"] == [
        {"name": "logits", "dtype": "float32", "shape": [None, 4]},
        {"name": "probs", "dtype": "float32", "shape": [None, 4]},
    ]
    assert classify["bytes"] == sum(
        p.stat().st_size for p in (root / "web/multi/classify").iterdir()
    )
    assert classify["hash"] == state.records["multi:classify"].content_hash


def test_unchanged_build_does_nothing_and_imports_no_tensorflow(multihead: Path) -> None:
    tfjsbuild.build([multihead], jobs=1)
    before = snapshot(multihead.parent / "web")
    script = (
        "import sys, tfjsbuild\n"
        f"result = tfjsbuild.build([{str(multihead)!r}])\n"
        "print(sorted({r.status for r in result.results}), 'tensorflow' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "['up-to-date'] False"
    assert snapshot(multihead.parent / "web") == before


def test_changing_one_signatures_options_rebuilds_only_that_signature(multihead: Path) -> None:
    tfjsbuild.build([multihead], jobs=1)
    root = multihead.parent
    untouched = snapshot(root / "web/multi/features") | snapshot(root / "web/multi/classify")
    multihead.write_text(
        MULTIHEAD.replace(
            "    saved_model: multi",
            "    saved_model: multi\n    signatures:\n"
            "      features: {}\n      classify: {}\n      regress:\n        quantization: {uint8: ['*']}"
            # uint8 weights are 4x smaller and less precise: allow for it in TF.js.
            "\n        verify: {atol: 0.5, rtol: 0.1}",
        )
    )
    assert reasons(multihead) == {
        "multi:features": (),
        "multi:classify": (),
        "multi:regress": (
            "options changed: quantization.uint8",
            "verification changed: backends.auto.atol, backends.auto.rtol",
        ),
    }
    result = tfjsbuild.build([multihead], jobs=1)
    assert statuses(result) == {
        "multi:features": "up-to-date",
        "multi:classify": "up-to-date",
        "multi:regress": "built",
    }
    assert (
        snapshot(root / "web/multi/features") | snapshot(root / "web/multi/classify") == untouched
    )
    weights = json.loads((root / "web/multi/regress/model.json").read_text())["weightsManifest"][0][
        "weights"
    ]
    assert {w.get("quantization", {}).get("dtype") for w in weights} == {"uint8"}


def test_stale_shards_never_survive_a_rebuild(multihead: Path) -> None:
    multihead.write_text(MULTIHEAD + "    weight_shard_size_bytes: 128\n")
    tfjsbuild.build([multihead], jobs=1)
    features = multihead.parent / "web/multi/features"
    assert len(list(features.glob("*.bin"))) == 4  # 8x16 float32 backbone = 512 bytes
    multihead.write_text(MULTIHEAD)
    assert reasons(multihead)["multi:features"] == ("options changed: weight_shard_size_bytes",)
    tfjsbuild.build([multihead], jobs=1)
    assert sorted(p.name for p in features.iterdir()) == ["group1-shard1of1.bin", "model.json"]


def test_output_missing_or_modified_is_rebuilt(multihead: Path) -> None:
    tfjsbuild.build([multihead], jobs=1)
    web = multihead.parent / "web/multi"
    (web / "features/group1-shard1of1.bin").unlink()
    with (web / "regress/model.json").open("a") as handle:
        handle.write(" ")
    (web / "classify/group1-shard2of2.bin").write_bytes(b"stale")
    assert reasons(multihead) == {
        "multi:classify": (
            "output modified: unexpected file web/multi/classify/group1-shard2of2.bin",
        ),
        "multi:features": ("output missing: web/multi/features/group1-shard1of1.bin",),
        "multi:regress": ("output modified: web/multi/regress/model.json",),
    }
    # The cache holds what was built: the outputs are restored, not converted again.
    result = tfjsbuild.build([multihead], jobs=1)
    assert set(statuses(result).values()) == {"restored"}
    assert not (web / "classify/group1-shard2of2.bin").exists()
    assert set(reasons(multihead).values()) == {()}
    # Without a cache they are converted again.
    (web / "features/group1-shard1of1.bin").unlink()
    result = tfjsbuild.build([multihead], jobs=1, cache="off")
    assert statuses(result) == {
        "multi:classify": "up-to-date",
        "multi:features": "built",
        "multi:regress": "up-to-date",
    }


def test_force_rebuilds_everything(multihead: Path) -> None:
    tfjsbuild.build([multihead], jobs=1)
    assert {item.reasons for item in tfjsbuild.plan([multihead], force=True).items} == {("forced",)}
    result = tfjsbuild.build([multihead], jobs=1, force=True, selection=["multi:regress"])
    assert statuses(result) == {"multi:regress": "built"}


def test_retrained_head_rebuilds_only_its_signature(
    multihead: Path, model_store: Callable[..., Path], project: Callable[..., Path]
) -> None:
    tfjsbuild.build([multihead], jobs=1)
    project(MULTIHEAD, {"multi": model_store("multihead", head_b_seed=30)})
    assert reasons(multihead) == {
        "multi:classify": (),
        "multi:features": (),
        "multi:regress": ("weights changed: head_b",),
    }


def test_one_failing_signature_does_not_stop_the_others(
    project: Callable[..., Path], model_store: Callable[..., Path]
) -> None:
    manifest = project(
        "version: 1\nmodels:\n  m:\n    saved_model: m\n    signatures: [bad, good]\n",
        {"m": model_store("with_unsupported")},
    )
    result = tfjsbuild.build([manifest], jobs=1)
    assert statuses(result) == {"m:bad": "failed", "m:good": "built"}
    assert not result.ok
    assert result.failed[0].error == "Unsupported Ops in the model before optimization: Lgamma"
    assert not (manifest.parent / "dist/m/bad").exists()
    # The failure is retried on the next run; the success is not redone.
    assert reasons(manifest) == {"m:bad": ("first build",), "m:good": ()}


def test_a_table_tensorflow_js_cannot_initialise_fails_clearly(
    project: Callable[..., Path], model_store: Callable[..., Path]
) -> None:
    manifest = project(
        "version: 1\nmodels:\n  m:\n    saved_model: m\n", {"m": model_store("vocab")}
    )
    result = tfjsbuild.build([manifest], jobs=1)
    assert statuses(result) == {"m:encode": "failed", "m:score": "built"}
    assert result.failed[0].error == (
        "Unsupported Ops in the model's resource initializer: InitializeTableFromTextFileV2 "
        "(TensorFlow.js cannot run them; e.g. initialise lookup tables from tensors with "
        "tf.lookup.KeyValueTensorInitializer instead of a vocabulary file)"
    )


def test_a_lookup_table_runs_in_tensorflow_js_and_only_where_used(
    project: Callable[..., Path], model_store: Callable[..., Path]
) -> None:
    manifest = project(
        "version: 1\nmodels:\n  m:\n    saved_model: m\n", {"m": model_store("table")}
    )
    result = tfjsbuild.build([manifest], jobs=1)
    assert statuses(result) == {"m:encode": "built", "m:score": "built"}
    out = manifest.parent / "dist/m"
    ids = run_tfjs(out / "encode", {"words": np.array(["dog", "zebra", "cat"])})
    assert ids["ids"].tolist() == [2, 0, 1]
    # The table's initializer goes only into the signature that uses the table.
    assert "modelInitializer" in json.loads((out / "encode/model.json").read_text())
    assert "modelInitializer" not in json.loads((out / "score/model.json").read_text())
    x = np.ones([1, 8], dtype="float32")
    np.testing.assert_allclose(
        run_tfjs(out / "score", {"x": x})["score"],
        run_signature(manifest.parent / "m", "score", {"x": x})["score"],
        rtol=1e-5,
    )


def test_failed_rebuild_keeps_the_previous_output_and_state(multihead: Path) -> None:
    tfjsbuild.build([multihead], jobs=1)
    root = multihead.parent
    before = snapshot(root / "web")
    state_before = (root / ".tfjs-build/manifests/tfjs-build.yaml/state.json").read_text()
    # Two different globs matching one node: only the converter can find that out.
    multihead.write_text(MULTIHEAD + "    quantization: {float16: ['?*'], uint8: ['*?']}\n")
    result = tfjsbuild.build([multihead], jobs=1)
    assert statuses(result) == {
        "multi:classify": "failed",
        "multi:features": "failed",
        "multi:regress": "failed",
    }
    assert "match the same node" in (result.failed[0].error or "")
    assert snapshot(root / "web") == before
    assert (root / ".tfjs-build/manifests/tfjs-build.yaml/state.json").read_text() == state_before


def test_removed_signatures_are_pruned_and_nothing_else(multihead: Path) -> None:
    tfjsbuild.build([multihead], jobs=1)
    web = multihead.parent / "web"
    (web / "README.txt").write_text("mine")
    (web / "multi/notes.txt").write_text("mine too")
    multihead.write_text(MULTIHEAD + "    signatures: [features]\n")
    plan = {item.key: (item.action, item.reasons) for item in tfjsbuild.plan([multihead]).items}
    assert plan == {
        "multi:features": ("up-to-date", ()),
        "multi:classify": ("remove", ("removed from the manifest",)),
        "multi:regress": ("remove", ("removed from the manifest",)),
    }
    result = tfjsbuild.build([multihead], jobs=1)
    assert statuses(result) == {
        "multi:features": "up-to-date",
        "multi:classify": "removed",
        "multi:regress": "removed",
    }
    assert sorted(p.relative_to(web).as_posix() for p in web.rglob("*")) == [
        "README.txt",
        "multi",
        "multi/features",
        "multi/features/group1-shard1of1.bin",
        "multi/features/model.json",
        "multi/notes.txt",
        "tfjs-build.d.ts",
        "tfjs-build.js",
        "tfjs-build.json",
    ]
    assert list(json.loads((web / "tfjs-build.json").read_text())["models"]["multi"]) == [
        "features"
    ]


def test_missing_signature_is_located_and_blocks_only_itself(
    project: Callable[..., Path], model_store: Callable[..., Path]
) -> None:
    manifest = project(
        "version: 1\nmodels:\n  multi:\n    saved_model: multi\n    signatures: [features, regres]\n",
        {"multi": model_store("multihead")},
    )
    result = tfjsbuild.build([manifest], jobs=1)
    assert statuses(result) == {"multi:regres": "failed", "multi:features": "built"}
    source = (manifest.parent / "multi").resolve()
    assert result.failed[0].error == (
        f"{manifest}:5:28: models.multi.signatures[1]: signature 'regres' is not in {source} "
        "(it has: classify, features, regress); did you mean 'regress'?\n"
        "    5 |     signatures: [features, regres]\n"
        "      |                            ^"
    )


def test_a_second_build_refuses_while_the_lock_is_held(multihead: Path) -> None:
    with (
        BuildLock(multihead.parent / ".tfjs-build/manifests/tfjs-build.yaml"),
        pytest.raises(LockHeldError) as caught,
    ):
        tfjsbuild.build([multihead])
    assert f"pid {os.getpid()} since" in str(caught.value)
    assert not (multihead.parent / "web").exists()


def test_corrupt_state_means_a_full_rebuild_with_a_warning(multihead: Path) -> None:
    tfjsbuild.build([multihead], jobs=1)
    state_file = multihead.parent / ".tfjs-build/manifests/tfjs-build.yaml/state.json"
    state_file.write_text("{ not json")
    result = tfjsbuild.build([multihead], jobs=1)
    assert set(statuses(result).values()) == {"restored"}  # from the cache, not reconverted
    assert result.warnings[0].startswith(f"{state_file} is unreadable (not JSON")
    assert json.loads(state_file.read_text())["version"] == 1


def test_several_manifests_build_as_one_plan(
    tmp_path: Path, model_store: Callable[..., Path], project: Callable[..., Path]
) -> None:
    import shutil

    for name in ("app-a", "app-b"):
        (tmp_path / name).mkdir()
        shutil.copytree(model_store("multihead"), tmp_path / name / "multi")
        (tmp_path / name / "tfjs-build.yaml").write_text(MULTIHEAD + "    signatures: [regress]\n")
    result = tfjsbuild.build(all_dirs=[tmp_path], jobs=2)
    assert sorted((str(r.item.manifest.parent.name), r.status) for r in result.results) == [
        ("app-a", "built"),
        ("app-b", "built"),
    ]
    # A manifest copied into an output folder is not a source (--all skips it).
    shutil.copy(tmp_path / "app-a/tfjs-build.yaml", tmp_path / "app-a/web/tfjs-build.yaml")
    assert len(tfjsbuild.plan(all_dirs=[tmp_path]).manifests) == 2


def test_convert_concrete_function_writes_a_loadable_model(tmp_path: Path) -> None:
    import tensorflow as tf

    w = tf.constant(np.arange(8, dtype="float32").reshape(8, 1))

    @tf.function(input_signature=[tf.TensorSpec([None, 8], tf.float32, name="x")])
    def predict(x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"score": tf.matmul(x, w), "double": tf.matmul(x, w) * 2.0}

    out = tmp_path / "out"
    (out).mkdir()
    (out / "group1-shard9of9.bin").write_bytes(b"stale")
    described = tfjsbuild.convert_concrete_function(predict, out, weight_shard_size_bytes=1024)
    assert sorted(f.path for f in described.files) == ["group1-shard1of1.bin", "model.json"]
    assert sorted(p.name for p in out.iterdir()) == ["group1-shard1of1.bin", "model.json"]
    x = np.ones([2, 8], dtype="float32")
    got = run_tfjs(out, {"x": x})
    np.testing.assert_allclose(got["score"], [[28.0], [28.0]])
    np.testing.assert_allclose(got["double"], [[56.0], [56.0]])

    @tf.function
    def no_signature(x: tf.Tensor) -> tf.Tensor:
        return x

    with pytest.raises(Exception, match="needs an input_signature"):
        tfjsbuild.convert_concrete_function(no_signature, tmp_path / "other")
    with pytest.raises(Exception, match="invalid converter option quantization"):
        tfjsbuild.convert_concrete_function(
            predict, tmp_path / "other", quantization={"int8": ["*"]}
        )
    assert not (tmp_path / "other").exists()


@pytest.mark.slow
def test_fused_activations_tensorflow_js_lacks_are_refused(tmp_path: Path) -> None:
    """With oneDNN on, grappler fuses Tanh into _FusedMatMul; TF.js fails on it at run time."""
    script = (
        "import os, sys\n"
        "os.environ['TF_ENABLE_ONEDNN_OPTS'] = sys.argv[2]\n"
        "import tensorflow as tf, tfjsbuild\n"
        "w = tf.Variable(tf.ones([8, 4]))\n"
        "b = tf.Variable(tf.ones([4]))\n"
        "f = tf.function(lambda x: {'y': tf.tanh(tf.matmul(x, w) + b)},\n"
        "                input_signature=[tf.TensorSpec([None, 8], tf.float32, name='x')])\n"
        "print('converting', file=sys.stderr, flush=True)\n"
        "try:\n"
        "    tfjsbuild.convert_concrete_function(f, sys.argv[1])\n"
        "except Exception as error:\n"
        "    print(type(error).__name__, error)\n"
    )
    fused = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "fused"), "1"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert fused.stdout.startswith("ConversionError node Tanh fuses Tanh into _FusedMatMul")
    assert "which TensorFlow.js cannot run" in fused.stdout
    assert "set TF_ENABLE_ONEDNN_OPTS=0 before importing TensorFlow" in fused.stdout
    assert not (tmp_path / "fused").exists()

    plain = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "plain"), "0"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert plain.stdout == ""
    # TensorFlow's C++ lines while converting (cuInit, grappler's session) stay off the terminal.
    assert plain.stderr.endswith("converting\n"), plain.stderr
    x = np.linspace(-1, 1, 16, dtype="float32").reshape(2, 8)
    np.testing.assert_allclose(
        run_tfjs(tmp_path / "plain", {"x": x})["y"], np.tanh(x @ np.ones([8, 4]) + 1), rtol=1e-5
    )


def test_signatures_trading_output_folders_keep_both(multihead: Path) -> None:
    swapped = "    signatures:\n      features: {output: one}\n      regress: {output: two}\n"
    multihead.write_text(MULTIHEAD + swapped)
    tfjsbuild.build([multihead], jobs=1)
    multihead.write_text(
        MULTIHEAD + swapped.replace("one", "tmp").replace("two", "one").replace("tmp", "two")
    )
    assert tfjsbuild.build([multihead], jobs=1).ok
    web = multihead.parent / "web"

    def output_keys(folder: str) -> list[str]:
        return sorted(json.loads((web / folder / "model.json").read_text())["signature"]["outputs"])

    assert (output_keys("one"), output_keys("two")) == (["value"], ["features"])
    assert set(reasons(multihead).values()) == {()}


def test_a_tf1_saved_model_builds_with_a_whole_model_fingerprint(
    project: Callable[..., Path], model_store: Callable[..., Path]
) -> None:
    manifest = project(
        "version: 1\nmodels:\n  old:\n    saved_model: old\n", {"old": model_store("tf1")}
    )
    result = tfjsbuild.build([manifest], jobs=1)
    assert statuses(result) == {"old:serving_default": "built"}, result.failed
    x = np.ones([2, 8], dtype="float32")
    expected = run_signature(manifest.parent / "old", "serving_default", {"x": x})
    got = run_tfjs(manifest.parent / "dist/old/serving_default", {"x": x})
    np.testing.assert_allclose(got["y"], expected["y"], rtol=1e-5)
    project(
        "version: 1\nmodels:\n  old:\n    saved_model: old\n", {"old": model_store("tf1", seed=9)}
    )
    assert reasons(manifest) == {
        "old:serving_default": (
            "source changed (whole-model fingerprint: a TF1 SavedModel without an object graph)",
        )
    }
