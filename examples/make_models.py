"""Make the example's models in code (no downloads): run before `tfjs-build run`.

    python examples/make_models.py     # writes examples/models/{classifier,scorer,tagger.keras,legacy.h5}

`classifier` is a small conv net with a shared backbone and three signatures (features, logits,
probs); `scorer` has one signature with three outputs of the same shape, the case where
tensorflowjs_converter 4.22 loses the output names. `tagger.keras` is a Keras 3 file, which
tensorflowjs_converter 4.22 cannot convert; `legacy.h5` a tf.keras (Keras 2) HDF5 file. The
fourth model, `preprocess/normalize.py`, is Python code the manifest names directly.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# TensorFlow 2.19 logs CUDA registrations and a failed cuInit at import on a machine without a
# GPU, whatever TF_CPP_MIN_LOG_LEVEL says: tfjs-build keeps such lines off the terminal.
from tfjsbuild.worker.native_log import native_log_kept_out

with native_log_kept_out([]):
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
    save_tagger(out / "tagger.keras")
    save_legacy(out / "legacy.h5")
    print(f"wrote classifier, scorer, tagger.keras and legacy.h5 in {out}")


def save_tagger(path: Path) -> None:
    """A Keras 3 model with two named outputs, saved as a `.keras` file."""
    import keras

    keras.utils.set_random_seed(3)
    tokens = keras.Input(shape=(16,), name="embedding")
    hidden = keras.layers.Dense(32, activation="relu", name="hidden")(tokens)
    tags = keras.layers.Dense(5, activation="softmax", name="tags")(hidden)
    score = keras.layers.Dense(1, activation="sigmoid", name="score")(hidden)
    keras.Model(tokens, {"tags": tags, "score": score}, name="tagger").save(path)


def save_legacy(path: Path) -> None:
    """A tf.keras (Keras 2) model in the HDF5 format, as many older projects have on disk."""
    import tf_keras

    tf_keras.utils.set_random_seed(4)
    model = tf_keras.Sequential(
        [
            tf_keras.Input(shape=(8,), name="x"),
            tf_keras.layers.Dense(16, activation="tanh", name="hidden"),
            tf_keras.layers.Dense(3, activation="softmax", name="probs"),
        ],
        name="legacy",
    )
    # The legacy format, on purpose: Keras warns against it, which is why this file exists.
    warnings.filterwarnings("ignore", "You are saving your model as an HDF5 file", UserWarning)
    model.save(path, save_format="h5")


if __name__ == "__main__":
    with native_log_kept_out([]):
        main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "models")
