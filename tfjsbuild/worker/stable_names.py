"""What in a converted graph depends on where it was converted, made to depend on the model only.

A build converts many signatures in one worker process, in whatever order the scheduler gives
it; the same signature must give the same bytes whichever worker converts it and whatever it
converted before (content hashes, caches and the asset index depend on it).
"""

from __future__ import annotations

import re
from typing import Any

# Function names end in a process-wide uid: loading a SavedModel appends one to every function
# ("__inference_while_body_49291_792"), and freezing replaces it on those it converts
# ("..._while_body_44556_frozen_600"). The second conversion of an LSTM in one process named
# its loop's functions differently from the first.
NUMBERED_FUNCTION = re.compile(r"^(?P<base>.+)_(?P<uid>\d+)$")
# TensorFlow-internal attributes whose presence depends on what the process traced before
# (seen on an LSTM's TensorList ops); TensorFlow.js reads none of them.
HISTORY_ATTRIBUTES = ("_has_manual_control_dependencies",)


def stable_graph(graph_def: Any) -> None:
    """The converted graph with its names and attributes independent of the process's history."""
    stable_function_names(graph_def)
    nodes = list(graph_def.node)
    for function in graph_def.library.function:
        nodes.extend(function.node_def)
    for node in nodes:
        for name in HISTORY_ATTRIBUTES:
            if name in node.attr:
                del node.attr[name]


def stable_function_names(graph_def: Any) -> None:
    """Number functions by rank ("<base>_0", "<base>_1", ...) instead of by uid, and keep the
    library in name order.

    TensorFlow hands out uids in an order fixed by the model (its library when loading, sorted
    names when freezing, and loading before freezing), so their ranks within one graph are the
    same in every process. Every reference is renamed with its function: call
    ops, function-valued attributes (While's body and cond, If's branches, PartitionedCall's
    f), inside the functions too, and the gradient table.
    """
    library = graph_def.library
    numbered = sorted(
        (int(match["uid"]), match["base"], function.signature.name)
        for function in library.function
        if (match := NUMBERED_FUNCTION.match(function.signature.name))
    )
    renamed = {name: f"{base}_{rank}" for rank, (_, base, name) in enumerate(numbered)}
    for function in library.function:
        function.signature.name = renamed.get(function.signature.name, function.signature.name)
        for node in function.node_def:
            _rename_references(node, renamed)
    for node in graph_def.node:
        _rename_references(node, renamed)
    for gradient in library.gradient:
        gradient.function_name = renamed.get(gradient.function_name, gradient.function_name)
        gradient.gradient_func = renamed.get(gradient.gradient_func, gradient.gradient_func)
    # In name order too: the library came in an order of TensorFlow's, and weights are written
    # in library order.
    library.function.sort(key=lambda function: function.signature.name)


def _rename_references(node: Any, renamed: dict[str, str]) -> None:
    node.op = renamed.get(node.op, node.op)
    for value in node.attr.values():
        _rename_attr(value, renamed)


def _rename_attr(value: Any, renamed: dict[str, str]) -> None:
    """A function-valued attribute (or a list of them), and the attributes it carries."""
    functions = list(value.list.func) if value.HasField("list") else []
    if value.HasField("func"):
        functions.append(value.func)
    for function in functions:
        function.name = renamed.get(function.name, function.name)
        for nested in function.attr.values():
            _rename_attr(nested, renamed)


def stable_shared_names(graph_def: Any) -> None:
    """Name lookup tables after their node, not the export path TensorFlow put in shared_name.

    TensorFlow.js keys tables by node name and ignores shared_name, but the path made two
    exports of the same model convert to different bytes.
    """
    for node in graph_def.node:
        if "shared_name" in node.attr and node.attr["shared_name"].s:
            node.attr["shared_name"].s = node.name.encode("utf-8")
