"""keras: and python: sources, built end to end and checked against the original model."""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

import tfjsbuild
from conftest import export_fresh, run_tfjs
from tfjsbuild.stores.state import load_state

pytestmark = pytest.mark.slow

X = np.random.RandomState(7).uniform(-1, 1, [3, 8]).astype("float32")

KERAS_MANIFEST = """
version: 1
models:
  heads:
    keras: models/heads.keras
  small:
    keras: models/small.h5
  small_layers:
    keras: models/small.h5
    format: layers_model
  tfkeras:
    keras: models/tfkeras
    signatures: [classify, regress]
  tfkeras_layers:
    keras: models/tfkeras
    format: layers_model
"""

NET_MODULE = """
import numpy as np
import tensorflow as tf

SCALE = 1.0


class Net(tf.Module):
    def __init__(self):
        super().__init__()
        weights = np.random.RandomState(3).uniform(-1, 1, [8, 2]).astype("float32")
        self.w = tf.Variable(weights * SCALE, name="w")

    @tf.function(input_signature=[tf.TensorSpec([None, 8], tf.float32, name="x")])
    def score(self, x):
        return {"score": tf.matmul(x, self.w)}

    @tf.function(input_signature=[tf.TensorSpec([None, 8], tf.float32, name="x")])
    def top(self, x):
        return {"top": tf.argmax(tf.matmul(x, self.w), axis=1, output_type=tf.int32)}


def build():
    return Net()


NET = Net()  # owns the variables of the functions below for as long as they are used


def functions():
    spec = tf.TensorSpec([None, 8], tf.float32, name="x")
    return {
        "double": tf.function(lambda x: {"y": x * 2.0}, input_signature=[spec]),
        "score": NET.score.get_concrete_function(),
    }


def dangling():
    net = Net()  # dropped on return: its variables go with it
    return {"score": net.score.get_concrete_function()}


def keras_model():
    import keras

    inputs = keras.Input((8,), name="x")
    hidden = keras.layers.Dense(4, activation="tanh", name="hidden")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(hidden))
    for layer in model.layers[1:]:
        model.get_layer(layer.name).set_weights(
            [np.full(w.shape, 0.1 * (i + 1), "float32") for i, w in enumerate(layer.get_weights())]
        )
    return model


def broken():
    raise ValueError("no checkpoint found")


def wrong():
    return 42
"""

PYTHON_MANIFEST = """
version: 1
models:
  net:
    python: models.net:build
    signatures: [score, top]
  functions:
    python: models.net:functions
    signatures: [double, score]
  kmodel:
    python: models.net:keras_model
    signatures: [serving_default]
  tables:
    python: models.data:build
    inputs: [models/data.py, data/*.json]
    signatures: [lookup]
"""

DATA_MODULE = """
import json
from pathlib import Path

import tensorflow as tf

HERE = Path(__file__).parent


class Lookup(tf.Module):
    def __init__(self, scale):
        super().__init__()
        self.scale = tf.constant(scale, tf.float32)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
    def lookup(self, x):
        return {"y": x * self.scale}


def build():
    return Lookup(json.loads((HERE.parent / "data" / "scale.json").read_text())["scale"])
"""


def statuses(result: tfjsbuild.BuildResult) -> dict[str, str]:
    return {r.item.key: r.status for r in result.results}


def model_json(root: Path, model: str, signature: str) -> dict[str, object]:
    return dict(json.loads((root / "dist" / model / signature / "model.json").read_text()))


@pytest.fixture
def keras_project(project: Callable[..., Path], model_store: Callable[..., Path]) -> Path:
    return project(
        KERAS_MANIFEST,
        {
            "models/heads.keras": model_store("keras_file"),
            "models/small.h5": model_store("keras_h5"),
            "models/tfkeras": model_store("tf_keras"),
        },
    )


@pytest.fixture
def python_project(tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "__init__.py").write_text("")
    (tmp_path / "models" / "net.py").write_text(textwrap.dedent(NET_MODULE))
    (tmp_path / "models" / "data.py").write_text(textwrap.dedent(DATA_MODULE))
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "scale.json").write_text('{"scale": 3.0}')
    (tmp_path / "data" / "notes.txt").write_text("not an input")
    manifest = tmp_path / "tfjs-build.yaml"
    manifest.write_text(textwrap.dedent(PYTHON_MANIFEST).lstrip())
    sys.path.insert(0, str(tmp_path))
    yield manifest
    sys.path.remove(str(tmp_path))
    for name in [m for m in sys.modules if m == "models" or m.startswith("models.")]:
        del sys.modules[name]


def test_keras_files_and_folders_convert_faithfully(keras_project: Path) -> None:
    import keras
    import tf_keras

    root = keras_project.parent
    result = tfjsbuild.build([keras_project], jobs=2)
    assert result.ok, [r.error for r in result.failed]
    assert statuses(result) == {
        "heads:serving_default": "built",
        "small:serving_default": "built",
        "small_layers:serving_default": "built",
        "tfkeras:classify": "built",
        "tfkeras:regress": "built",
        "tfkeras_layers:serving_default": "built",
    }

    # Keras 3 .keras: the graph model answers like Keras itself, output by output.
    heads = keras.saving.load_model(root / "models/heads.keras")
    expected = heads.predict(X, verbose=0)
    got = run_tfjs(root / "dist/heads/serving_default", {"x": X})
    assert sorted(got) == ["output_0", "output_1", "output_2"]
    for index, value in enumerate(expected):
        np.testing.assert_allclose(got[f"output_{index}"], value, rtol=1e-5, atol=1e-5)

    # tf.keras .h5 (with tanh, which oneDNN would fuse into an op TF.js lacks): both formats.
    small = tf_keras.models.load_model(root / "models/small.h5", compile=False)
    expected_small = small.predict(X, verbose=0)
    graph = run_tfjs(root / "dist/small/serving_default", {"x": X})
    np.testing.assert_allclose(graph["probs"], expected_small, rtol=1e-5, atol=1e-6)
    assert model_json(root, "small_layers", "serving_default")["format"] == "layers-model"
    layers = run_tfjs(root / "dist/small_layers/serving_default", {"x": X})
    np.testing.assert_allclose(layers["probs"], expected_small, rtol=1e-5, atol=1e-6)

    # A tf.keras SavedModel folder: its own signatures, and the whole model as layers.
    tfkeras = tf_keras.models.load_model(root / "models/tfkeras", compile=False)
    _, logits, value = tfkeras.predict(X, verbose=0)
    classify = run_tfjs(root / "dist/tfkeras/classify", {"x": X})
    np.testing.assert_allclose(classify["logits"], logits, rtol=1e-5, atol=1e-5)
    regress = run_tfjs(root / "dist/tfkeras/regress", {"x": X})
    np.testing.assert_allclose(regress["value"], value, rtol=1e-5, atol=1e-5)
    whole = run_tfjs(root / "dist/tfkeras_layers/serving_default", {"x": X})
    np.testing.assert_allclose(whole["head_a"], logits, rtol=1e-5, atol=1e-5)

    # A folder is fingerprinted per signature from its graph; a file by its content.
    state, _ = load_state(root / ".tfjs-build/manifests/tfjs-build.yaml")
    assert state.records["tfkeras:classify"].parts["source_kind"] == "graph"
    assert state.records["heads:serving_default"].parts["source_kind"] == "keras-content"
    assert "keras=" in state.records["heads:serving_default"].parts["tools"]


def test_keras_sources_rebuild_only_on_their_own_change(keras_project: Path) -> None:
    root = keras_project.parent
    # Saved by a new process, as a training script would (Keras numbers its model names per
    # process, and the names are in the graph and the config).
    shutil.rmtree(root / "models/tfkeras")
    export_fresh("tf_keras", root / "models/tfkeras")
    export_fresh("keras_file", root / "models/heads.keras")
    assert tfjsbuild.build([keras_project], jobs=2).ok
    assert set(statuses(tfjsbuild.build([keras_project])).values()) == {"up-to-date"}

    # The same model saved again by a new process: Keras stamps the save time and Python
    # object ids into the archive, so the bytes differ, but nothing needs rebuilding.
    heads = root / "models/heads.keras"
    before = heads.read_bytes()
    export_fresh("keras_file", heads)
    assert heads.read_bytes() != before
    assert set(statuses(tfjsbuild.build([keras_project])).values()) == {"up-to-date"}

    # Retrained Keras 3 model: only its output is rebuilt, and it matches the new weights.
    export_fresh("keras_file", heads, head_a_seed=9)
    plan = {item.key: item.reasons for item in tfjsbuild.plan([keras_project]).items}
    assert plan["heads:serving_default"] == ("source changed",)
    result = tfjsbuild.build([keras_project], jobs=2)
    assert {k: v for k, v in statuses(result).items() if v != "up-to-date"} == {
        "heads:serving_default": "built"
    }
    import keras

    expected = keras.saving.load_model(heads).predict(X, verbose=0)[1]
    got = run_tfjs(root / "dist/heads/serving_default", {"x": X})["output_1"]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)

    # Head B retrained in the tf.keras folder: `regress` and the layers model rebuild,
    # `classify` does not.
    shutil.rmtree(root / "models/tfkeras")
    export_fresh("tf_keras", root / "models/tfkeras", head_b_seed=8)
    result = tfjsbuild.build([keras_project], jobs=2)
    assert {k: v for k, v in statuses(result).items() if v != "up-to-date"} == {
        "tfkeras:regress": "built",
        "tfkeras_layers:serving_default": "built",
    }


def test_python_sources_convert_faithfully(python_project: Path) -> None:
    root = python_project.parent
    result = tfjsbuild.build([python_project], jobs=2)
    assert result.ok, [r.error for r in result.failed]
    assert sorted(statuses(result)) == [
        "functions:double",
        "functions:score",
        "kmodel:serving_default",
        "net:score",
        "net:top",
        "tables:lookup",
    ]
    net = importlib.import_module("models.net")
    module = net.build()
    np.testing.assert_allclose(
        run_tfjs(root / "dist/net/score", {"x": X})["score"],
        module.score(X)["score"].numpy(),
        rtol=1e-5,
        atol=1e-6,
    )
    np.testing.assert_array_equal(
        run_tfjs(root / "dist/net/top", {"x": X})["top"], module.top(X)["top"].numpy()
    )
    np.testing.assert_allclose(run_tfjs(root / "dist/functions/double", {"x": X})["y"], X * 2)
    np.testing.assert_allclose(
        run_tfjs(root / "dist/functions/score", {"x": X})["score"],
        module.score(X)["score"].numpy(),
        rtol=1e-5,
        atol=1e-6,
    )
    keras_model = net.keras_model()
    np.testing.assert_allclose(
        run_tfjs(root / "dist/kmodel/serving_default", {"x": X})["output_0"],
        keras_model.predict(X, verbose=0),
        rtol=1e-5,
        atol=1e-6,
    )
    x = np.array([1.0, -2.0], "float32")
    np.testing.assert_allclose(run_tfjs(root / "dist/tables/lookup", {"x": x})["y"], x * 3)


def test_python_sources_rebuild_when_their_inputs_change(python_project: Path) -> None:
    root = python_project.parent
    assert tfjsbuild.build([python_project], jobs=2).ok
    assert set(statuses(tfjsbuild.build([python_project])).values()) == {"up-to-date"}

    # Planning runs none of the user's code and imports no TensorFlow.
    script = (
        "import sys, tfjsbuild\n"
        f"result = tfjsbuild.build([{str(python_project)!r}])\n"
        "print(sorted({r.status for r in result.results}), 'tensorflow' in sys.modules,"
        " 'models.net' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=root
    )
    assert done.stdout.strip() == "['up-to-date'] False False"

    # A file outside every model's inputs changes: nothing rebuilds.
    (root / "data" / "notes.txt").write_text("edited")
    assert set(statuses(tfjsbuild.build([python_project])).values()) == {"up-to-date"}

    # A data file in `inputs` changes: only that model rebuilds, with the new value.
    (root / "data" / "scale.json").write_text('{"scale": 5.0}')
    result = tfjsbuild.build([python_project])
    assert {k: v for k, v in statuses(result).items() if v != "up-to-date"} == {
        "tables:lookup": "built"
    }
    x = np.array([1.0, -2.0], "float32")
    np.testing.assert_allclose(run_tfjs(root / "dist/tables/lookup", {"x": x})["y"], x * 5)

    # The module itself changes: the three models built from it rebuild, `tables` does not.
    net = root / "models" / "net.py"
    net.write_text(net.read_text().replace("SCALE = 1.0", "SCALE = 2.0"))
    plan = {item.key: item.reasons for item in tfjsbuild.plan([python_project]).items}
    assert plan["net:score"] == ("source changed",)
    assert plan["tables:lookup"] == ()
    result = tfjsbuild.build([python_project], jobs=2)
    assert {k: v for k, v in statuses(result).items() if v != "up-to-date"} == {
        "functions:double": "built",
        "functions:score": "built",
        "kmodel:serving_default": "built",
        "net:score": "built",
        "net:top": "built",
    }
    weights = np.random.RandomState(3).uniform(-1, 1, [8, 2]).astype("float32") * 2.0
    np.testing.assert_allclose(
        run_tfjs(root / "dist/net/score", {"x": X})["score"], X @ weights, rtol=1e-5, atol=1e-5
    )


def test_python_source_errors_are_located_and_the_rest_builds(
    python_project: Path, model_store: Callable[..., Path]
) -> None:
    root = python_project.parent
    shutil.copytree(model_store("multihead"), root / "multi")
    python_project.write_text(
        textwrap.dedent(
            """
            version: 1
            models:
              broken:
                python: models.net:broken
                signatures: [a]
              wrong:
                python: models.net:wrong
                signatures: [a]
              dangling:
                python: models.net:dangling
                signatures: [score]
              net:
                python: models.net:build
                signatures: [score, scores]
              multi:
                saved_model: multi
                signatures: [regress]
            """
        ).lstrip()
    )
    result = tfjsbuild.build([python_project], jobs=2)
    assert statuses(result) == {
        "broken:a": "failed",
        "wrong:a": "failed",
        "dangling:score": "failed",
        "net:score": "built",
        "net:scores": "failed",
        "multi:regress": "built",
    }
    errors = {r.item.key: r.error for r in result.failed}
    manifest = python_project
    lines = (root / "models" / "net.py").read_text().splitlines()
    raised = lines.index('    raise ValueError("no checkpoint found")') + 1
    assert errors["broken:a"] == (
        f"{manifest}:4:13: models.broken.python: calling models.net:broken() raised "
        f"ValueError: no checkpoint found (at models/net.py:{raised})\n"
        "    4 |     python: models.net:broken\n"
        "      |             ^"
    )
    assert errors["wrong:a"].startswith(
        f"{manifest}:7:13: models.wrong.python: models.net:wrong() returned builtins.int; "
        "expected a tf.Module with tf.functions, a Keras model, or a mapping "
        "{signature name: tf.function}\n"
    )
    assert errors["dangling:score"].startswith(
        f"{manifest}:11:18: models.dangling.signatures[0]: signature 'score' uses variables "
        "that were deleted with the object that owned them: keep that object alive (return "
        "the tf.Module itself, or keep it in a module-level variable)\n"
    )
    assert errors["net:scores"].startswith(
        f"{manifest}:14:25: models.net.signatures[1]: models.net:build() has no signature "
        "'scores' (it has: score, top)\n"
    )
