"""The keys a converted signature gets, and the SignatureDef written into model.json.

A function's structured inputs and outputs name its tensors (as a SavedModel signature does);
they, not tensorflowjs's guesses by dtype and shape, decide which key is which tensor, and the
result must match the SavedModel's own SignatureDef. Imports TensorFlow; writes nothing.
"""

from __future__ import annotations

import tfjsbuild.worker.environment  # noqa: F401  (first: TensorFlow reads it when imported)

# isort: split
from typing import Any

import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow.python.util import nest

from tfjsbuild.worker.errors import ConversionError

STRUCTURED_OUTPUTS_KEYS_KEY = "structuredOutputKeys"


def input_keys(concrete_func: Any) -> list[str]:
    """Keys of the user inputs, in the order of `concrete_func.inputs`."""
    args, kwargs = concrete_func.structured_input_signature
    flat_args = tf.nest.flatten(args)
    keys = [spec.name or f"input_{index}" for index, spec in enumerate(flat_args)]
    keys += [str(path) for path, _ in flatten_with_paths(kwargs)]
    return keys


def output_keys(concrete_func: Any) -> list[str]:
    """Keys of the outputs, in the order of `concrete_func.outputs`.

    A dict output keeps its keys (as SavedModel signatures do); anything else is named
    output_0, output_1, ... as TensorFlow names the outputs of a non-dict signature.
    """
    structured = concrete_func.structured_outputs
    if isinstance(structured, dict):
        return [str(path) for path, _ in flatten_with_paths(structured)]
    count = len(tf.nest.flatten(structured))
    return [f"output_{index}" for index in range(count)]


def flatten_with_paths(structure: Any) -> list[tuple[str, Any]]:
    # The public tf.nest lacks the path variants; tf.function's own code uses this module.
    return list(nest.flatten_with_joined_string_paths(structure, separator="/"))


def structured_output_keys_for_metadata(concrete_func: Any) -> list[str]:
    structured = concrete_func.structured_outputs
    if not isinstance(structured, dict):
        raise ConversionError("use_structured_outputs_names needs a signature that returns a dict")
    return sorted(structured)


def signature_def(frozen_graph: Any, concrete_func: Any) -> Any:
    """The SignatureDef written to model.json, keyed like the source signature.

    tensorflowjs matches outputs to SignatureDef keys by dtype and shape, which gives tensor
    names such as `Identity_1:0` whenever two outputs look alike. The function's structured
    outputs say exactly which tensor each key is.
    """
    signature = meta_graph_pb2.SignatureDef()
    keys = input_keys(concrete_func)
    # Captured inputs that survive freezing (resource handles such as tables) keep their
    # tensor name as key, as tensorflowjs does: write_artifacts attaches their resource ids.
    keys += [t.name for t in concrete_func.inputs[len(keys) :]]
    for key, tensor in zip(keys, concrete_func.inputs, strict=True):
        try:
            op = frozen_graph.get_operation_by_name(tensor.name.split(":")[0])
        except KeyError:
            continue  # freezing removed it
        if op.type == "Const":
            continue
        signature.inputs[key].name = tensor.name
        signature.inputs[key].dtype = tensor.dtype.as_datatype_enum
        signature.inputs[key].tensor_shape.CopyFrom(tensor.shape.as_proto())
    outputs = output_keys(concrete_func)
    if len(outputs) != len(concrete_func.outputs):
        raise ConversionError(
            f"the function has {len(concrete_func.outputs)} output tensors but its structured "
            f"outputs name {len(outputs)}; cannot tell which key is which"
        )
    for key, tensor in zip(outputs, concrete_func.outputs, strict=True):
        signature.outputs[key].name = tensor.name
        signature.outputs[key].dtype = tensor.dtype.as_datatype_enum
        signature.outputs[key].tensor_shape.CopyFrom(tensor.shape.as_proto())
    return signature


def check_keys(signature: Any, expected: Any) -> None:
    for side in ("inputs", "outputs"):
        tensors = getattr(signature, side)
        # Resource handles (tables) are wired up by TensorFlow.js, not fed by users.
        got = {key for key in tensors if tensors[key].dtype != tf.resource.as_datatype_enum}
        want = set(getattr(expected, side).keys())
        if got != want:
            raise ConversionError(
                f"converted {side} {sorted(got)} do not match the SavedModel signature's "
                f"{sorted(want)}; refusing to write a model whose keys differ"
            )
