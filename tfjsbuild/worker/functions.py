"""A `tf.function` as a converted signature sees it: its tensors by key, and running it.

What verification compares TensorFlow.js against, for Python sources and SavedModel
signatures alike: inputs and outputs keyed as model.json keys them. Imports TensorFlow;
converts and writes nothing.
"""

from __future__ import annotations

import tfjsbuild.worker.environment  # noqa: F401  (first: TensorFlow reads it when imported)

# isort: split
from collections.abc import Mapping
from typing import Any

import numpy as np
import tensorflow as tf

from tfjsbuild.files.artifacts import TensorSpec
from tfjsbuild.worker.errors import ConversionError
from tfjsbuild.worker.signature_defs import flatten_with_paths, input_keys, output_keys


def concrete_function(function: Any) -> Any:
    """The ConcreteFunction of a `tf.function` with an input signature (or of itself)."""
    if isinstance(function, tf.types.experimental.GenericFunction):
        try:
            function = function.get_concrete_function()
        except (TypeError, ValueError) as error:
            raise ConversionError(
                "a tf.function needs an input_signature (or pass fn.get_concrete_function(...)): "
                f"{error}"
            ) from error
    if not isinstance(function, tf.types.experimental.ConcreteFunction):
        raise ConversionError(
            f"expected a tf.function or ConcreteFunction, got {type(function).__name__}"
        )
    return function


def function_tensors(function: Any) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """A ConcreteFunction's input and output tensors as signature keys, dtypes and shapes."""
    args, kwargs = function.structured_input_signature
    flat = tf.nest.flatten(args)
    inputs = [(spec.name or f"input_{i}", spec) for i, spec in enumerate(flat)]
    inputs += [(str(path), spec) for path, spec in flatten_with_paths(kwargs)]
    outputs = list(zip(output_keys(function), function.outputs, strict=False))

    def tensor(key: str, spec: Any) -> TensorSpec:
        shape = spec.shape
        dims = None if shape.rank is None else tuple(shape.as_list())
        return TensorSpec(name=key, dtype=spec.dtype.name, shape=dims)

    return tuple(tensor(k, s) for k, s in inputs), tuple(tensor(k, t) for k, t in outputs)


def run_function(function: Any, inputs: Mapping[str, Any]) -> dict[str, Any]:
    """Run a function on numpy inputs keyed as its converted signature is; outputs likewise."""
    concrete = concrete_function(function)
    args, kwargs = concrete.structured_input_signature
    keys = iter(input_keys(concrete))
    positional = [
        tf.constant(inputs[next(keys)], dtype=spec.dtype) for spec in tf.nest.flatten(args)
    ]
    named = [tf.constant(inputs[next(keys)], dtype=spec.dtype) for spec in tf.nest.flatten(kwargs)]
    result = concrete(
        *tf.nest.pack_sequence_as(args, positional), **tf.nest.pack_sequence_as(kwargs, named)
    )
    return {
        key: _numpy(tensor)
        for key, tensor in zip(output_keys(concrete), tf.nest.flatten(result), strict=True)
    }


def _numpy(tensor: Any) -> Any:
    value = tensor.numpy()
    if tensor.dtype == tf.string:  # bytes -> str, as TensorFlow.js returns them
        return np.vectorize(lambda b: b.decode("utf-8", "replace"), otypes=[object])(value)
    return value
