"""Small SavedModels made in code for the tests (no downloads). Imports TensorFlow."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf

X = tf.TensorSpec([None, 8], tf.float32, name="x")


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


if __name__ == "__main__":
    # python savedmodels.py KIND PATH [key=value ...]: export in a fresh process.
    import sys

    kind, target, *settings = sys.argv[1:]
    kwargs = {}
    for setting in settings:
        key, _, value = setting.partition("=")
        kwargs[key] = (
            value == "true"
            if value in ("true", "false")
            else float(value)
            if "." in value
            else int(value)
        )
    globals()[f"save_{kind}"](Path(target), **kwargs)
