"""The only module that imports TensorFlow and tensorflowjs.

Loads a SavedModel once and converts any number of its signatures, each into its own folder,
through the same steps as `tensorflowjs_converter` (freeze, grappler, write) but with the
signature's input/output keys taken from the function's structured inputs and outputs, and with
every output checked on disk before it counts.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# tensorflow_decision_forests (imported by tensorflowjs) imports IPython to print a welcome
# message whenever stdout is not a terminal, and fails where IPython is not installed.
os.environ.setdefault("TFDF_DISABLE_WELCOME_MESSAGE", "1")

import numpy as np
import tensorflow as tf
from google.protobuf.json_format import MessageToDict
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow.python.checkpoint.trackable_view import TrackableView
from tensorflow.python.util import nest
from tensorflowjs.converters import tf_saved_model_conversion_v2 as tfjs_v2

from tfjsbuild.artifacts import GraphModelOutput, check_graph_model
from tfjsbuild.errors import BuildError
from tfjsbuild.manifest import ConverterOptions

STRUCTURED_OUTPUTS_KEYS_KEY = "structuredOutputKeys"


class ConversionError(BuildError):
    """A signature that could not be converted; the message is the converter's real error."""


@dataclass
class LoadedSavedModel:
    """A SavedModel loaded once, with its resource initializer frozen once for all signatures."""

    path: Path
    tags: tuple[str, ...]
    model: Any
    tf_version: str
    _meta_graph: Any = field(default=None, init=False)
    _initializer: tuple[Any, Any] | None = field(default=None, init=False)
    _initializer_done: bool = field(default=False, init=False)

    def signature_def(self, name: str) -> Any:
        """The SignatureDef as saved, to check the converted keys against."""
        if self._meta_graph is None:
            self._meta_graph = tfjs_v2.get_meta_graph_def(str(self.path), ",".join(self.tags))
        return self._meta_graph.signature_def.get(name, None)

    def initializer(self, control_flow_v2: bool) -> tuple[Any, Any] | None:
        """(initializer concrete function, its frozen graph) for lookup tables and the like.

        tensorflowjs rebuilds this per conversion, and doing so mutates the loaded model's
        resources, so on a model loaded once it is computed once.
        """
        if not self._initializer_done:
            self._initializer_done = True
            function = tfjs_v2._get_resource_initializer_concrete_function(self.model)
            if function is not None:
                self._initializer = (
                    function,
                    tfjs_v2._freeze_saved_model_v2(function, control_flow_v2),
                )
        return self._initializer


def load_saved_model(path: Path, tags: tuple[str, ...]) -> LoadedSavedModel:
    model = tfjs_v2._load_model(str(path), list(tags) if tags else None)
    try:
        tf_version = str(model.tensorflow_version)
    except AttributeError:
        tf_version = tf.__version__
    loaded = LoadedSavedModel(path=path, tags=tags, model=model, tf_version=tf_version)
    # Read now: a Keras export's folder is removed after the build.
    loaded.signature_def("")
    return loaded


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
    return _convert_function(
        concrete_func,
        output_dir,
        options,
        tf_version=loaded.tf_version,
        loaded=loaded,
        expected=expected,
        timings=timings,
    )


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


def function_tensors(function: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A ConcreteFunction's input and output tensors as signature keys, dtypes and shapes."""
    args, kwargs = function.structured_input_signature
    flat = tf.nest.flatten(args)
    inputs = [(spec.name or f"input_{i}", spec) for i, spec in enumerate(flat)]
    inputs += [(str(path), spec) for path, spec in _flatten_with_paths(kwargs)]
    outputs = list(zip(_output_keys(function), function.outputs, strict=False))

    def tensor(key: str, spec: Any) -> dict[str, Any]:
        shape = spec.shape
        return {
            "name": key,
            "dtype": spec.dtype.name,
            "shape": None if shape.rank is None else list(shape.as_list()),
        }

    return [tensor(k, s) for k, s in inputs], [tensor(k, t) for k, t in outputs]


def run_function(function: Any, inputs: Mapping[str, Any]) -> dict[str, Any]:
    """Run a function on numpy inputs keyed as its converted signature is; outputs likewise."""
    concrete = concrete_function(function)
    args, kwargs = concrete.structured_input_signature
    keys = iter(_input_keys(concrete))
    positional = [
        tf.constant(inputs[next(keys)], dtype=spec.dtype) for spec in tf.nest.flatten(args)
    ]
    named = [tf.constant(inputs[next(keys)], dtype=spec.dtype) for spec in tf.nest.flatten(kwargs)]
    result = concrete(
        *tf.nest.pack_sequence_as(args, positional), **tf.nest.pack_sequence_as(kwargs, named)
    )
    return {
        key: _numpy(tensor)
        for key, tensor in zip(_output_keys(concrete), tf.nest.flatten(result), strict=True)
    }


def _numpy(tensor: Any) -> Any:
    value = tensor.numpy()
    if tensor.dtype == tf.string:  # bytes -> str, as TensorFlow.js returns them
        return np.vectorize(lambda b: b.decode("utf-8", "replace"), otypes=[object])(value)
    return value


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


def convert_layers_model(
    path: Path,
    container: str,
    output_dir: Path,
    options: ConverterOptions,
    timings: dict[str, float] | None = None,
) -> GraphModelOutput:
    """A tf.keras `.h5` file or SavedModel folder to a TensorFlow.js layers model."""
    from tensorflowjs.converters import converter as tfjs_converter

    arguments: dict[str, Any] = {
        "quantization_dtype_map": options.quantization_dtype_map() or None,
        "weight_shard_size_bytes": options.weight_shard_size_bytes,
        "metadata": options.metadata or None,
    }
    with _timed(timings, "write"):
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
    _canonical_model_json(output_dir)
    return check_graph_model(output_dir)


@contextmanager
def _timed(timings: dict[str, float] | None, phase: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        if timings is not None:
            timings[phase] = timings.get(phase, 0.0) + time.perf_counter() - start


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
    output_dir.mkdir(parents=True, exist_ok=True)
    metadata = options.metadata
    if options.use_structured_outputs_names:
        metadata[STRUCTURED_OUTPUTS_KEYS_KEY] = _structured_output_keys_for_metadata(concrete_func)

    with _timed(timings, "freeze"):
        try:
            frozen_graph = tfjs_v2._freeze_saved_model_v2(concrete_func, options.control_flow_v2)
        except Exception as error:
            raise ConversionError(
                f"freezing the graph failed: {type(error).__name__}: {error}"
            ) from error
        initializer = loaded.initializer(options.control_flow_v2) if loaded is not None else None
        resource_ids_maps: tuple[dict[str, int], dict[str, int]] | None = None
        initializer_graph_def = None
        initializer_signature_def = None
        if initializer is not None:
            init_function, init_graph = initializer
            resource_ids_maps = _resource_ids_maps(loaded, concrete_func, init_function)
        # Only a signature that captures a resource (a table) needs the initializer graph;
        # tensorflowjs adds it to every signature of the model.
        if resource_ids_maps is not None and not resource_ids_maps[0]:
            resource_ids_maps = None
        if initializer is not None and resource_ids_maps is not None:
            _, init_graph = initializer
            initializer_graph_def = init_graph.as_graph_def()  # a fresh proto: writing mutates it
            _stable_shared_names(initializer_graph_def)
            # tensorflowjs checks only the inference graph; a table initialised from a text file
            # converts "fine" and then fails in the browser (and embeds a local file path).
            unsupported = tfjs_v2.validate(
                initializer_graph_def, options.skip_op_check, options.strip_debug_ops
            )
            if unsupported:
                raise ConversionError(
                    "Unsupported Ops in the model's resource initializer: "
                    + ", ".join(sorted(unsupported))
                    + " (TensorFlow.js cannot run them; e.g. initialise lookup tables from tensors "
                    "with tf.lookup.KeyValueTensorInitializer instead of a vocabulary file)"
                )
            if hasattr(init_graph, "outputs"):
                initializer_signature_def = tfjs_v2._build_signature_def(
                    init_graph, [], init_graph.outputs
                )
        signature = _signature_def(frozen_graph, concrete_func)
        if expected is not None:
            _check_keys(signature, expected)

    if loaded is not None:
        model_ops = set(tfjs_v2._get_frozen_graph_ops(frozen_graph))
        if initializer is not None:
            model_ops |= set(tfjs_v2._get_frozen_graph_ops(initializer[1]))
        if tfjs_v2._is_assets_required(model_ops):
            tfjs_v2._copy_assets(str(loaded.path), str(output_dir))

    with _timed(timings, "optimize"):
        try:
            optimized = tfjs_v2.optimize_graph(
                frozen_graph,
                signature,
                skip_op_check=options.skip_op_check,
                strip_debug_ops=options.strip_debug_ops,
            )
        except ValueError as error:
            raise ConversionError(str(error).replace("\n", ": ")) from error

    _check_fused_activations(optimized)

    with _timed(timings, "write"):
        weights = tfjs_v2.extract_weights(optimized, initializer_graph_def)
        tfjs_v2.write_artifacts(
            MessageToDict(optimized),
            weights,
            str(output_dir / "model.json"),
            tf_version,
            signature,
            quantization_dtype_map=options.quantization_dtype_map() or None,
            weight_shard_size_bytes=options.weight_shard_size_bytes,
            initializer_graph_def=initializer_graph_def,
            initializer_signature_def=initializer_signature_def,
            resource_ids_maps=resource_ids_maps,
            metadata=metadata or None,
        )
    # tensorflowjs has silently written nothing before (optimize_graph's API changed in 4.x):
    # an output only counts once it is on disk and adds up.
    _canonical_model_json(output_dir)
    return check_graph_model(output_dir)


def _canonical_model_json(output_dir: Path) -> None:
    """Rewrite model.json with sorted keys: tensorflowjs writes protobuf maps (node attributes)
    in an order that differs between processes, so the same conversion gave different bytes
    on different workers, defeating content hashes and caches. TF.js reads either."""
    model_json = output_dir / "model.json"
    if model_json.is_file():
        data = json.loads(model_json.read_text("utf-8"))
        try:
            text = json.dumps(data, sort_keys=True, allow_nan=False)
        except ValueError as error:  # Python's json reads NaN; TensorFlow.js's JSON.parse not
            raise ConversionError(
                f"tensorflowjs wrote a model.json holding NaN or infinity ({error}), which "
                "TensorFlow.js cannot parse"
            ) from error
        model_json.write_text(text, "utf-8")


# What TensorFlow.js 4.22 can fuse into _FusedMatMul / FusedConv2D (backend applyActivation).
TFJS_FUSED_ACTIVATIONS = frozenset({"relu", "relu6", "elu", "leakyrelu", "prelu", "sigmoid"})


def _check_fused_activations(graph_def: Any) -> None:
    """Refuse fused activations TensorFlow.js cannot run; they would fail only in the browser.

    TensorFlow's oneDNN rewrites (on by default on x86) fuse e.g. Tanh into `_FusedMatMul`
    (tensorflow/tensorflow#42173). Workers turn oneDNN off; a process that imported
    TensorFlow with it on (the Python API) can still produce such a graph.
    """
    nodes = list(graph_def.node)
    for function in graph_def.library.function:
        nodes.extend(function.node_def)
    for node in nodes:
        if "fused_ops" not in node.attr:
            continue
        fused = [op.decode("utf-8") for op in node.attr["fused_ops"].list.s]
        activation = fused[1] if len(fused) > 1 else None
        if activation is not None and activation.lower() not in TFJS_FUSED_ACTIVATIONS:
            raise ConversionError(
                f"node {node.name} fuses {activation} into {node.op}, which TensorFlow.js cannot "
                "run (it fuses only Relu, Relu6, Elu, LeakyRelu, Prelu and Sigmoid); TensorFlow's "
                "oneDNN rewrites made it: set TF_ENABLE_ONEDNN_OPTS=0 before importing TensorFlow"
            )


def _stable_shared_names(graph_def: Any) -> None:
    """Name lookup tables after their node, not the export path TensorFlow put in shared_name.

    TensorFlow.js keys tables by node name and ignores shared_name, but the path made two
    exports of the same model convert to different bytes.
    """
    for node in graph_def.node:
        if "shared_name" in node.attr and node.attr["shared_name"].s:
            node.attr["shared_name"].s = node.name.encode("utf-8")


def _input_keys(concrete_func: Any) -> list[str]:
    """Keys of the user inputs, in the order of `concrete_func.inputs`."""
    args, kwargs = concrete_func.structured_input_signature
    flat_args = tf.nest.flatten(args)
    keys = [spec.name or f"input_{index}" for index, spec in enumerate(flat_args)]
    keys += [str(path) for path, _ in _flatten_with_paths(kwargs)]
    return keys


def _output_keys(concrete_func: Any) -> list[str]:
    """Keys of the outputs, in the order of `concrete_func.outputs`.

    A dict output keeps its keys (as SavedModel signatures do); anything else is named
    output_0, output_1, ... as TensorFlow names the outputs of a non-dict signature.
    """
    structured = concrete_func.structured_outputs
    if isinstance(structured, dict):
        return [str(path) for path, _ in _flatten_with_paths(structured)]
    count = len(tf.nest.flatten(structured))
    return [f"output_{index}" for index in range(count)]


def _flatten_with_paths(structure: Any) -> list[tuple[str, Any]]:
    # The public tf.nest lacks the path variants; tf.function's own code uses this module.
    return list(nest.flatten_with_joined_string_paths(structure, separator="/"))


def _structured_output_keys_for_metadata(concrete_func: Any) -> list[str]:
    structured = concrete_func.structured_outputs
    if not isinstance(structured, dict):
        raise ConversionError("use_structured_outputs_names needs a signature that returns a dict")
    return sorted(structured)


def _signature_def(frozen_graph: Any, concrete_func: Any) -> Any:
    """The SignatureDef written to model.json, keyed like the source signature.

    tensorflowjs matches outputs to SignatureDef keys by dtype and shape, which gives tensor
    names such as `Identity_1:0` whenever two outputs look alike. The function's structured
    outputs say exactly which tensor each key is.
    """
    signature = meta_graph_pb2.SignatureDef()
    input_keys = _input_keys(concrete_func)
    # Captured inputs that survive freezing (resource handles such as tables) keep their
    # tensor name as key, as tensorflowjs does: write_artifacts attaches their resource ids.
    input_keys += [t.name for t in concrete_func.inputs[len(input_keys) :]]
    for key, tensor in zip(input_keys, concrete_func.inputs, strict=True):
        try:
            op = frozen_graph.get_operation_by_name(tensor.name.split(":")[0])
        except KeyError:
            continue  # freezing removed it
        if op.type == "Const":
            continue
        signature.inputs[key].name = tensor.name
        signature.inputs[key].dtype = tensor.dtype.as_datatype_enum
        signature.inputs[key].tensor_shape.CopyFrom(tensor.shape.as_proto())
    output_keys = _output_keys(concrete_func)
    if len(output_keys) != len(concrete_func.outputs):
        raise ConversionError(
            f"the function has {len(concrete_func.outputs)} output tensors but its structured "
            f"outputs name {len(output_keys)}; cannot tell which key is which"
        )
    for key, tensor in zip(output_keys, concrete_func.outputs, strict=True):
        signature.outputs[key].name = tensor.name
        signature.outputs[key].dtype = tensor.dtype.as_datatype_enum
        signature.outputs[key].tensor_shape.CopyFrom(tensor.shape.as_proto())
    return signature


def _check_keys(signature: Any, expected: Any) -> None:
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


def _resource_ids_maps(
    loaded: LoadedSavedModel | None, concrete_func: Any, init_function: Any
) -> tuple[dict[str, int], dict[str, int]] | None:
    """Like tensorflowjs's, but only for the resources this signature actually captures."""
    if loaded is None:
        return None
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
        model_inputs[concrete_func.inputs[captured[handle_id] + offset].name] = handle_id
        init_outputs[init_function.outputs[index].name] = handle_id
    return model_inputs, init_outputs
