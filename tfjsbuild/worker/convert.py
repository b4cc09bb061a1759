"""Convert a SavedModel's signatures, or a lone `tf.function`, into TensorFlow.js graph models.

Through the same steps as `tensorflowjs_converter` (freeze, grappler, write) but with the
signature's input/output keys taken from the function's structured inputs and outputs, and with
every output checked on disk before it counts. A TF1 SavedModel's signatures take `tf1.py`'s
path. Like all code under `worker/` (the only code that imports TensorFlow), this runs in a
worker process, or in a caller of the Python API that has TensorFlow loaded already.
"""

from __future__ import annotations

import tfjsbuild.worker.environment  # noqa: F401  (first: TensorFlow reads it when imported)

# isort: split
from pathlib import Path
from typing import Any

import tensorflow as tf
from tensorflow.python.checkpoint.trackable_view import TrackableView
from tensorflowjs.converters import tf_saved_model_conversion_v2 as tfjs_v2

from tfjsbuild.files.artifacts import GraphModelOutput
from tfjsbuild.manifest.types import ConverterOptions
from tfjsbuild.worker.errors import ConversionError
from tfjsbuild.worker.functions import concrete_function
from tfjsbuild.worker.native_log import capture_native_log, with_native_cause
from tfjsbuild.worker.saved_model import LoadedSavedModel
from tfjsbuild.worker.signature_defs import (
    STRUCTURED_OUTPUTS_KEYS_KEY,
    check_keys,
    signature_def,
    structured_output_keys_for_metadata,
)
from tfjsbuild.worker.stable_names import stable_shared_names
from tfjsbuild.worker.tf1 import convert_tf1_signature
from tfjsbuild.worker.timing import timed
from tfjsbuild.worker.write import (
    Initializer,
    check_initializer_ops,
    optimize_and_write,
)


def convert_signature(
    loaded: LoadedSavedModel,
    signature_name: str,
    output_dir: Path,
    options: ConverterOptions,
    timings: dict[str, float] | None = None,
) -> GraphModelOutput:
    """Convert one signature of a loaded SavedModel into `output_dir` and check the result."""
    signatures = loaded.model.signatures
    if signature_name not in signatures:
        available = ", ".join(sorted(signatures.keys())) or "none"
        raise ConversionError(
            f"signature '{signature_name}' is not in {loaded.path} (it has: {available})"
        )
    concrete_func = signatures[signature_name]
    expected = loaded.signature_def(signature_name)
    if loaded.is_tf1:
        return convert_tf1_signature(loaded, signature_name, output_dir, options, timings)
    return _convert_function(
        concrete_func,
        output_dir,
        options,
        tf_version=loaded.tf_version,
        loaded=loaded,
        expected=expected,
        timings=timings,
    )


def convert_concrete_function(
    function: Any,
    output_dir: Path,
    options: ConverterOptions,
    timings: dict[str, float] | None = None,
) -> GraphModelOutput:
    """Convert a `tf.function` (with an input signature) or a ConcreteFunction, no SavedModel."""
    return _convert_function(
        concrete_function(function),
        output_dir,
        options,
        tf_version=tf.__version__,
        loaded=None,
        expected=None,
        timings=timings,
    )


def _convert_function(
    concrete_func: Any,
    output_dir: Path,
    options: ConverterOptions,
    *,
    tf_version: str,
    loaded: LoadedSavedModel | None,
    expected: Any,
    timings: dict[str, float] | None,
) -> GraphModelOutput:
    """A ConcreteFunction frozen as tensorflowjs_converter's TF2 path freezes it, keyed by its
    structured inputs and outputs, and checked against the SavedModel's SignatureDef
    (`expected`) when there is one."""
    output_dir.mkdir(parents=True, exist_ok=True)
    metadata = options.metadata
    if options.use_structured_outputs_names:
        metadata[STRUCTURED_OUTPUTS_KEYS_KEY] = structured_output_keys_for_metadata(concrete_func)

    with timed(timings, "freeze"):
        frozen_graph = _freeze(concrete_func, options)
        initializer = _signature_initializer(loaded, concrete_func, options)
        signature = signature_def(frozen_graph, concrete_func)
        if expected is not None:
            check_keys(signature, expected)

    return optimize_and_write(
        frozen_graph,
        signature,
        output_dir,
        options,
        tf_version=tf_version,
        saved_model=loaded.path if loaded is not None else None,
        initializer=initializer,
        metadata=metadata,
        timings=timings,
    )


def _freeze(concrete_func: Any, options: ConverterOptions) -> Any:
    """The function's graph with its variables as constants, or the cause TensorFlow logged."""
    native_log: list[str] = []
    try:
        with capture_native_log(native_log):
            return tfjs_v2._freeze_saved_model_v2(concrete_func, options.control_flow_v2)
    except Exception as error:
        raise ConversionError(
            f"freezing the graph failed: {with_native_cause(error, native_log)}"
        ) from error


def _signature_initializer(
    loaded: LoadedSavedModel | None, concrete_func: Any, options: ConverterOptions
) -> Initializer:
    """The model's resource initializer (lookup tables), as far as this signature needs it."""
    initializer = loaded.initializer(options.control_flow_v2) if loaded is not None else None
    if loaded is None or initializer is None:
        return Initializer()
    init_function, init_graph = initializer
    resource_ids_maps = _resource_ids_maps(loaded, concrete_func, init_function)
    # Only a signature that captures a resource (a table) needs the initializer graph;
    # tensorflowjs adds it to every signature of the model.
    if not resource_ids_maps[0]:
        return Initializer(graph=init_graph)
    initializer_graph_def = init_graph.as_graph_def()  # a fresh proto: writing mutates it
    stable_shared_names(initializer_graph_def)
    check_initializer_ops(initializer_graph_def, options)
    initializer_signature_def = None
    if hasattr(init_graph, "outputs"):
        initializer_signature_def = tfjs_v2._build_signature_def(init_graph, [], init_graph.outputs)
    return Initializer(
        graph=init_graph,
        graph_def=initializer_graph_def,
        signature_def=initializer_signature_def,
        resource_ids_maps=resource_ids_maps,
    )


def _resource_ids_maps(
    loaded: LoadedSavedModel, concrete_func: Any, init_function: Any
) -> tuple[dict[str, int], dict[str, int]]:
    """Like tensorflowjs's, but only for the resources this signature actually captures, and
    numbered by their place in the model: tensorflowjs uses the handle tensors' ids, a
    process-wide counter, so a table model's model.json depended on what its worker loaded
    before. TF.js only matches the numbers between inputs and initializer outputs."""
    resources = [
        obj
        for obj in TrackableView(loaded.model).descendants()
        if isinstance(obj, tf.saved_model.experimental.TrackableResource)
    ]
    captured = {tensor._id: index for index, tensor in enumerate(concrete_func.captured_inputs)}
    offset = len(concrete_func.inputs) - len(concrete_func.captured_inputs)
    model_inputs: dict[str, int] = {}
    init_outputs: dict[str, int] = {}
    for index, resource in enumerate(resources):
        handle_id = resource.resource_handle._id
        if handle_id not in captured:
            continue
        model_inputs[concrete_func.inputs[captured[handle_id] + offset].name] = index
        init_outputs[init_function.outputs[index].name] = index
    return model_inputs, init_outputs
