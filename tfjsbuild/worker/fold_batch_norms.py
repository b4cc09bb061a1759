# Derived from tensorflowjs/converters/fold_batch_norms.py (tensorflowjs 4.22.0),
# Copyright 2019 Google LLC, licensed under the Apache License, Version 2.0
# (http://www.apache.org/licenses/LICENSE-2.0). Changed: the weights are rescaled by one numpy
# broadcast each instead of element by element, and the function is split into parts.
"""Batch norms folded into the convolutions before them, as tensorflowjs 4.22 folds them, at
numpy speed.

The same matching, the same warnings and the same new nodes in the same order as
tensorflowjs's `fold_batch_norms`; only its per-element `np.nditer` loops (~7 s of a
MobileNetV2 signature's ~8 s of conversion) are one broadcast per weight. Each computes the same
float64 products (float32 weight times float64 scale) and rounds them to the weights' dtype as
the in-place loop does, so the folded graph is bit-identical (tests/test_fast_passes.py).
Only used with the tensorflowjs version it was checked against (`optimize.py`).
"""

from __future__ import annotations

import tfjsbuild.worker.environment  # noqa: F401  (first: TensorFlow reads it when imported)

# isort: split
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from tensorflow.core.framework import attr_value_pb2, graph_pb2, node_def_pb2
from tensorflow.python.framework import tensor_util
from tensorflow.python.platform import tf_logging
from tensorflowjs.converters import graph_rewrite_util as util
from tensorflowjs.converters.fold_batch_norms import (
    EPSILON_ATTR,
    INPUT_ORDER,
    scale_after_normalization,
)

CONVOLUTIONS = ("Conv2D", "DepthwiseConv2dNative")


@dataclass
class _Match:
    """A batch norm node and the constants folded into the convolution before it."""

    node: Any
    conv_op: Any
    weights_op: Any
    add_op: Any  # a BiasAdd/Add between the convolution and the batch norm, or None
    mean_op: Any
    weights: NDArray[Any]
    mean: NDArray[Any]
    var: NDArray[Any]
    beta: NDArray[Any]
    gamma: NDArray[Any]


def fold_batch_norms(input_graph_def: Any) -> Any:
    """Remove batch normalization ops by folding them into convolutions (see tensorflowjs's)."""
    input_node_map = {}
    for node in input_graph_def.node:
        if node.name not in input_node_map:
            input_node_map[node.name] = node
        else:
            raise ValueError("Duplicate node names detected for ", node.name)

    nodes_to_skip: dict[str, bool] = {}
    new_ops: list[Any] = []
    for node in input_graph_def.node:
        if node.op not in INPUT_ORDER:
            continue
        match = _match(node, input_node_map)
        if match is None:
            continue
        nodes_to_skip[node.name] = True
        nodes_to_skip[match.weights_op.name] = True
        nodes_to_skip[match.conv_op.name] = True
        if match.add_op is not None:
            nodes_to_skip[match.add_op.name] = True
        new_ops.extend(_folded(match))

    result_graph_def = graph_pb2.GraphDef()
    for node in input_graph_def.node:
        if node.name in nodes_to_skip:
            continue
        new_node = node_def_pb2.NodeDef()
        new_node.CopyFrom(node)
        retained_input = []
        for input_node in new_node.input:
            if not input_node.startswith("^") or input_node[1:] not in nodes_to_skip:
                retained_input.append(input_node)
        new_node.input[:] = retained_input
        result_graph_def.node.extend([new_node])

    result_graph_def.node.extend(new_ops)
    result_graph_def.library.CopyFrom(input_graph_def.library)
    result_graph_def.versions.CopyFrom(input_graph_def.versions)
    return result_graph_def


def _match(node: Any, node_map: dict[str, Any]) -> _Match | None:
    """The convolution and constants of batch norm `node`, or None (with tensorflowjs's
    warning) where it cannot be folded."""
    order = INPUT_ORDER[node.op]
    bias = add_op = None
    conv_op = util.node_from_map(node_map, node.input[order.index("conv_op")])
    # There might be an Add/BiasAdd op between the conv and the batchnorm,
    # which we can fold into the mean param of the batchnorm.
    if conv_op.op in ["BiasAdd", "Add", "AddV2"]:
        add_op = conv_op
        # Follow the first input of the add to get to the conv.
        conv_op = util.node_from_map(node_map, add_op.input[0])
        bias = util.node_from_map(node_map, add_op.input[1])
        if conv_op.op not in CONVOLUTIONS:
            # Follow the second input of the add to get to the conv.
            conv_op = util.node_from_map(node_map, add_op.input[1])
            bias = util.node_from_map(node_map, add_op.input[0])
    if bias is not None and bias.op != "Const":
        tf_logging.warning(
            f"The bias {bias.name} after the conv {conv_op.name} was not a constant. "
            "Maybe because freeze_graph wasn't run first?"
        )
        return None
    if conv_op.op not in CONVOLUTIONS:
        tf_logging.warning(
            f"Didn't find expected Conv2D or DepthwiseConv2dNative input to '{node.name}'"
        )
        return None
    weights_op = _constant_input(node_map, conv_op.input[1], "conv", conv_op.name)
    if weights_op is None:
        return None
    weights = util.values_from_const(weights_op)
    if conv_op.op == "Conv2D":
        channel_count = weights.shape[3]
    else:
        channel_count = weights.shape[2] * weights.shape[3]

    values: dict[str, NDArray[Any]] = {}
    constants: dict[str, Any] = {}
    for role in ("mean_op", "var_op", "beta_op", "gamma_op"):
        found = _channel_constant(node, node_map, role, channel_count, bias)
        if found is None:
            return None
        constants[role], values[role] = found
    return _Match(
        node,
        conv_op,
        weights_op,
        add_op if bias is not None else None,
        constants["mean_op"],
        weights,
        values["mean_op"],
        values["var_op"],
        values["beta_op"],
        values["gamma_op"],
    )


def _channel_constant(
    node: Any, node_map: dict[str, Any], role: str, channel_count: int, bias: Any
) -> tuple[Any, NDArray[Any]] | None:
    """Batch norm input `role` ("mean_op", ...) as a constant with one value per channel, or
    None with tensorflowjs's warning. The mean absorbs a bias between conv and batch norm."""
    what = role[: -len("_op")]
    op = _constant_input(node_map, node.input[INPUT_ORDER[node.op].index(role)], what, node.name)
    if op is None:
        return None
    value = util.values_from_const(op)
    if role == "mean_op" and bias is not None:
        # Adjust the mean of the batchnorm based on the add op in-between the conv
        # and the batchnorm.
        value = value - util.values_from_const(bias)
    if value.shape != (channel_count,):
        tf_logging.warning(
            f"Incorrect shape for {what}, found {value.shape}, expected {(channel_count,)}, "
            f"for node {node.name}"
        )
        return None
    return op, value


def _constant_input(node_map: dict[str, Any], name: str, what: str, owner: str) -> Any:
    """Input `name` (the `what` of node `owner`) if it is a constant, else None with
    tensorflowjs's warning."""
    op = util.node_from_map(node_map, name)
    if op.op != "Const":
        tf_logging.warning(
            f"Didn't find expected {what} Constant input to '{owner}', found {op} instead. "
            "Maybe because freeze_graph wasn't run first?"
        )
        return None
    return op


def _folded(match: _Match) -> list[Any]:
    """The scaled weights, the convolution, the offset and the BiasAdd replacing the batch norm
    (and rewires the original convolution to the scaled weights, as tensorflowjs does)."""
    node, conv_op = match.node, match.conv_op
    epsilon = node.attr[EPSILON_ATTR[node.op]].f
    scale = 1.0 / np.vectorize(math.sqrt)(match.var + epsilon)
    if scale_after_normalization(node):
        scale = scale * match.gamma
    offset = (-match.mean * scale) + match.beta

    scaled_weights_op = node_def_pb2.NodeDef()
    scaled_weights_op.op = "Const"
    scaled_weights_op.name = conv_op.name + "_weights"
    scaled_weights_op.attr["dtype"].CopyFrom(match.weights_op.attr["dtype"])
    weights = match.weights
    scaled_weights_op.attr["value"].CopyFrom(
        attr_value_pb2.AttrValue(
            tensor=tensor_util.make_tensor_proto(
                scaled(weights, scale, conv_op.op), weights.dtype.type, weights.shape
            )
        )
    )
    # Replace the weights node with scaled weights node
    for i, weights_node in enumerate(conv_op.input):
        if weights_node == match.weights_op.name:
            conv_op.input[i] = scaled_weights_op.name

    new_conv_op = node_def_pb2.NodeDef()
    new_conv_op.CopyFrom(conv_op)
    offset_op = node_def_pb2.NodeDef()
    offset_op.op = "Const"
    offset_op.name = conv_op.name + "_bn_offset"
    offset_op.attr["dtype"].CopyFrom(match.mean_op.attr["dtype"])
    offset_op.attr["value"].CopyFrom(
        attr_value_pb2.AttrValue(
            tensor=tensor_util.make_tensor_proto(offset, match.mean.dtype.type, offset.shape)
        )
    )
    bias_add_op = node_def_pb2.NodeDef()
    bias_add_op.op = "BiasAdd"
    bias_add_op.name = node.name
    bias_add_op.attr["T"].CopyFrom(conv_op.attr["T"])
    bias_add_op.attr["data_format"].CopyFrom(conv_op.attr["data_format"])
    bias_add_op.input.extend([new_conv_op.name, offset_op.name])
    return [scaled_weights_op, new_conv_op, offset_op, bias_add_op]


def scaled(weights: NDArray[Any], scale: NDArray[Any], op: str) -> NDArray[Any]:
    """`weights` times each output channel's `scale`: what tensorflowjs's loop computes
    element by element (`it[0] *= scale[channel]`: the product in the wider of the two dtypes,
    float64 for float32 weights, rounded to the weights' dtype), as one broadcast.

    Conv2D weights are [height, width, in, out], scaled by `scale[out]`; depthwise weights are
    [height, width, in, multiplier], scaled by `scale[in * multiplier + m]`.
    """
    if weights.size == 0:  # np.nditer refuses them, and tensorflowjs fails the conversion
        raise ValueError("Iteration of zero-sized operands is not enabled")
    if op == "Conv2D":
        factors = scale.reshape(1, 1, 1, weights.shape[3])
    else:
        factors = scale.reshape(1, 1, weights.shape[2], weights.shape[3])
    # The in-place loop casts "same_kind": integer weights fail there, and fail here.
    return np.multiply(weights, factors).astype(weights.dtype, casting="same_kind", copy=False)
