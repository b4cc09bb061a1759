"""Make the example's SavedModels in code (no downloads): run before `tfjs-build run`.

    python examples/make_models.py            # writes examples/models/{classifier,scorer}

`classifier` is a small conv net with a shared backbone and three signatures (features, logits,
probs); `scorer` has one signature with three outputs of the same shape, the case where
tensorflowjs_converter 4.22 loses the output names.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf

IMAGE = tf.TensorSpec([None, 32, 32, 3], tf.float32, name="image")


class Classifier(tf.Module):
    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        init = tf.keras.initializers.GlorotUniform(seed=1)
        self.conv1 = tf.Variable(init([3, 3, 3, 16]), name="conv1")
        self.conv2 = tf.Variable(init([3, 3, 16, 32]), name="conv2")
        self.head = tf.Variable(init([32, classes]), name="head")
        self.bias = tf.Variable(tf.zeros([classes]), name="bias")

    def _backbone(self, image: tf.Tensor) -> tf.Tensor:
        x = tf.nn.relu(tf.nn.conv2d(image, self.conv1, strides=2, padding="SAME"))
        x = tf.nn.relu(tf.nn.conv2d(x, self.conv2, strides=2, padding="SAME"))
        return tf.reduce_mean(x, axis=[1, 2])

    @tf.function(input_signature=[IMAGE])
    def features(self, image: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"features": self._backbone(image)}

    @tf.function(input_signature=[IMAGE])
    def logits(self, image: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"logits": tf.matmul(self._backbone(image), self.head) + self.bias}

    @tf.function(input_signature=[IMAGE])
    def probs(self, image: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"probs": tf.nn.softmax(tf.matmul(self._backbone(image), self.head) + self.bias)}


class Scorer(tf.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = tf.Variable(tf.random.stateless_normal([8, 8], seed=[1, 2]), name="w")

    @tf.function(input_signature=[tf.TensorSpec([None, 8], tf.float32, name="x")])
    def serving_default(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        h = tf.matmul(x, self.w)
        return {"contour": tf.sigmoid(h), "note": tf.tanh(h), "onset": h * 0.5}


def main(out: Path) -> None:
    classifier = Classifier()
    tf.saved_model.save(
        classifier,
        str(out / "classifier"),
        signatures={
            "features": classifier.features,
            "logits": classifier.logits,
            "probs": classifier.probs,
        },
    )
    scorer = Scorer()
    tf.saved_model.save(
        scorer, str(out / "scorer"), signatures={"serving_default": scorer.serving_default}
    )
    print(f"wrote {out / 'classifier'} and {out / 'scorer'}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "models")
