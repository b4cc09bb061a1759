"""From a frozen graph to the files TensorFlow.js reads: the optimization, the checks, model.json.

The same for every path a graph model takes (TF2 functions, TF1 signatures), and for layers
models the canonical model.json: tensorflowjs writes, then an output only counts once it is
on disk and adds up (`check_graph_model`). Imports TensorFlow and tensorflowjs; freezes
nothing and chooses no keys (`convert.py`, `tf1.py`, `signature_defs.py` do).
"""

from __future__ import annotations

import tfjsbuild.worker.environment  # noqa: F401  (first: TensorFlow reads it when imported)

# isort: split
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf.json_format import MessageToDict
from tensorflowjs.converters import tf_saved_model_conversion_v2 as tfjs_v2

from tfjsbuild.files.artifacts import GraphModelOutput, check_graph_model
from tfjsbuild.manifest.types import ConverterOptions
from tfjsbuild.worker.errors import ConversionError
from tfjsbuild.worker.native_log import capture_native_log, with_native_cause
from tfjsbuild.worker.optimize import optimize_graph, uses_fast_passes
from tfjsbuild.worker.stable_names import graph_nodes, signature_nodes, stable_graphs
from tfjsbuild.worker.timing import timed

# What TensorFlow.js 4.22 can fuse into _FusedMatMul / FusedConv2D (backend applyActivation).
TFJS_FUSED_ACTIVATIONS = frozenset({"relu", "relu6", "elu", "leakyrelu", "prelu", "sigmoid"})


@dataclass(frozen=True)
class Initializer:
    """What a graph model holds of its model's resource initializer (lookup tables); all None
    when the signature needs none."""

    graph: Any = None  # the frozen initializer, whose ops may need the SavedModel's assets
    graph_def: Any = None  # written into model.json, its weights with the model's
    signature_def: Any = None  # its outputs, the tables (TF2); None: TF.js runs it whole (TF1)
    resource_ids_maps: tuple[dict[str, int], dict[str, int]] | None = None


def optimize_and_write(
    frozen_graph: Any,
    signature: Any,
    output_dir: Path,
    options: ConverterOptions,
    *,
    tf_version: str,
    saved_model: Path | None,
    initializer: Initializer,
    metadata: dict[str, Any],
    timings: dict[str, float] | None,
) -> GraphModelOutput:
    """Grappler, the checks TF.js needs, and the files: the same for TF2 and TF1 freezing."""
    if saved_model is not None:
        model_ops = set(tfjs_v2._get_frozen_graph_ops(frozen_graph))
        if initializer.graph is not None:
            model_ops |= set(tfjs_v2._get_frozen_graph_ops(initializer.graph))
        if tfjs_v2._is_assets_required(model_ops):
            tfjs_v2._copy_assets(str(saved_model), str(output_dir))

    optimized = _optimized(frozen_graph, signature, options, timings)
    check_fused_activations(optimized)
    graphs = [optimized] if initializer.graph_def is None else [optimized, initializer.graph_def]
    stable_graphs(graphs, signature_nodes(signature) | signature_nodes(initializer.signature_def))

    with timed(timings, "write"):
        weights = tfjs_v2.extract_weights(optimized, initializer.graph_def)
        tfjs_v2.write_artifacts(
            MessageToDict(optimized),
            weights,
            str(output_dir / "model.json"),
            tf_version,
            signature,
            quantization_dtype_map=options.quantization_dtype_map() or None,
            weight_shard_size_bytes=options.weight_shard_size_bytes,
            initializer_graph_def=initializer.graph_def,
            initializer_signature_def=initializer.signature_def,
            resource_ids_maps=initializer.resource_ids_maps,
            metadata=metadata or None,
        )
    # tensorflowjs has silently written nothing before (optimize_graph's API changed in 4.x):
    # an output only counts once it is on disk and adds up.
    canonical_model_json(output_dir)
    return check_graph_model(output_dir)


def _optimized(
    frozen_graph: Any, signature: Any, options: ConverterOptions, timings: dict[str, float] | None
) -> Any:
    """The optimized GraphDef, or the converter's refusal as a ConversionError.

    Each fast pass's time goes into the timings ("optimize: fold_batch_norms"); tensorflowjs's
    own optimize_graph runs whole, untimed inside."""
    fast = uses_fast_passes()
    passes: dict[str, float] | None = {} if fast else None
    with timed(timings, "optimize"):
        native_log: list[str] = []
        try:
            with capture_native_log(native_log):
                optimized = optimize_graph(
                    frozen_graph,
                    signature,
                    skip_op_check=options.skip_op_check,
                    strip_debug_ops=options.strip_debug_ops,
                    fast=fast,
                    pass_seconds=passes,
                )
        except ValueError as error:
            message = with_native_cause(error, native_log, with_type=False)
            raise ConversionError(message.replace("\n", ": ")) from error
    if timings is not None and passes:
        timings.update({f"optimize: {name}": seconds for name, seconds in passes.items()})
    return optimized


def canonical_model_json(output_dir: Path) -> None:
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


def check_initializer_ops(initializer_graph_def: Any, options: ConverterOptions) -> None:
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


def check_fused_activations(graph_def: Any) -> None:
    """Refuse fused activations TensorFlow.js cannot run; they would fail only in the browser.

    TensorFlow's oneDNN rewrites (on by default on x86) fuse e.g. Tanh into `_FusedMatMul`
    (tensorflow/tensorflow#42173). Workers turn oneDNN off; a process that imported
    TensorFlow with it on (the Python API) can still produce such a graph.
    """
    for node in graph_nodes(graph_def):
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
