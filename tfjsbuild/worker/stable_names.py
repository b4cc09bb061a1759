"""What in a converted graph depends on where it was converted, made to depend on the model only.

A build converts many signatures in one worker process, in whatever order the scheduler gives
it; the same signature must give the same bytes whichever worker converts it and whatever it
converted before (content hashes, caches and the asset index depend on it). TensorFlow numbers
several things by process-wide counters; each is renumbered here by rank, which the model fixes
(the counters hand out numbers in an order the model decides, one conversion at a time).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

# Function names end in a process-wide uid: loading a SavedModel appends one to every function
# ("__inference_while_body_49291_792"), and freezing replaces it on those it converts
# ("..._while_body_44556_frozen_600"). The second conversion of an LSTM in one process named
# its loop's functions differently from the first.
NUMBERED_FUNCTION = re.compile(r"^(?P<base>.+)_(?P<uid>\d+)$")
# Nodes named by a number: constants an initializer function captured, named by the captured
# tensor's id (seen on a lookup table's keys and values).
NUMBERED_NODE = re.compile(r"^\d+$")
# TensorFlow-internal attributes whose presence depends on what the process traced before
# (seen on an LSTM's TensorList ops); TensorFlow.js reads none of them.
HISTORY_ATTRIBUTES = ("_has_manual_control_dependencies",)


def stable_graphs(graph_defs: Sequence[Any], keep: Iterable[str] = ()) -> None:
    """A model's graphs (the model's, and its initializer's) with their names and attributes
    independent of the process's history. One renaming serves all of them: a table is shared
    between them by node name, and their weights go into one manifest. Nodes named in `keep`
    (the signatures' tensors) keep their names."""
    stable_function_names(graph_defs)
    stable_node_names(graph_defs, set(keep))
    for graph_def in graph_defs:
        for node in graph_nodes(graph_def):
            for name in HISTORY_ATTRIBUTES:
                if name in node.attr:
                    del node.attr[name]


def signature_nodes(signature_def: Any) -> set[str]:
    """The nodes a SignatureDef names (its inputs' and outputs' tensors); none for None."""
    if signature_def is None:
        return set()
    tensors = [*signature_def.inputs.values(), *signature_def.outputs.values()]
    return {tensor.name.lstrip("^").partition(":")[0] for tensor in tensors}


def stable_node_names(graph_defs: Sequence[Any], keep: set[str]) -> None:
    """Rename nodes named by a number to "captured_<rank>", with every input naming them."""
    names = {node.name for graph_def in graph_defs for node in graph_def.node}
    numbered = _in_rank_order(
        [
            [(int(n.name), n.name) for n in g.node if NUMBERED_NODE.match(n.name)]
            for g in graph_defs
        ],
        keep,
    )
    renamed: dict[str, str] = {}
    for rank, name in enumerate(numbered):
        new = f"captured_{rank}"
        while new in names:
            new += "_"
        names.add(new)
        renamed[name] = new
    if not renamed:
        return
    for graph_def in graph_defs:
        for node in graph_def.node:
            node.name = renamed.get(node.name, node.name)
            node.input[:] = [_renamed_input(name, renamed) for name in node.input]


def _renamed_input(name: str, renamed: dict[str, str]) -> str:
    """An input ("node", "node:1" or "^node") with its node renamed."""
    control = name.startswith("^")
    node, colon, port = name.lstrip("^").partition(":")
    return ("^" if control else "") + renamed.get(node, node) + colon + port


def stable_function_names(graph_defs: Sequence[Any]) -> None:
    """Number functions by rank ("<base>_0", "<base>_1", ...) instead of by uid, and keep each
    library in name order.

    Every reference is renamed with its function: call ops, function-valued attributes
    (While's body and cond, If's branches, PartitionedCall's f), inside the functions too, and
    the gradient tables. (Strings that merely mention a function, such as
    `forward_function_name`, are left: TensorFlow.js reads none of them.)
    """
    matches = [
        [
            (int(match["uid"]), name)
            for function in graph_def.library.function
            if (match := NUMBERED_FUNCTION.match(name := function.signature.name))
        ]
        for graph_def in graph_defs
    ]
    renamed = {
        name: f"{name.rpartition('_')[0]}_{rank}"
        for rank, name in enumerate(_in_rank_order(matches, set()))
    }
    for graph_def in graph_defs:
        library = graph_def.library
        for function in library.function:
            function.signature.name = renamed.get(function.signature.name, function.signature.name)
        for node in graph_nodes(graph_def):
            node.op = renamed.get(node.op, node.op)
            for value in node.attr.values():
                _rename_attr(value, renamed)
        for gradient in library.gradient:
            gradient.function_name = renamed.get(gradient.function_name, gradient.function_name)
            gradient.gradient_func = renamed.get(gradient.gradient_func, gradient.gradient_func)
        for registered in library.registered_gradients:
            registered.gradient_func = renamed.get(
                registered.gradient_func, registered.gradient_func
            )
        # In name order too: the library came in an order of TensorFlow's, and weights are
        # written in library order.
        library.function.sort(key=lambda function: function.signature.name)


def _in_rank_order(numbered: Sequence[Sequence[tuple[int, str]]], keep: set[str]) -> list[str]:
    """Names in rank order: graph by graph (a worker freezes a model's initializer once, before
    or after a signature's graph, so uids compare only within a graph), by number within one;
    a name in two graphs once, at its first."""
    ordered: dict[str, None] = {}
    for graph in numbered:
        for _, name in sorted(graph):
            if name not in keep:
                ordered.setdefault(name)
    return list(ordered)


def graph_nodes(graph_def: Any) -> list[Any]:
    """The graph's nodes and its functions' nodes."""
    nodes = list(graph_def.node)
    for function in graph_def.library.function:
        nodes.extend(function.node_def)
    return nodes


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
