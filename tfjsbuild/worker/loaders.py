"""Turn a source of any kind into something `convert.py` can convert, signature by signature.

A Keras model becomes a SavedModel (exported by its own Keras into a scratch folder), a Python
source is imported and called, and everything then goes through the same checked conversion as
a `saved_model:` source. Like `convert.py`, this runs only inside worker processes: it imports
TensorFlow, Keras, and the user's code.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import sys
import traceback
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import count
from pathlib import Path
from typing import Any, Protocol

import tensorflow as tf

from tfjsbuild.errors import SignatureError, SourceError
from tfjsbuild.files.artifacts import GraphModelOutput
from tfjsbuild.manifest.load import (
    KERAS_SIGNATURE,
    ConverterOptions,
    KerasSource,
    PythonSource,
    SavedModelSource,
    Source,
)
from tfjsbuild.sources import saved_model_files as savedmodel
from tfjsbuild.worker import convert
from tfjsbuild.worker.errors import ConversionError
from tfjsbuild.worker.functions import concrete_function, function_tensors, run_function
from tfjsbuild.worker.layers import convert_layers_model
from tfjsbuild.worker.saved_model import LoadedSavedModel, load_saved_model


class LoadedSource(Protocol):
    def convert(
        self,
        signature: str,
        output_dir: Path,
        options: ConverterOptions,
        timings: dict[str, float] | None,
    ) -> GraphModelOutput: ...

    def functions(self) -> dict[str, Any]:
        """Signature name -> the function a graph model would be converted from."""
        ...

    def input_specs(self, signature: str) -> list[dict[str, Any]]:
        """The inputs TensorFlow.js takes, as {name, dtype, shape}, keyed as in model.json."""
        ...

    def run(self, signature: str, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """TensorFlow's answer for one sample of inputs, keyed as the converted outputs are."""
        ...


def _require(signature: str, available: Mapping[str, Any], origin: str) -> None:
    if signature not in available:
        raise SignatureError(
            f"{origin} has no signature '{signature}' (it has: "
            f"{', '.join(sorted(available)) or 'none'})"
        )


@dataclass
class SavedModelSignatures:
    loaded: LoadedSavedModel
    origin: str  # what the user named, for messages (the export folder is temporary)

    def convert(
        self,
        signature: str,
        output_dir: Path,
        options: ConverterOptions,
        timings: dict[str, float] | None,
    ) -> GraphModelOutput:
        _require(signature, self.loaded.model.signatures, self.origin)
        return convert.convert_signature(self.loaded, signature, output_dir, options, timings)

    def functions(self) -> dict[str, Any]:
        return dict(self.loaded.model.signatures)

    def input_specs(self, signature: str) -> list[dict[str, Any]]:
        return function_tensors(self.loaded.model.signatures[signature])[0]

    def run(self, signature: str, inputs: Mapping[str, Any]) -> dict[str, Any]:
        return run_function(self.loaded.model.signatures[signature], inputs)


@dataclass
class FunctionSignatures:
    """Functions returned by a Python source, frozen straight from memory (no SavedModel)."""

    functions_by_name: Mapping[str, Any]
    origin: str
    # What the callable returned: tf.function methods hold their object only weakly.
    owner: Any = None

    def convert(
        self,
        signature: str,
        output_dir: Path,
        options: ConverterOptions,
        timings: dict[str, float] | None,
    ) -> GraphModelOutput:
        _require(signature, self.functions_by_name, self.origin)
        try:
            function = concrete_function(self.functions_by_name[signature])
        except ConversionError as error:
            raise SignatureError(f"signature '{signature}': {error}") from error
        except Exception as error:  # the user's code, traced now
            raise SignatureError(
                f"tracing signature '{signature}' of {self.origin} raised "
                f"{_user_error(error)}{_user_frame(error)}"
            ) from error
        try:
            return convert.convert_concrete_function(function, output_dir, options, timings)
        except ConversionError as error:
            if "referencing variables which have been deleted" not in str(error):
                raise
            raise SignatureError(
                f"signature '{signature}' uses variables that were deleted with the object "
                "that owned them: keep that object alive (return the tf.Module itself, or keep "
                "it in a module-level variable)"
            ) from error

    def functions(self) -> dict[str, Any]:
        return dict(self.functions_by_name)

    def input_specs(self, signature: str) -> list[dict[str, Any]]:
        function = concrete_function(self.functions_by_name[signature])
        return function_tensors(function)[0]

    def run(self, signature: str, inputs: Mapping[str, Any]) -> dict[str, Any]:
        return run_function(self.functions_by_name[signature], inputs)


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
                self.source.path, self.source.container, output_dir, options, timings
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

    def input_specs(self, signature: str) -> list[dict[str, Any]]:
        model = self.keras_model()
        return [
            {"name": name, "dtype": tensor.dtype.name, "shape": tensor.shape.as_list()}
            for name, tensor in zip(model.input_names, model.inputs, strict=True)
        ]

    def run(self, signature: str, inputs: Mapping[str, Any]) -> dict[str, Any]:
        model = self.keras_model()
        outputs = model([tf.constant(inputs[name]) for name in model.input_names], training=False)
        flat = outputs if isinstance(outputs, list | tuple) else [outputs]
        return {name: tensor.numpy() for name, tensor in zip(model.output_names, flat, strict=True)}


_cache: dict[str, LoadedSource] = {}
# A model file that failed to load fails the same way for its next signature: not loaded again.
_failed: dict[str, SourceError] = {}
_exports = count()


def load(source: Source, cache_key: str, scratch: Path) -> LoadedSource:
    """Load a source once per worker (while `cache_key`, its content digest, stays the same).

    Keras exports go to `scratch`, which the parent removes after the build.
    """
    if cache_key in _cache:
        return _cache[cache_key]
    if cache_key in _failed:
        raise SourceError(str(_failed[cache_key]))
    try:
        loaded = _load_uncached(source, scratch)
    except SourceError as error:
        if not isinstance(source, PythonSource):  # user code runs again, as it may differ
            _failed.clear()
            _failed[cache_key] = error
        raise
    _cache.clear()  # one model per worker: bounded memory, and the next task is likely the same
    _cache[cache_key] = loaded
    return loaded


def describe(source: Source, scratch: Path) -> list[dict[str, Any]]:
    """Each signature a graph model build would convert, with its input and output tensors."""
    if isinstance(source, KerasSource):
        source = KerasSource(source.path, "graph_model")
    loaded = _load_uncached(source, scratch)  # keeps the functions' owner alive
    functions = loaded.functions()
    if isinstance(source, KerasSource) and source.container != "saved_model":
        functions = {KERAS_SIGNATURE: functions[KERAS_SIGNATURE]}  # what a build accepts
    described: list[dict[str, Any]] = []
    for name, function in sorted(functions.items()):
        try:
            concrete = concrete_function(function)
        except Exception as error:  # ConversionError, or the user's code while tracing
            described.append({"name": name, "error": _user_error(error)})
            continue
        inputs, outputs = function_tensors(concrete)
        described.append({"name": name, "inputs": inputs, "outputs": outputs})
    return described


def _load_uncached(source: Source, scratch: Path) -> LoadedSource:
    if isinstance(source, SavedModelSource):
        return _load_saved_model(source.path, source.tags, "the SavedModel")
    if isinstance(source, KerasSource):
        return _load_keras(source, scratch)
    return _load_python(source, scratch)


def _load_saved_model(path: Path, tags: tuple[str, ...], what: str) -> SavedModelSignatures:
    """Model files are untrusted: any failure to load them names the file and what to do."""
    try:
        loaded = load_saved_model(path, tags)
    except Exception as error:
        raise SourceError(
            _load_failure(what, path, error, _saved_model_damage(path, error), "re-export it")
        ) from error
    return SavedModelSignatures(loaded, str(path))


def _load_keras(source: KerasSource, scratch: Path) -> LoadedSource:
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
        return _load_saved_model(saved_model.path, saved_model.tags, "the Keras model")
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
    return _export_keras_model(model, scratch, str(source.path))


def _keras_load_failure(source: KerasSource, loader: str, error: Exception) -> str:
    damaged = _keras_damage(source, error)
    if damaged is None:
        return f"{loader} could not load {source.path}: {type(error).__name__}: {error}"
    return _load_failure("the Keras model", source.path, error, damaged, "save it again")


def _load_failure(
    what: str, path: Path, error: BaseException, damaged: str | None, remedy: str
) -> str:
    summary = _error_summary(error)
    if damaged is None:
        return f"could not load {what} {path}: {summary}"
    return f"could not load {what} {path}: {damaged} ({summary}); {remedy}"


def _error_summary(error: BaseException) -> str:
    """`Type: the line that says what went wrong`, without TensorFlow's graph-execution preamble."""
    lines = []
    for line in str(error).splitlines():
        line = line.strip()
        if line and not line.startswith(
            ("Graph execution error", "Detected at node", 'File "', "[[")
        ):
            lines.append(line)
    text = re.sub(r"^\{\{function_node [^}]*\}\}\s*", "", lines[0] if lines else "")
    text = re.sub(r"\s*\[Op:[^\]]*\]$", "", text)
    if len(text) > 300:
        text = text[:297] + "..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _saved_model_damage(path: Path, error: BaseException | None) -> str | None:
    """The broken file, from the files themselves, else from what TensorFlow said."""
    try:
        found = savedmodel.damage(path)
    except OSError as os_error:
        return f"its files cannot be read ({os_error})"
    if found is not None or error is None:
        return found
    text = str(error)
    index = f"{savedmodel.VARIABLES_DIR}/{savedmodel.VARIABLES_INDEX}"
    if index in text or "sstable" in text or "block checksum mismatch" in text:
        return f"{index} is corrupt"
    match = re.search(r"shard (\d+) \([^)]*\): Checksum does not match", text)
    if match is not None:
        try:
            shard = savedmodel.data_shard_path(path / savedmodel.VARIABLES_DIR, int(match[1]))
        except savedmodel.SavedModelError:
            return None
        return f"{savedmodel.VARIABLES_DIR}/{shard.name} is corrupt"
    return None


def _keras_damage(source: KerasSource, error: BaseException | None) -> str | None:
    """What is wrong with a Keras file (or tf.keras SavedModel folder), None if it looks whole."""
    path = source.path
    if source.container == "saved_model":
        return _saved_model_damage(path, error)
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


def _export_keras_model(model: Any, scratch: Path, origin: str) -> SavedModelSignatures:
    """Export through the model's own Keras, which knows its layers, then convert as a SavedModel.

    tensorflowjs_converter 4.22 reads Keras 3 files with Keras 2 code (tensorflow/tfjs#8229,
    #8266); Keras 3's `export` writes a plain SavedModel with a `serving_default` signature.
    """
    export_dir = scratch / f"keras-export-{os.getpid()}-{next(_exports)}"  # workers share scratch
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        if _is_keras3_model(model):
            model.export(str(export_dir), format="tf_saved_model", verbose=False)
        else:
            model.save(str(export_dir), save_format="tf", include_optimizer=False)
    except Exception as error:
        raise SourceError(
            f"exporting the Keras model {origin} to a SavedModel failed: "
            f"{type(error).__name__}: {error}"
        ) from error
    return SavedModelSignatures(load_saved_model(export_dir, ("serve",)), origin)


def _is_keras3_model(value: Any) -> bool:
    keras = sys.modules.get("keras")
    return keras is not None and isinstance(value, keras.Model)


def _is_tf_keras_model(value: Any) -> bool:
    tf_keras = sys.modules.get("tf_keras")
    return tf_keras is not None and isinstance(value, tf_keras.Model)


def _load_python(source: PythonSource, scratch: Path) -> LoadedSource:
    factory = _import_callable(source)
    try:
        result = factory()
    except Exception as error:
        raise SourceError(
            f"calling {source.target}() raised {type(error).__name__}: {error}"
            f"{_user_frame(error, source.root)}"
        ) from error
    origin = f"{source.target}()"
    if _is_keras3_model(result) or _is_tf_keras_model(result):
        return _export_keras_model(result, scratch, origin)
    if isinstance(result, Mapping):
        bad = [str(k) for k, v in result.items() if not _is_function(v)]
        if bad:
            raise SourceError(
                f"{origin} returned a mapping whose values for {', '.join(bad)} are not "
                "tf.functions or concrete functions"
            )
        return FunctionSignatures({str(k): v for k, v in result.items()}, origin, result)
    if isinstance(result, tf.Module):
        signatures = getattr(result, "signatures", None)
        if isinstance(signatures, Mapping):
            return FunctionSignatures(dict(signatures), origin, result)
        functions = {}
        for name in dir(result):
            if name.startswith("_"):
                continue
            value = getattr(result, name, None)
            if _is_function(value):
                functions[name] = value
        return FunctionSignatures(functions, origin, result)
    raise SourceError(
        f"{origin} returned {type(result).__module__}.{type(result).__qualname__}; expected a "
        "tf.Module with tf.functions, a Keras model, or a mapping {signature name: tf.function}"
    )


def _import_callable(source: PythonSource) -> Any:
    root = str(source.root)
    if root not in sys.path:
        sys.path.insert(0, root)
    try:
        module = importlib.import_module(source.module)
    except Exception as error:
        raise SourceError(
            f"importing {source.module} failed: {type(error).__name__}: {error}"
            f"{_user_frame(error, source.root)}"
        ) from error
    value: Any = module
    for part in source.attribute.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            raise SourceError(
                f"{source.module} has no attribute '{source.attribute}'; "
                "check the name after ':' in `python:`"
            ) from None
    if not callable(value):
        raise SourceError(
            f"{source.target} is a {type(value).__name__}, not a callable; name a function "
            "that returns the model"
        )
    return value


def _is_function(value: Any) -> bool:
    return isinstance(
        value, tf.types.experimental.GenericFunction | tf.types.experimental.ConcreteFunction
    )


def _user_frame(error: BaseException, root: Path | None = None) -> str:
    """` (at models/net.py:12)`: the innermost frame outside TensorFlow and tfjs-build."""
    for frame in reversed(traceback.extract_tb(error.__traceback__)):
        path = Path(frame.filename)
        if root is not None and path.is_relative_to(root):
            return f" (at {path.relative_to(root).as_posix()}:{frame.lineno})"
    # autograph reports the user's frame in its message instead of the traceback
    match = re.search(r'File "([^"]+)", line (\d+), in ', str(error))
    if match is not None:
        return f" (at {Path(match.group(1)).name}:{match.group(2)})"
    return ""


def _user_error(error: BaseException) -> str:
    """`Type: message`; autograph puts the real error after an "in user code:" preamble."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if len(lines) > 1 and lines[0] == "in user code:":
        return lines[-1]
    return f"{type(error).__name__}: {error}"
