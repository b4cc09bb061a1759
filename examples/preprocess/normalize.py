"""A model built by Python code (a `python:` source in examples/tfjs-build.yaml).

`build()` returns a tf.Module whose tf.functions become signatures: `normalize` scales features
with statistics read from stats.json, `denormalize` undoes it. Changing this file or stats.json
(both listed in the manifest's `inputs`) rebuilds the model; nothing else does.
"""

from __future__ import annotations

import json
from pathlib import Path

import tensorflow as tf

STATS = Path(__file__).with_name("stats.json")
FEATURES = tf.TensorSpec([None, 8], tf.float32, name="features")


class Normalizer(tf.Module):
    def __init__(self, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.mean = tf.Variable(mean, dtype=tf.float32, name="mean")
        self.std = tf.Variable(std, dtype=tf.float32, name="std")

    @tf.function(input_signature=[FEATURES])
    def normalize(self, features: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"normalized": (features - self.mean) / self.std}

    @tf.function(input_signature=[FEATURES])
    def denormalize(self, features: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"features": features * self.std + self.mean}


def build() -> Normalizer:
    stats = json.loads(STATS.read_text())
    return Normalizer(stats["mean"], stats["std"])
