"""Load a `python:` source in a worker: import `module:callable` from the manifest's folder and
call it; a Keras model it returns is exported like a `keras:` source, functions are frozen
straight from memory. Errors point at the user's own line.

Imports TensorFlow and runs the user's code: only ever imported inside worker processes.
"""

from __future__ import annotations

import tfjsbuild.worker.environment  # noqa: F401  (first: TensorFlow reads it when imported)

# isort: split

import importlib
import re
import sys
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tensorflow as tf

from tfjsbuild.errors import SignatureError, SourceError
from tfjsbuild.files.artifacts import GraphModelOutput, TensorSpec
from tfjsbuild.manifest.types import ConverterOptions, PythonSource
from tfjsbuild.worker import convert
from tfjsbuild.worker.errors import ConversionError
from tfjsbuild.worker.functions import concrete_function, function_tensors, run_function
from tfjsbuild.worker.load_keras import export_keras_model, is_keras3_model, is_tf_keras_model
from tfjsbuild.worker.loaded import (
    KindLoader,
    LoadedSource,
    all_functions,
    require_signature,
    user_error,
)


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
        require_signature(signature, self.functions_by_name, self.origin)
        try:
            function = concrete_function(self.functions_by_name[signature])
        except ConversionError as error:
            raise SignatureError(f"signature '{signature}': {error}") from error
        except Exception as error:  # the user's code, traced now
            raise SignatureError(
                f"tracing signature '{signature}' of {self.origin} raised "
                f"{user_error(error)}{_user_frame(error)}"
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

    def input_specs(self, signature: str) -> tuple[TensorSpec, ...]:
        function = concrete_function(self.functions_by_name[signature])
        return function_tensors(function)[0]

    def run(self, signature: str, inputs: Mapping[str, Any]) -> dict[str, Any]:
        return run_function(self.functions_by_name[signature], inputs)


def load_python(source: PythonSource, scratch: Path) -> LoadedSource:
    factory = _import_callable(source)
    try:
        result = factory()
    except Exception as error:
        raise SourceError(
            f"calling {source.target}() raised {type(error).__name__}: {error}"
            f"{_user_frame(error, source.root)}"
        ) from error
    origin = f"{source.target}()"
    if is_keras3_model(result) or is_tf_keras_model(result):
        return export_keras_model(result, scratch, origin)
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


# User code runs again, as it may differ: a failure is not remembered.
LOADER = KindLoader(
    "python",
    load_python,
    all_functions(load_python),
    remember_failures=False,
    outlives_build=False,  # it may return a Keras model, exported into scratch
    worker_outlives_build=False,
)
