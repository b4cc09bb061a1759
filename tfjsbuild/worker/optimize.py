# Derived from tensorflowjs/converters/tf_saved_model_conversion_v2.py (tensorflowjs 4.22.0),
# Copyright 2018 Google LLC, licensed under the Apache License, Version 2.0
# (http://www.apache.org/licenses/LICENSE-2.0). Changed: batch norms are folded by this
# project's vectorized pass, and each pass can be timed.
"""tensorflowjs's graph optimization, with this project's fast passes where they are proven.

`optimize_graph` runs tensorflowjs 4.22's `optimize_graph` pass by pass (grappler, batch norm
folding, bias normalization, grappler's remap, PReLU and depthwise fusions, the op checks),
with `fold_batch_norms.py`'s vectorized folding in place of tensorflowjs's per-element one.
The fast passes were checked bit for bit against that version only: with any other
tensorflowjs installed, or with `TFJS_BUILD_STOCK_PASSES=1` set, tensorflowjs's own
`optimize_graph` runs instead (`uses_fast_passes`). Nothing in tensorflowjs is patched: its
other callers see it unchanged.
"""

from __future__ import annotations

import tfjsbuild.worker.environment  # noqa: F401  (first: TensorFlow reads it when imported)

# isort: split
import os
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import tensorflowjs
from tensorflow.core.protobuf import config_pb2
from tensorflowjs.converters import fold_batch_norms as stock_fold
from tensorflowjs.converters import fuse_depthwise_conv2d, fuse_prelu, normalize_bias_add
from tensorflowjs.converters import tf_saved_model_conversion_v2 as tfjs_v2

from tfjsbuild.version import FAST_PASSES_TENSORFLOWJS, fast_passes_apply
from tfjsbuild.worker import fold_batch_norms as fast_fold
from tfjsbuild.worker.timing import timed

FIRST_GRAPPLER_PASSES = [
    "pruning",
    "constfold",
    "arithmetic",
    "dependency",
    "pruning",
    "constfold",
    "arithmetic",
    "dependency",
]
REMAP_GRAPPLER_PASSES = ["remap", "constfold", "arithmetic", "dependency"]


def uses_fast_passes(environ: Mapping[str, str] | None = None) -> bool:
    """Whether this process converts with the fast passes (the installed tensorflowjs is the
    one they reproduce, and TFJS_BUILD_STOCK_PASSES does not ask for its own)."""
    return fast_passes_apply(tensorflowjs.__version__, os.environ if environ is None else environ)


def optimize_graph(
    graph: Any,
    signature_def: Any,
    *,
    fast: bool,
    skip_op_check: bool = False,
    strip_debug_ops: bool = False,
    pass_seconds: dict[str, float] | None = None,
) -> Any:
    """The frozen `graph` optimized as tensorflowjs_converter optimizes it (the same GraphDef).

    `fast` (see `uses_fast_passes`) chooses the vectorized passes; with False, tensorflowjs's own
    passes run. `pass_seconds`, when given, receives each pass's time.
    """
    checked = tensorflowjs.__version__ == FAST_PASSES_TENSORFLOWJS
    if fast and not checked:
        raise RuntimeError(
            f"the fast passes reproduce tensorflowjs {FAST_PASSES_TENSORFLOWJS}, not "
            f"{tensorflowjs.__version__}"
        )
    if not fast and (pass_seconds is None or not checked):
        return tfjs_v2.optimize_graph(
            graph, signature_def, skip_op_check=skip_op_check, strip_debug_ops=strip_debug_ops
        )
    fold = fast_fold.fold_batch_norms if fast else stock_fold.fold_batch_norms
    return _optimize(graph, signature_def, fold, skip_op_check, strip_debug_ops, pass_seconds)


def _optimize(
    graph: Any,
    signature_def: Any,
    fold: Callable[[Any], Any],
    skip_op_check: bool,
    strip_debug_ops: bool,
    pass_seconds: dict[str, float] | None,
) -> Any:
    """tensorflowjs 4.22's `optimize_graph`, pass by pass, with batch norms folded by `fold`."""
    step = partial(timed, pass_seconds)
    # Add a collection 'train_op' so that Grappler knows the outputs.
    for _, output in signature_def.outputs.items():
        name = output.name.split(":")[0]
        graph.add_to_collection("train_op", graph.get_operation_by_name(name))
    graph_def = graph.as_graph_def()
    with step("validate"):
        _check_ops(graph_def, skip_op_check, strip_debug_ops, "before")

    def grappler(graph_def: Any, optimizers: list[str]) -> Any:
        config = config_pb2.ConfigProto()
        config.graph_options.rewrite_options.optimizers[:] = optimizers
        return tfjs_v2._run_grappler(config, graph_def, graph, signature_def)

    # first pass of grappler optimization, this is needed for batch norm folding.
    first = ["debug_stripper", *FIRST_GRAPPLER_PASSES] if strip_debug_ops else FIRST_GRAPPLER_PASSES
    passes: list[tuple[str, Callable[[Any], Any]]] = [
        ("grappler", lambda graph_def: grappler(graph_def, first)),
        ("fold_batch_norms", fold),
        ("normalize_bias_add", normalize_bias_add.normalize_bias_add_op),
        ("cpu_devices", _cpu_devices),
        # rerun grappler to fuse conv2d/matmul
        ("grappler_remap", lambda graph_def: grappler(graph_def, REMAP_GRAPPLER_PASSES)),
        ("remove_unused_control_flow_inputs", tfjs_v2._remove_unused_control_flow_inputs),
        # TF breaks Prelu into 6 ops: fused back into one.
        ("fuse_prelu", fuse_prelu.fuse_ops_for_prelu),
        # grappler fuses no DepthwiseConv2d.
        ("fuse_depthwise_conv2d", fuse_depthwise_conv2d.fuse_depthwise_conv2d),
        # grappler's remap fuses no prelu activation into _FusedConv2D / _FusedMatMul.
        ("fuse_prelu_activation", fuse_prelu.fuse_prelu_with_fused_conv2d_or_matmul),
    ]
    for name, run in passes:
        with step(name):
            graph_def = run(graph_def)
    with step("validate"):
        _check_ops(graph_def, skip_op_check, strip_debug_ops, "after")
    return graph_def


def _check_ops(graph_def: Any, skip_op_check: bool, strip_debug_ops: bool, when: str) -> None:
    unsupported = tfjs_v2.validate(graph_def, skip_op_check, strip_debug_ops)
    if unsupported:
        raise ValueError(
            f"Unsupported Ops in the model {when} optimization\n" + ", ".join(unsupported)
        )


def _cpu_devices(graph_def: Any) -> Any:
    """Conv2D and MatMul placed on the CPU: grappler's remap fuses only CPU ones."""
    for node in graph_def.node:
        if node.op == "Conv2D" or node.op == "MatMul":
            node.device = "/device:CPU:0"
    return graph_def
