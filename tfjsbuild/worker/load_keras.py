"""Load a `keras:` source in a worker: a layers model as it is, anything else exported by its
own Keras (Keras 3 or tf.keras) into a SavedModel in the scratch folder.

Imports TensorFlow and Keras: only ever imported inside worker processes.
"""

from __future__ import annotations

import tfjsbuild.worker.environment  # noqa: F401  (first: TensorFlow reads it when imported)

# isort: split

import json
import os
import sys
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import count
from pathlib import Path
from typing import Any

import tensorflow as tf

from tfjsbuild.errors import SignatureError, SourceError
from tfjsbuild.files.artifacts import GraphModelOutput, TensorSpec
from tfjsbuild.manifest.types import KERAS_SIGNATURE, ConverterOptions, KerasSource
from tfjsbuild.worker.errors import ConversionError
from tfjsbuild.worker.layers import convert_layers_model
from tfjsbuild.worker.load_saved_model import (
    SavedModelSignatures,
    load_failure,
    load_saved_model_at,
    saved_model_damage,
)
from tfjsbuild.worker.loaded import KindLoader, LoadedSource
from tfjsbuild.worker.saved_model import load_saved_model

_exports = count()


@dataclass
class LayersModel:
    source: KerasSource
    _model: Any = None  # the tf.keras model, loaded when verification needs it

    def convert(
        self,
        signature: str,
        output_dir: Path,
        options: ConverterOptions,
        timings: dict[str, float] | None,
    ) -> GraphModelOutput:
        if signature != KERAS_SIGNATURE:
            raise SignatureError(
                f"a layers model has one signature, '{KERAS_SIGNATURE}', not '{signature}'"
            )
        try:
            return convert_layers_model(
                self.source.path,
                self.source.container,
                output_dir,
                options,
                self.signature_json,
                timings,
            )
        except ConversionError as error:
            # A layers model is its source: whatever is wrong is at the `keras:` line.
            raise SourceError(str(error)) from error

    def functions(self) -> dict[str, Any]:
        return {}

    def keras_model(self) -> Any:
        if self._model is None:
            import tf_keras

            self._model = tf_keras.models.load_model(self.source.path, compile=False)
        return self._model

    def signature_json(self) -> dict[str, Any]:
        """The model's inputs and outputs as TensorInfo JSON, keyed by the names Keras and
        TF.js's LayersModel give them (its input and output layers' names)."""
        from google.protobuf.json_format import MessageToDict
        from tensorflow.core.protobuf import meta_graph_pb2

        def infos(names: list[str], tensors: list[Any]) -> dict[str, Any]:
            return {
                name: MessageToDict(
                    meta_graph_pb2.TensorInfo(
                        name=f"{name}:0",
                        dtype=tensor.dtype.as_datatype_enum,
                        tensor_shape=tensor.shape.as_proto(),
                    )
                )
                for name, tensor in zip(names, tensors, strict=True)
            }

        model = self.keras_model()
        return {
            "inputs": infos(model.input_names, model.inputs),
            "outputs": infos(model.output_names, model.outputs),
        }

    def input_specs(self, signature: str) -> tuple[TensorSpec, ...]:
        model = self.keras_model()
        return tuple(
            TensorSpec(name=name, dtype=tensor.dtype.name, shape=tuple(tensor.shape.as_list()))
            for name, tensor in zip(model.input_names, model.inputs, strict=True)
        )

    def run(self, signature: str, inputs: Mapping[str, Any]) -> dict[str, Any]:
        model = self.keras_model()
        outputs = model([tf.constant(inputs[name]) for name in model.input_names], training=False)
        flat = outputs if isinstance(outputs, list | tuple) else [outputs]
        return {name: tensor.numpy() for name, tensor in zip(model.output_names, flat, strict=True)}


def load_keras(source: KerasSource, scratch: Path) -> LoadedSource:
    if source.format == "layers_model":
        # tensorflowjs loads the file while converting; a broken one is found here instead.
        damaged = _keras_damage(source, None)
        if damaged is not None:
            raise SourceError(
                f"could not load the Keras model {source.path}: {damaged}; save it again"
            )
        return LayersModel(source)
    saved_model = source.as_saved_model()
    if saved_model is not None:
        return load_saved_model_at(saved_model.path, saved_model.tags, "the Keras model")
    if source.container == "keras_v3" and not _saved_by_tf_keras(source.path):
        import keras

        try:
            model = keras.saving.load_model(source.path, compile=False)
        except Exception as error:
            raise SourceError(
                _keras_load_failure(source, f"Keras {keras.__version__}", error)
            ) from error
    else:
        import tf_keras

        try:
            model = tf_keras.models.load_model(source.path, compile=False)
        except Exception as error:
            raise SourceError(
                _keras_load_failure(source, f"tf.keras {tf_keras.__version__}", error)
            ) from error
    return export_keras_model(model, scratch, str(source.path))


def _keras_load_failure(source: KerasSource, loader: str, error: Exception) -> str:
    damaged = _keras_damage(source, error)
    if damaged is None:
        return f"{loader} could not load {source.path}: {type(error).__name__}: {error}"
    return load_failure("the Keras model", source.path, error, damaged, "save it again")


def _keras_damage(source: KerasSource, error: BaseException | None) -> str | None:
    """What is wrong with a Keras file (or tf.keras SavedModel folder), None if it looks whole."""
    path = source.path
    if source.container == "saved_model":
        return saved_model_damage(path, error)
    if source.container == "h5":
        import h5py

        try:
            with h5py.File(path, "r"):
                return None
        except OSError:
            return "it is not a readable HDF5 file (truncated or corrupt)"
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError):
        return "it is not a readable zip archive, as .keras files are (truncated or corrupt)"
    if bad is not None:
        return f"its member {bad} is corrupt"
    return None


def _saved_by_tf_keras(path: Path) -> bool:
    """tf.keras 2.13+ also writes `.keras` files; their metadata names Keras 2."""
    try:
        with zipfile.ZipFile(path) as archive:
            metadata = json.loads(archive.read("metadata.json"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return False
    return str(metadata.get("keras_version", "")).startswith("2.")


def export_keras_model(model: Any, scratch: Path, origin: str) -> SavedModelSignatures:
    """Export through the model's own Keras, which knows its layers, then convert as a SavedModel.

    tensorflowjs_converter 4.22 reads Keras 3 files with Keras 2 code (tensorflow/tfjs#8229,
    #8266); Keras 3's `export` writes a plain SavedModel with a `serving_default` signature.
    """
    export_dir = scratch / f"keras-export-{os.getpid()}-{next(_exports)}"  # workers share scratch
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        if is_keras3_model(model):
            model.export(str(export_dir), format="tf_saved_model", verbose=False)
        else:
            model.save(str(export_dir), save_format="tf", include_optimizer=False)
    except Exception as error:
        raise SourceError(
            f"exporting the Keras model {origin} to a SavedModel failed: "
            f"{type(error).__name__}: {error}"
        ) from error
    return SavedModelSignatures(load_saved_model(export_dir, ("serve",)), origin)


def is_keras3_model(value: Any) -> bool:
    keras = sys.modules.get("keras")
    return keras is not None and isinstance(value, keras.Model)


def is_tf_keras_model(value: Any) -> bool:
    tf_keras = sys.modules.get("tf_keras")
    return tf_keras is not None and isinstance(value, tf_keras.Model)


def describable(source: KerasSource, scratch: Path) -> tuple[LoadedSource, dict[str, Any]]:
    """What a graph model build of the file would convert: its one signature."""
    source = KerasSource(source.path, "graph_model")
    loaded = load_keras(source, scratch)
    functions = loaded.functions()
    if source.container != "saved_model":
        functions = {KERAS_SIGNATURE: functions[KERAS_SIGNATURE]}  # what a build accepts
    return loaded, functions


LOADER = KindLoader("keras", load_keras, describable, outlives_build=False)
