"""A signature of a TF1 SavedModel (no object graph), frozen in a session as Serving runs it.

Here live the TF1 path's freezing, the table initializers its `main_op` runs, and the
SignatureDef as saved; grappler and the files are `write.py`'s. Imports TensorFlow.
"""

from __future__ import annotations

import tfjsbuild.worker.environment  # noqa: F401  (first: TensorFlow reads it when imported)

# isort: split
from pathlib import Path
from typing import Any

import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2

from tfjsbuild.files.artifacts import GraphModelOutput
from tfjsbuild.manifest.types import ConverterOptions
from tfjsbuild.worker.errors import ConversionError
from tfjsbuild.worker.native_log import capture_native_log, with_native_cause
from tfjsbuild.worker.saved_model import LoadedSavedModel
from tfjsbuild.worker.signature_defs import (
    STRUCTURED_OUTPUTS_KEYS_KEY,
    check_keys,
    structured_output_keys_for_metadata,
)
from tfjsbuild.worker.stable_names import stable_shared_names
from tfjsbuild.worker.timing import timed
from tfjsbuild.worker.write import (
    Initializer,
    check_initializer_ops,
    optimize_and_write,
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


def convert_tf1_signature(
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
        metadata[STRUCTURED_OUTPUTS_KEYS_KEY] = structured_output_keys_for_metadata(
            loaded.model.signatures[signature_name]
        )
    expected = loaded.signature_def(signature_name)
    with timed(timings, "freeze"):
        native_log: list[str] = []
        try:
            with capture_native_log(native_log):
                frozen_graph, initializer_graph_def = _freeze_tf1(loaded, expected)
        except ConversionError:
            raise
        except Exception as error:
            raise ConversionError(
                f"freezing the graph failed: {with_native_cause(error, native_log)}"
            ) from error
        initializer_graph = None
        if initializer_graph_def is not None:
            check_initializer_ops(initializer_graph_def, options)
            initializer_graph = tf.Graph()
            with initializer_graph.as_default():
                tf.import_graph_def(initializer_graph_def, name="")
        signature = _tf1_signature_def(frozen_graph, expected)
        check_keys(signature, expected)
    # No initializer signature and no resource ids: TensorFlow.js runs the whole initializer
    # graph once and shares each table with the model by its node name, as for
    # tensorflowjs_converter's TF1 output.
    return optimize_and_write(
        frozen_graph,
        signature,
        output_dir,
        options,
        tf_version=loaded.tf_version,
        saved_model=loaded.path,
        initializer=Initializer(graph=initializer_graph, graph_def=initializer_graph_def),
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
        stable_shared_names(frozen_def)
        tables = {node.name for node in frozen_def.node if node.op in _TABLE_OPS}
        initializers = _table_initializers(graph, tables)
        initializer_def = None
        if initializers:
            initializer_def = tf.compat.v1.graph_util.convert_variables_to_constants(
                session, graph_def, initializers
            )
            stable_shared_names(initializer_def)
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
