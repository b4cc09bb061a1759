"""The only module that imports TensorFlow and tensorflowjs.

Loads a SavedModel once and converts any number of its signatures, each into its own folder,
through the same steps as `tensorflowjs_converter` (freeze, grappler, write) but with the
signature's input/output keys taken from the function's structured inputs and outputs, and with
every output checked on disk before it counts.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import sys
import tempfile
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

from tfjsbuild.errors import BuildError
from tfjsbuild.files.artifacts import GraphModelOutput, check_graph_model
from tfjsbuild.manifest.types import ConverterOptions

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
    # What TensorFlow is given: `path`, or a link to it without glob characters (see below).
    load_path: Path | None = None
    _meta_graph: Any = field(default=None, init=False)
    _initializer: tuple[Any, Any] | None = field(default=None, init=False)
    _initializer_done: bool = field(default=False, init=False)

    def signature_def(self, name: str) -> Any:
        """The SignatureDef as saved, to check the converted keys against."""
        if self._meta_graph is None:
            self._meta_graph = tfjs_v2.get_meta_graph_def(
                str(self.load_path or self.path), ",".join(self.tags)
            )
        return self._meta_graph.signature_def.get(name, None)

    @property
    def is_tf1(self) -> bool:
        """Saved without an object graph, as TF1's `SavedModelBuilder` saves."""
        self.signature_def("")
        return not self._meta_graph.object_graph_def.nodes

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
    load_path = _without_glob_characters(path)
    model = tfjs_v2._load_model(str(load_path), list(tags) if tags else None)
    try:
        tf_version = str(model.tensorflow_version)
    except AttributeError:
        tf_version = tf.__version__
    loaded = LoadedSavedModel(
        path=path, tags=tags, model=model, tf_version=tf_version, load_path=load_path
    )
    # Read now: a Keras export's folder is removed after the build.
    loaded.signature_def("")
    return loaded


def _without_glob_characters(path: Path) -> Path:
    """`path`, or a link to it whose path has no `[`, `*` or `?`.

    TensorFlow reads a checkpoint's `variables/variables` prefix as a glob pattern, so a model
    in a folder named `models[v2]` fails to load ("Unsuccessful TensorSliceReader constructor").
    The link lives in a temporary folder removed when the worker exits.
    """
    if not any(character in str(path) for character in "[]*?"):
        return path
    folder = Path(tempfile.mkdtemp(prefix="tfjs-build-model-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    link = folder / "model"
    link.symlink_to(path.resolve(), target_is_directory=True)
    return link


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
        return _convert_tf1_signature(loaded, signature_name, output_dir, options, timings)
    return _convert_function(
        concrete_func,
        output_dir,
        options,
        tf_version=loaded.tf_version,
        loaded=loaded,
        expected=expected,
        timings=timings,
    )


# The lookup tables TensorFlow.js runs, and the ops that fill them (tfjs-converter's op list;
# the text-file ones are there to be refused by name, as for TF2 models).
_TABLE_OPS = frozenset({"HashTable", "HashTableV2"})
_TABLE_INIT_OPS = frozenset(
    {
        "InitializeTable",
        "InitializeTableV2",
        "LookupTableImport",
        "LookupTableImportV2",
        "InitializeTableFromTextFile",
        "InitializeTableFromTextFileV2",
    }
)


def _convert_tf1_signature(
    loaded: LoadedSavedModel,
    signature_name: str,
    output_dir: Path,
    options: ConverterOptions,
    timings: dict[str, float] | None,
) -> GraphModelOutput:
    """A signature of a TF1 SavedModel, frozen in a session as TensorFlow Serving runs it.

    Loaded in TF2, a TF1 model's signatures are functions pruned from its graph, without the
    `main_op` that fills its lookup tables; grappler then refuses them ("Init node
    key_value_init/LookupTableImportV2 doesn't exist in graph"). tensorflowjs_converter falls
    back to freezing in a TF1 session for any model its TF2 path fails on; here every TF1 model
    takes that path, so how a model converts does not depend on which error came first.
    The session lives for one signature, so memory stays bounded; the TF2-loaded model is
    still what verification runs.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    metadata = options.metadata
    if options.use_structured_outputs_names:
        metadata[STRUCTURED_OUTPUTS_KEYS_KEY] = _structured_output_keys_for_metadata(
            loaded.model.signatures[signature_name]
        )
    expected = loaded.signature_def(signature_name)
    with _timed(timings, "freeze"):
        native_log: list[str] = []
        try:
            with _native_log(native_log):
                frozen_graph, initializer_graph_def = _freeze_tf1(loaded, expected)
        except ConversionError:
            raise
        except Exception as error:
            raise ConversionError(
                f"freezing the graph failed: {_with_native_cause(error, native_log)}"
            ) from error
        initializer_graph = None
        if initializer_graph_def is not None:
            _check_initializer_ops(initializer_graph_def, options)
            initializer_graph = tf.Graph()
            with initializer_graph.as_default():
                tf.import_graph_def(initializer_graph_def, name="")
        signature = _tf1_signature_def(frozen_graph, expected)
        _check_keys(signature, expected)
    # No initializer signature and no resource ids: TensorFlow.js runs the whole initializer
    # graph once and shares each table with the model by its node name, as for
    # tensorflowjs_converter's TF1 output.
    return _optimize_and_write(
        frozen_graph,
        signature,
        output_dir,
        options,
        tf_version=loaded.tf_version,
        saved_model=loaded.path,
        initializer_graph=initializer_graph,
        initializer_graph_def=initializer_graph_def,
        initializer_signature_def=None,
        resource_ids_maps=None,
        metadata=metadata,
        timings=timings,
    )


def _freeze_tf1(loaded: LoadedSavedModel, signature_def: Any) -> tuple[Any, Any]:
    """(frozen graph, frozen initializer GraphDef or None) for one signature of a TF1 model.

    The initializer holds only the table initializers of the tables this signature uses.
    """
    tensors = [*signature_def.inputs.values(), *signature_def.outputs.values()]
    composite = [info for info in tensors if not info.name]
    if composite:
        raise ConversionError(
            "the signature takes or returns composite (sparse or ragged) tensors, which "
            "TensorFlow.js cannot: give it dense tensors"
        )
    # Inputs too: a placeholder no output needs stays, so TF.js accepts every signature key.
    keep = sorted({info.name.split(":")[0] for info in tensors})
    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session(graph=graph) as session:
        tf.compat.v1.saved_model.loader.load(
            session, list(loaded.tags), str(loaded.load_path or loaded.path)
        )
        graph_def = graph.as_graph_def()
        frozen_def = tf.compat.v1.graph_util.convert_variables_to_constants(
            session, graph_def, keep
        )
        _stable_shared_names(frozen_def)
        tables = {node.name for node in frozen_def.node if node.op in _TABLE_OPS}
        initializers = _table_initializers(graph, tables)
        initializer_def = None
        if initializers:
            initializer_def = tf.compat.v1.graph_util.convert_variables_to_constants(
                session, graph_def, initializers
            )
            _stable_shared_names(initializer_def)
    frozen_graph = tf.Graph()
    with frozen_graph.as_default():
        tf.import_graph_def(frozen_def, name="")
    return frozen_graph, initializer_def


def _table_initializers(graph: Any, tables: set[str]) -> list[str]:
    """Names of the ops that fill `tables` when the model loads; every table must have one.

    Those are the ops `main_op` (or the older `legacy_init_op`) runs, and the
    `table_initializer` collection tensorflowjs_converter reads.
    """
    if not tables:
        return []
    roots = [
        op
        for key in (
            tf.compat.v1.saved_model.constants.MAIN_OP_KEY,
            tf.compat.v1.saved_model.constants.LEGACY_INIT_OP_KEY,
            tf.compat.v1.GraphKeys.TABLE_INITIALIZERS,
        )
        for op in graph.get_collection(key)
        if isinstance(op, tf.Operation)
    ]
    found: dict[str, str] = {}  # initializer op -> its table
    seen: set[str] = set()
    while roots:
        op = roots.pop()
        if op.name in seen:
            continue
        seen.add(op.name)
        if op.type in _TABLE_INIT_OPS and op.inputs:
            table = op.inputs[0]
            while table.op.type == "Identity" and table.op.inputs:
                table = table.op.inputs[0]
            if table.op.name in tables:
                found[op.name] = table.op.name
        roots.extend(tensor.op for tensor in op.inputs)
        roots.extend(op.control_inputs)
    missing = sorted(tables - set(found.values()))
    if missing:
        raise ConversionError(
            f"lookup table {', '.join(missing)} is not filled when the model loads (no "
            "initializer in main_op, legacy_init_op or the table_initializer collection), so "
            "TensorFlow.js would answer every lookup with the default value; export the "
            "SavedModel with main_op=tf.compat.v1.tables_initializer()"
        )
    return sorted(found)


def _tf1_signature_def(frozen_graph: Any, expected: Any) -> Any:
    """The SignatureDef as saved, for the tensors that survived freezing."""
    signature = meta_graph_pb2.SignatureDef()
    for side in ("inputs", "outputs"):
        for key, info in getattr(expected, side).items():
            try:
                op = frozen_graph.get_operation_by_name(info.name.split(":")[0])
            except KeyError:
                continue
            if side == "inputs" and op.type == "Const":
                continue
            getattr(signature, side)[key].CopyFrom(info)
    return signature


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


@contextmanager
def _native_log(lines: list[str]) -> Iterator[None]:
    """Collect what TensorFlow's C++ code writes to stderr meanwhile, and still pass it on.

    Some TensorFlow errors only point there: grappler raises "Failed to import metagraph,
    check error log for more info" and logs the reason. In a worker, stderr is the worker log.
    """
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to capture (a daemon closed it): nothing was logged either
        yield
        return
    try:
        with tempfile.TemporaryFile() as capture:
            os.dup2(capture.fileno(), 2)
            try:
                yield
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
                capture.seek(0)
                data = capture.read()
                with os.fdopen(os.dup(2), "wb") as stderr:
                    stderr.write(data)
                lines.extend(data.decode("utf-8", "replace").splitlines())
    finally:
        os.close(saved)


# `E0000 00:00:1795804163.814682    6498 file.cc:675] message` (absl) or
# `2024-01-01 12:00:00.000000: E path/file.cc:675] message` (older TensorFlow).
_NATIVE_ERROR = re.compile(r"^(?:[EF]\d{4} \S+\s+\d+ |\S+ \S+: [EF] )\S+:\d+\] (.+)$")


def _with_native_cause(error: BaseException, log: list[str], *, with_type: bool = True) -> str:
    """`Type: message`, with the errors TensorFlow logged in place of "check error log"."""
    message = str(error).strip()
    causes = []
    for line in log:
        match = _NATIVE_ERROR.match(line.strip())
        if match is not None and match.group(1) not in causes:
            causes.append(match.group(1))
    # Only where TensorFlow points at the log: other errors say it all, and grappler also logs
    # errors it recovers from.
    pointer = re.compile(r",? *check (?:the )?error log for more info(?:rmation)?\.?")
    if causes and pointer.search(message):
        message = f"{pointer.sub('', message).rstrip('. ')}: {'; '.join(causes)}"
    return f"{type(error).__name__}: {message}" if with_type else message


def _check_initializer_ops(initializer_graph_def: Any, options: ConverterOptions) -> None:
    """tensorflowjs checks only the inference graph; a table initialised from a text file
    converts "fine" and then fails in the browser (and embeds a local file path)."""
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
        native_log: list[str] = []
        try:
            with _native_log(native_log):
                frozen_graph = tfjs_v2._freeze_saved_model_v2(
                    concrete_func, options.control_flow_v2
                )
        except Exception as error:
            raise ConversionError(
                f"freezing the graph failed: {_with_native_cause(error, native_log)}"
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
            _check_initializer_ops(initializer_graph_def, options)
            if hasattr(init_graph, "outputs"):
                initializer_signature_def = tfjs_v2._build_signature_def(
                    init_graph, [], init_graph.outputs
                )
        signature = _signature_def(frozen_graph, concrete_func)
        if expected is not None:
            _check_keys(signature, expected)

    return _optimize_and_write(
        frozen_graph,
        signature,
        output_dir,
        options,
        tf_version=tf_version,
        saved_model=loaded.path if loaded is not None else None,
        initializer_graph=initializer[1] if initializer is not None else None,
        initializer_graph_def=initializer_graph_def,
        initializer_signature_def=initializer_signature_def,
        resource_ids_maps=resource_ids_maps,
        metadata=metadata,
        timings=timings,
    )


def _optimize_and_write(
    frozen_graph: Any,
    signature: Any,
    output_dir: Path,
    options: ConverterOptions,
    *,
    tf_version: str,
    saved_model: Path | None,
    initializer_graph: Any,
    initializer_graph_def: Any,
    initializer_signature_def: Any,
    resource_ids_maps: tuple[dict[str, int], dict[str, int]] | None,
    metadata: dict[str, Any],
    timings: dict[str, float] | None,
) -> GraphModelOutput:
    """Grappler, the checks TF.js needs, and the files: the same for TF2 and TF1 freezing."""
    if saved_model is not None:
        model_ops = set(tfjs_v2._get_frozen_graph_ops(frozen_graph))
        if initializer_graph is not None:
            model_ops |= set(tfjs_v2._get_frozen_graph_ops(initializer_graph))
        if tfjs_v2._is_assets_required(model_ops):
            tfjs_v2._copy_assets(str(saved_model), str(output_dir))

    with _timed(timings, "optimize"):
        native_log: list[str] = []
        try:
            with _native_log(native_log):
                optimized = tfjs_v2.optimize_graph(
                    frozen_graph,
                    signature,
                    skip_op_check=options.skip_op_check,
                    strip_debug_ops=options.strip_debug_ops,
                )
        except ValueError as error:
            message = _with_native_cause(error, native_log, with_type=False)
            raise ConversionError(message.replace("\n", ": ")) from error

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
