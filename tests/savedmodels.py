"""Small SavedModels made in code for the tests (no downloads). Imports TensorFlow."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf

X = tf.TensorSpec([None, 8], tf.float32, name="x")
# Models saved as one file need the suffix their Keras expects.
FILE_SUFFIXES = {"keras_file": ".keras", "keras_h5": ".h5"}


class MultiHead(tf.Module):
    """A shared backbone with heads A and B: signatures features, classify, regress.

    `classify` returns two outputs of the same dtype and shape (logits, probs): the case where
    tensorflowjs_converter 4.22 writes tensor names instead of the signature's keys.
    """

    def __init__(
        self, backbone_seed: int, head_a_seed: int, head_b_seed: int, regress_scale: float
    ) -> None:
        super().__init__()
        self.regress_scale = regress_scale
        self.backbone = tf.Variable(_weights(backbone_seed, [8, 16]), name="backbone")
        self.head_a = tf.Variable(_weights(head_a_seed, [16, 4]), name="head_a")
        self.head_b = tf.Variable(_weights(head_b_seed, [16, 1]), name="head_b")

    def _features(self, x: tf.Tensor) -> tf.Tensor:
        return tf.nn.relu(tf.matmul(x, self.backbone))

    @tf.function(input_signature=[X])
    def features(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"features": self._features(x)}

    @tf.function(input_signature=[X])
    def classify(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        logits = tf.matmul(self._features(x), self.head_a)
        return {"probs": tf.nn.softmax(logits), "logits": logits}

    @tf.function(input_signature=[X])
    def regress(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        value = tf.matmul(self._features(x), self.head_b)
        return {"value": value * self.regress_scale if self.regress_scale != 1.0 else value}


def _weights(seed: int, shape: list[int]) -> np.ndarray:
    return np.random.RandomState(seed).uniform(-1, 1, shape).astype("float32")


def save_multihead(
    path: Path,
    backbone_seed: int = 1,
    head_a_seed: int = 2,
    head_b_seed: int = 3,
    regress_scale: float = 1.0,
    trace_unrelated: bool = False,
) -> Path:
    if trace_unrelated:  # moves TensorFlow's global function and uid counters on
        for size in range(1, 6):
            tf.function(lambda t: tf.nn.relu(t) * 2.0).get_concrete_function(tf.TensorSpec([size]))
            tf.Variable(tf.zeros([size]))
    module = MultiHead(backbone_seed, head_a_seed, head_b_seed, regress_scale)
    signatures = {
        "features": module.features,
        "classify": module.classify,
        "regress": module.regress,
    }
    tf.saved_model.save(module, str(path), signatures=signatures)
    return path


class WithUnsupported(tf.Module):
    """`good` converts; `bad` uses lgamma, which TensorFlow.js has no kernel for."""

    def __init__(self) -> None:
        super().__init__()
        self.w = tf.Variable(_weights(7, [8, 2]), name="w")

    @tf.function(input_signature=[X])
    def good(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"y": tf.matmul(x, self.w)}

    @tf.function(input_signature=[X])
    def bad(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"y": tf.math.lgamma(tf.abs(tf.matmul(x, self.w)) + 1.0)}


def save_with_unsupported(path: Path) -> Path:
    module = WithUnsupported()
    tf.saved_model.save(module, str(path), signatures={"good": module.good, "bad": module.bad})
    return path


class WithEinsum(tf.Module):
    """Signatures TF.js's WebAssembly backend cannot run, and one it can: `mix` uses Einsum (as
    Keras MultiHeadAttention does), which it has no kernel for; `shifted` adds a scalar to a
    matmul, which TF.js fuses into a _FusedMatMul whose bias its WebAssembly kernel refuses
    (rank 0); `dense` is a plain matmul every backend runs."""

    def __init__(self) -> None:
        super().__init__()
        self.w = tf.Variable(_weights(8, [8, 3]), name="w")

    @tf.function(input_signature=[tf.TensorSpec([None, 4, 8], tf.float32, name="x")])
    def mix(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"y": tf.einsum("bij,jk->bik", x, self.w)}

    @tf.function(input_signature=[X])
    def shifted(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"y": tf.matmul(x, self.w) + 0.5}

    @tf.function(input_signature=[X])
    def dense(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"y": tf.matmul(x, self.w)}


def save_einsum(path: Path) -> Path:
    module = WithEinsum()
    signatures = {"mix": module.mix, "shifted": module.shifted, "dense": module.dense}
    tf.saved_model.save(module, str(path), signatures=signatures)
    return path


class MarkupNames(tf.Module):
    """One function exported under names rich would read as markup or emoji codes."""

    @tf.function(input_signature=[X])
    def double(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"y[/]z": x * 2.0}


def save_markup_names(path: Path) -> Path:
    module = MarkupNames()
    signatures = {"x[/]y": module.double, "[bold]:smile:": module.double}
    tf.saved_model.save(module, str(path), signatures=signatures)


class Named(tf.Module):
    """One function, exported under whatever signature names a test needs."""

    @tf.function(input_signature=[X])
    def double(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"y": x * 2.0}


def save_named(path: Path, names: str = "a,b") -> Path:
    """`names` comma-separated; TensorFlow takes any text, e.g. `../../x` (hostile to paths)."""
    module = Named()
    tf.saved_model.save(
        module, str(path), signatures={name: module.double for name in names.split(",")}
    )
    return path


class Deep(tf.Module):
    """Signatures with a few hundred ops each, so that one conversion takes a noticeable time."""

    def __init__(self, layers: int, seed: int) -> None:
        super().__init__()
        self.layers = [
            tf.Variable(_weights(seed + i, [8, 8]) * 0.3, name=f"w{i}") for i in range(layers)
        ]

    def _run(self, x: tf.Tensor, scale: float) -> tf.Tensor:
        for w in self.layers:
            x = tf.nn.tanh(tf.matmul(x, w) * scale + 0.01)
        return x

    @tf.function(input_signature=[X])
    def first(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"y": self._run(x, 1.0)}

    @tf.function(input_signature=[X])
    def second(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"y": self._run(x, 0.5)}


def save_deep(path: Path, layers: int = 300, seed: int = 11) -> Path:
    module = Deep(layers, seed)
    tf.saved_model.save(
        module, str(path), signatures={"first": module.first, "second": module.second}
    )
    return path


def run_signature(
    path: Path, signature: str, inputs: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    loaded = tf.saved_model.load(str(path))
    outputs = loaded.signatures[signature](**{k: tf.constant(v) for k, v in inputs.items()})
    return {key: value.numpy() for key, value in outputs.items()}


class WithTable(tf.Module):
    """`encode` looks words up in a table; `score` does not touch it."""

    def __init__(
        self,
        initializer: tf.lookup.KeyValueTensorInitializer | tf.lookup.TextFileInitializer,
        default: int,
        seed: int,
    ) -> None:
        super().__init__()
        self.table = tf.lookup.StaticHashTable(initializer, default_value=default)
        self.w = tf.Variable(_weights(seed, [8, 1]), name="w")

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="words")])
    def encode(self, words: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"ids": self.table.lookup(words)}

    @tf.function(input_signature=[X])
    def score(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"score": tf.matmul(x, self.w)}


def _save_table_module(path: Path, module: WithTable) -> Path:
    tf.saved_model.save(
        module, str(path), signatures={"encode": module.encode, "score": module.score}
    )
    return path


def save_vocab(path: Path, words: str = "cat,dog,fish", vocab_dir: str = "vocab-a") -> Path:
    """The vocab file is written to `vocab_dir` (outside the SavedModel) before export."""
    folder = path.parent / f"{path.name}-{vocab_dir}"
    folder.mkdir(parents=True, exist_ok=True)
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(words.split(",")) + "\n")
    initializer = tf.lookup.TextFileInitializer(
        str(vocab),
        tf.string,
        tf.lookup.TextFileIndex.WHOLE_LINE,
        tf.int64,
        tf.lookup.TextFileIndex.LINE_NUMBER,
    )
    return _save_table_module(path, WithTable(initializer, default=-1, seed=5))


class WithConstants(tf.Module):
    def __init__(self, a: float, b: float) -> None:
        super().__init__()
        self.a = tf.constant(np.full([8, 1], a, dtype="float32"))
        self.b = tf.constant(np.full([8, 1], b, dtype="float32"))

    @tf.function(input_signature=[X])
    def first(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"y": tf.matmul(x, self.a)}

    @tf.function(input_signature=[X])
    def second(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"y": tf.matmul(x, self.b)}


def save_constants(path: Path, a: float = 1.0, b: float = 2.0) -> Path:
    module = WithConstants(a, b)
    tf.saved_model.save(
        module, str(path), signatures={"first": module.first, "second": module.second}
    )
    return path


def _keras_heads(keras, backbone_seed: int, head_a_seed: int, head_b_seed: int):  # type: ignore[no-untyped-def]
    """A functional model with a shared backbone and heads A and B, weights set from seeds."""
    inputs = keras.Input(shape=(8,), name="x")
    features = keras.layers.Dense(16, activation="relu", name="backbone")(inputs)
    logits = keras.layers.Dense(4, name="head_a")(features)
    value = keras.layers.Dense(1, name="head_b")(features)
    model = keras.Model(inputs, [features, logits, value])
    for layer, seed in (
        ("backbone", backbone_seed),
        ("head_a", head_a_seed),
        ("head_b", head_b_seed),
    ):
        kernel, bias = model.get_layer(layer).get_weights()
        model.get_layer(layer).set_weights(
            [_weights(seed, list(kernel.shape)), _weights(seed + 100, list(bias.shape))]
        )
    return model


def save_keras3(
    path: Path, backbone_seed: int = 1, head_a_seed: int = 2, head_b_seed: int = 3
) -> Path:
    """Keras 3 export; every endpoint calls the whole model, capturing every variable."""
    import keras

    model = _keras_heads(keras, backbone_seed, head_a_seed, head_b_seed)
    archive = keras.export.ExportArchive()
    archive.track(model)
    spec = [tf.TensorSpec([None, 8], tf.float32, name="x")]
    archive.add_endpoint("features", lambda x: {"features": model(x)[0]}, input_signature=spec)
    archive.add_endpoint("classify", lambda x: {"logits": model(x)[1]}, input_signature=spec)
    archive.add_endpoint("regress", lambda x: {"value": model(x)[2]}, input_signature=spec)
    archive.write_out(str(path), verbose=False)
    return path


def save_tf_keras(
    path: Path, backbone_seed: int = 1, head_a_seed: int = 2, head_b_seed: int = 3
) -> Path:
    """tf.keras (Keras 2) `model.save` with three signatures over the whole model."""
    import tf_keras

    model = _keras_heads(tf_keras, backbone_seed, head_a_seed, head_b_seed)
    spec = [tf.TensorSpec([None, 8], tf.float32, name="x")]
    signatures = {
        "features": tf.function(lambda x: {"features": model(x)[0]}, input_signature=spec),
        "classify": tf.function(lambda x: {"logits": model(x)[1]}, input_signature=spec),
        "regress": tf.function(lambda x: {"value": model(x)[2]}, input_signature=spec),
    }
    model.save(str(path), save_format="tf", signatures=signatures)
    return path


def save_keras_file(
    path: Path, backbone_seed: int = 1, head_a_seed: int = 2, head_b_seed: int = 3
) -> Path:
    """A Keras 3 `.keras` file (three outputs), the format tensorflowjs_converter 4.22 gets wrong."""
    import keras

    path.parent.mkdir(parents=True, exist_ok=True)
    _keras_heads(keras, backbone_seed, head_a_seed, head_b_seed).save(str(path))
    return path


def save_keras_h5(path: Path, seed: int = 4) -> Path:
    """A tf.keras `.h5` file: one input, one output, as most Keras 2 models on disk."""
    import tf_keras

    path.parent.mkdir(parents=True, exist_ok=True)
    inputs = tf_keras.Input(shape=(8,), name="x")
    hidden = tf_keras.layers.Dense(16, activation="tanh", name="hidden")(inputs)
    outputs = tf_keras.layers.Dense(3, activation="softmax", name="probs")(hidden)
    model = tf_keras.Model(inputs, outputs)
    for layer, offset in (("hidden", 0), ("probs", 1)):
        kernel, bias = model.get_layer(layer).get_weights()
        model.get_layer(layer).set_weights(
            [_weights(seed + offset, list(kernel.shape)), _weights(seed + 50, list(bias.shape))]
        )
    model.save(str(path), save_format="h5")
    return path


class Wide(tf.Module):
    """y = x @ w with small weights and one far larger: quantization's worst case."""

    def __init__(self, big: float, seed: int) -> None:
        super().__init__()
        weights = _weights(seed, [8, 4]) * 0.01
        weights[0, 0] = big
        self.w = tf.Variable(weights, name="wide")

    @tf.function(input_signature=[X])
    def predict(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"y": tf.matmul(x, self.w)}


def save_wide(path: Path, big: float = 100.0, seed: int = 12) -> Path:
    module = Wide(big, seed)
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.predict})
    return path


class WideBackbone(tf.Module):
    """A backbone of small weights but one far larger, and a head of weights in [-1, 1]: uint8
    fits the head, not the backbone."""

    def __init__(self, big: float, seed: int) -> None:
        super().__init__()
        backbone = _weights(seed, [8, 16]) * 0.1
        backbone[0, 0] = big
        self.backbone = tf.Variable(backbone, name="backbone")
        self.head = tf.Variable(_weights(seed + 1, [16, 4]), name="head")

    @tf.function(input_signature=[X])
    def predict(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"y": tf.matmul(tf.nn.relu(tf.matmul(x, self.backbone)), self.head)}


def save_wide_backbone(path: Path, big: float = 100.0, seed: int = 21) -> Path:
    module = WideBackbone(big, seed)
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.predict})
    return path


def save_tf1(path: Path, seed: int = 1) -> Path:
    """A TF1 SavedModel (no object graph): only a whole-model fingerprint is possible."""
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        x = tf.compat.v1.placeholder(tf.float32, [None, 8], name="x")
        w = tf.compat.v1.get_variable("w", initializer=_weights(seed, [8, 1]))
        y = tf.matmul(x, w, name="y")
        session.run(tf.compat.v1.global_variables_initializer())
        builder = tf.compat.v1.saved_model.Builder(str(path))
        signature = tf.compat.v1.saved_model.predict_signature_def({"x": x}, {"y": y})
        builder.add_meta_graph_and_variables(
            session, ["serve"], signature_def_map={"serving_default": signature}
        )
        builder.save()
    return path


TF1_VOCABULARY = ("cat", "dog", "fish")


def save_tf1_lookup(path: Path, seed: int = 1, initialized: bool = True) -> Path:
    """A TF1 SavedModel whose `serving_default` looks words up in a table `main_op` fills.

    serving_default: `words` (strings) in; `ids` (int64, -1 for an unknown word) and `scores`
    (an embedding row per word, row 0 for unknown words) out. `embed`: `vectors` [N, 2] in,
    `similarity` [N, 4] out, no table. `initialized=False` leaves the table unfilled: no
    main_op and an empty `table_initializer` collection.
    """
    with tf.Graph().as_default() as graph, tf.compat.v1.Session() as session:
        words = tf.compat.v1.placeholder(tf.string, [None], name="words")
        table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(list(TF1_VOCABULARY)),
                tf.constant(list(range(len(TF1_VOCABULARY))), dtype=tf.int64),
            ),
            default_value=-1,
        )
        ids = table.lookup(words)
        embedding = tf.compat.v1.get_variable(
            "embedding", initializer=_weights(seed, [len(TF1_VOCABULARY) + 1, 2])
        )
        scores = tf.gather(embedding, ids + 1)
        vectors = tf.compat.v1.placeholder(tf.float32, [None, 2], name="vectors")
        similarity = tf.matmul(vectors, embedding, transpose_b=True)
        session.run(tf.compat.v1.global_variables_initializer())
        main_op = tf.compat.v1.tables_initializer() if initialized else None
        if not initialized:
            graph.clear_collection(tf.compat.v1.GraphKeys.TABLE_INITIALIZERS)
        builder = tf.compat.v1.saved_model.Builder(str(path))
        predict = tf.compat.v1.saved_model.predict_signature_def
        builder.add_meta_graph_and_variables(
            session,
            ["serve"],
            signature_def_map={
                "serving_default": predict({"words": words}, {"ids": ids, "scores": scores}),
                "embed": predict({"vectors": vectors}, {"similarity": similarity}),
            },
            main_op=main_op,
        )
        builder.save()
    return path


def run_tf1(path: Path, signature: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A TF1 SavedModel's own answer: loaded in a session (which runs its main_op), as TF1 does."""
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], str(path))
        signature_def = meta_graph.signature_def[signature]
        fetches = {key: info.name for key, info in signature_def.outputs.items()}
        feed = {signature_def.inputs[key].name: value for key, value in inputs.items()}
        result: dict[str, np.ndarray] = session.run(fetches, feed)
    return result


class Renamed(tf.Module):
    """MultiHead's backbone (the same bytes for the same seed) under other names: its weight is
    read by other ops, so model.json names it differently."""

    def __init__(self, backbone_seed: int) -> None:
        super().__init__()
        self.projection = tf.Variable(_weights(backbone_seed, [8, 16]), name="projection")

    @tf.function(input_signature=[X])
    def embed(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        scaled = tf.identity(x * 1.0, name="scaled")
        return {"embedding": tf.nn.relu(tf.linalg.matmul(scaled, self.projection, name="project"))}


def save_renamed(path: Path, backbone_seed: int = 1) -> Path:
    module = Renamed(backbone_seed)
    tf.saved_model.save(module, str(path), signatures={"embed": module.embed})
    return path


def save_table(path: Path) -> Path:
    """A lookup table TensorFlow.js can run (initialised from tensors), used by one signature."""
    keys = tf.constant(["cat", "dog", "fish"])
    initializer = tf.lookup.KeyValueTensorInitializer(keys, tf.constant([1, 2, 3], dtype=tf.int32))
    return _save_table_module(path, WithTable(initializer, default=0, seed=6))


def _parse_setting(value: str) -> object:
    if value in ("true", "false"):
        return value == "true"
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


if __name__ == "__main__":
    # python savedmodels.py KIND PATH [key=value ...]: export in a fresh process.
    import sys

    kind, target, *settings = sys.argv[1:]
    kwargs: dict[str, object] = {}
    for setting in settings:
        key, _, value = setting.partition("=")
        kwargs[key] = _parse_setting(value)
    globals()[f"save_{kind}"](Path(target), **kwargs)
