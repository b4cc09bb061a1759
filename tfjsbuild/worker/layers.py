"""A tf.keras model (`.h5` file or SavedModel folder) to a TensorFlow.js layers model.

tensorflowjs's own Keras converters write it; this module refuses a weights-only `.h5`, adds
the model's inputs and outputs to model.json (as a graph model's `signature`: TF.js's
LayersModel ignores it, the asset index and the app loader read it), makes model.json
canonical and checks the output. Imports tensorflowjs (through `write.py`;
its Keras converters and h5py on first use).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tfjsbuild.files.artifacts import GraphModelOutput, check_graph_model
from tfjsbuild.manifest.types import ConverterOptions
from tfjsbuild.worker.errors import ConversionError
from tfjsbuild.worker.timing import timed
from tfjsbuild.worker.write import canonical_model_json


def convert_layers_model(
    path: Path,
    container: str,
    output_dir: Path,
    options: ConverterOptions,
    signature: Callable[[], dict[str, Any]],
    timings: dict[str, float] | None = None,
) -> GraphModelOutput:
    """A tf.keras `.h5` file or SavedModel folder to a TensorFlow.js layers model.

    `signature()`: the model's inputs and outputs as TensorInfo JSON (`{"inputs": {name: ...},
    "outputs": ...}`), written into model.json, so the output describes itself as a graph
    model does. Called once tensorflowjs has written: a tf.keras SavedModel loaded before its
    conversion (which runs in a TF1 graph and session of its own) could not run afterwards
    ("Your Layer or Model is in an invalid state"), and verification runs it."""
    from tensorflowjs.converters import converter as tfjs_converter

    arguments: dict[str, Any] = {
        "quantization_dtype_map": options.quantization_dtype_map() or None,
        "weight_shard_size_bytes": options.weight_shard_size_bytes,
        "metadata": options.metadata or None,
    }
    with timed(timings, "write"):
        try:
            if container == "h5":
                import h5py

                with h5py.File(path, "r") as h5:
                    if "layer_names" in h5.attrs:
                        raise ConversionError(
                            f"{path} holds weights only (model.save_weights); a layers model "
                            "needs the architecture too: save it with model.save(...)"
                        )
                tfjs_converter.dispatch_keras_h5_to_tfjs_layers_model_conversion(
                    str(path), str(output_dir), **arguments
                )
            else:
                tfjs_converter.dispatch_keras_saved_model_to_tensorflowjs_conversion(
                    str(path), str(output_dir), **arguments
                )
        except ConversionError:
            raise
        except Exception as error:
            raise ConversionError(
                f"converting {path} to a layers model failed: {type(error).__name__}: {error}"
            ) from error
    model_json = output_dir / "model.json"
    written = json.loads(model_json.read_text("utf-8"))
    model_json.write_text(
        json.dumps({**written, "signature": signature()}, allow_nan=False), "utf-8"
    )
    canonical_model_json(output_dir)
    return check_graph_model(output_dir)
