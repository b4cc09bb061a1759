"""The architectures conversion is checked and profiled on, as SavedModels made in code.

MobileNetV2, a ResNet, a Transformer block, an LSTM and a PReLU network: between them every
pass tensorflowjs runs in Python (batch norm folding after Conv2D and depthwise convolutions,
with and without a bias between, PReLU and depthwise fusion, control flow). `small` sizes are
for the tests; `full` ones (`k.applications` MobileNetV2 and ResNet50 at 224x224) for
`benchmarks/profile_convert.py`.

Each in Keras 3 (`keras`) or Keras 2 (`tf_keras`): they export different graphs. Keras 2's
BatchNormalization exports `FusedBatchNormV3`, which tensorflowjs folds into the convolution
weights in Python (the slow pass `tfjsbuild/worker/fold_batch_norms.py` replaces); Keras 3's
exports multiplies and adds, which grappler folds. Weights are seeded random, and batch norm
statistics are set from a random batch, so outputs are not ~0 (with untrained statistics
MobileNetV2 gives ~1e-11 and any comparison passes). Nothing is downloaded.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from types import ModuleType
from typing import Any

import keras
import numpy as np
import tensorflow as tf
import tf_keras

ARCHITECTURES = ("mobilenet_v2", "resnet", "transformer", "lstm", "prelu")
KERAS = {"3": keras, "2": tf_keras}


def save_architecture(
    name: str, path: Path, *, size: str = "small", keras_version: str = "3", seed: int = 1
) -> None:
    """Build architecture `name` at `size` ("small" or "full") in Keras `keras_version` ("3" or
    "2") and export it to `path` as a SavedModel (signature `serving_default`)."""
    k = KERAS[keras_version]
    k.utils.set_random_seed(seed)
    model = BUILDERS[name](k, size == "full")
    _set_batch_norm_statistics(k, model, seed)
    if keras_version == "3":
        model.export(str(path), verbose=False)
    else:
        tf.saved_model.save(model, str(path))


def _mobilenet_v2(k: ModuleType, full: bool) -> Any:
    if full:
        return k.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3))
    return k.applications.MobileNetV2(weights=None, input_shape=(96, 96, 3), alpha=0.35, classes=10)


def _resnet(k: ModuleType, full: bool) -> Any:
    """ResNet50 (full), or residual blocks of the same pattern: Conv2D with a bias, then
    BatchNormalization (the bias is folded into the batch norm's mean)."""
    if full:
        return k.applications.ResNet50(weights=None, input_shape=(224, 224, 3))
    layers = k.layers
    inputs = k.Input((32, 32, 3), name="x")
    y = layers.Activation("relu")(layers.BatchNormalization()(layers.Conv2D(16, 3)(inputs)))
    for filters in (16, 32):
        shortcut = layers.BatchNormalization()(layers.Conv2D(filters, 1)(y))
        z = layers.Activation("relu")(
            layers.BatchNormalization()(layers.Conv2D(filters, 3, padding="same")(y))
        )
        z = layers.BatchNormalization()(layers.Conv2D(filters, 3, padding="same")(z))
        y = layers.Activation("relu")(layers.Add()([shortcut, z]))
    y = layers.GlobalAveragePooling2D()(y)
    return k.Model(inputs, layers.Dense(10, activation="softmax")(y))


def _transformer(k: ModuleType, full: bool) -> Any:
    """One encoder block: MultiHeadAttention and LayerNormalization, then a feed-forward."""
    layers = k.layers
    length, width, heads = (128, 256, 8) if full else (16, 32, 4)
    inputs = k.Input((length, width), name="x")
    attended = layers.MultiHeadAttention(heads, width // heads)(inputs, inputs)
    y = layers.LayerNormalization()(layers.Add()([inputs, attended]))
    forward = layers.Dense(width)(layers.Dense(width * 4, activation="relu")(y))
    return k.Model(inputs, layers.LayerNormalization()(layers.Add()([y, forward])))


def _lstm(k: ModuleType, full: bool) -> Any:
    layers = k.layers
    steps, features, units = (50, 64, 256) if full else (12, 8, 16)
    inputs = k.Input((steps, features), name="x")
    y = layers.LSTM(units, return_sequences=True)(inputs)
    y = layers.LSTM(units // 2)(y)
    return k.Model(inputs, layers.Dense(10)(y))


def _prelu(k: ModuleType, full: bool) -> Any:
    """PReLU after a batch-normed Conv2D, a batch-normed depthwise convolution (whose bias
    tensorflowjs fuses), a plain Conv2D and a Dense layer."""
    layers = k.layers
    side, width = (224, 64) if full else (32, 8)
    inputs = k.Input((side, side, 3), name="x")
    y = layers.BatchNormalization()(layers.Conv2D(width, 3, strides=2, use_bias=False)(inputs))
    y = layers.PReLU(shared_axes=[1, 2])(y)
    y = layers.BatchNormalization()(layers.DepthwiseConv2D(3, depth_multiplier=2)(y))
    y = layers.PReLU(shared_axes=[1, 2])(y)
    y = layers.PReLU(shared_axes=[1, 2])(layers.Conv2D(width * 2, 1)(y))
    y = layers.GlobalAveragePooling2D()(y)
    return k.Model(inputs, layers.PReLU()(layers.Dense(10)(y)))


BUILDERS: dict[str, Callable[[ModuleType, bool], Any]] = {
    "mobilenet_v2": _mobilenet_v2,
    "resnet": _resnet,
    "transformer": _transformer,
    "lstm": _lstm,
    "prelu": _prelu,
}


def _set_batch_norm_statistics(k: ModuleType, model: Any, seed: int) -> None:
    """Random scales and offsets, and moving statistics those of a random batch (momentum 0 for
    one training-mode call), so batch norms neither vanish nor pass values through unchanged.
    PReLU slopes are random too (they start at 0: a ReLU)."""
    random = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, k.layers.BatchNormalization):
            shape = layer.gamma.shape
            layer.gamma.assign(random.uniform(0.5, 1.5, shape).astype("float32"))
            layer.beta.assign(random.normal(0.0, 0.1, shape).astype("float32"))
            layer.momentum = 0.0
        elif isinstance(layer, k.layers.PReLU):
            shape = layer.alpha.shape
            layer.alpha.assign(random.uniform(0.05, 0.3, shape).astype("float32"))
    shape = tuple(4 if d is None else d for d in model.inputs[0].shape)
    model(random.normal(0.0, 1.0, shape).astype("float32"), training=True)


if __name__ == "__main__":
    # python tests/architectures.py DIR [small|full]: every architecture in both Kerases, as
    # DIR/<name>-keras<version> (a process of its own keeps Keras out of the test process).
    import sys

    size = sys.argv[2] if len(sys.argv) > 2 else "small"
    for architecture in ARCHITECTURES:
        for version in KERAS:
            folder = Path(sys.argv[1]) / f"{architecture}-keras{version}"
            save_architecture(architecture, folder, size=size, keras_version=version)
