"""Per-signature graph fingerprints of a SavedModel, computed without TensorFlow.

A signature's output depends on its function (and every function it calls) and on the captured
inputs that reach its outputs: variables, assets, constants, resources. Functions are hashed as
a Merkle tree over the library (a callee's name replaced by the hash of its content; the
function's own name and per-save ids removed), so a re-export of the same model hashes the same
however its functions were numbered. Variables are digested from the checkpoint index (dtype,
shape, size, masked crc32c of the bytes), or from their bytes when `paranoid`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tfjsbuild.manifest.load import KerasSource, SavedModelSource, Source
from tfjsbuild.planning.fingerprint import StatCache, source_digest
from tfjsbuild.sources.saved_model_files import (
    VARIABLES_DIR,
    VARIABLES_INDEX,
    BundleEntry,
    SavedModelError,
    data_shard_path,
    find_meta_graph,
    load_meta_graph_def,
    read_bundle_index,
    read_checkpoint_object_graph,
)

# Bump when what goes into a graph fingerprint changes.
GRAPH_SCHEME = "graph-1"

# Attributes that differ between saves of the same model: ids, export paths, session config.
_VOLATILE_ATTRS = frozenset({"_user_specified_name", "config_proto", "shared_name"})
_CALL_OPS = frozenset({"PartitionedCall", "StatefulPartitionedCall"})
_VARIABLE_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"


class GraphFingerprintError(Exception):
    """The SavedModel holds something the graph fingerprint cannot read."""


@dataclass(frozen=True)
class Capture:
    kind: str  # variable | asset | constant | resource
    name: str  # for explanations only: checkpoint key, asset file name, ...
    digest: str


@dataclass(frozen=True)
class SignatureGraph:
    graph: str  # Merkle hash of the signature's function
    captures: tuple[Capture, ...]  # captures that reach the outputs, in argument order

    @property
    def digest(self) -> str:
        """Name-free: Keras renames and reorders variables between exports of the same model."""
        text = "\n".join([GRAPH_SCHEME, self.graph, *(c.digest for c in self.captures)])
        return hashlib.sha256(text.encode()).hexdigest()


def signature_graphs(
    path: Path, tags: tuple[str, ...], stat_cache: StatCache, *, paranoid: bool = False
) -> dict[str, SignatureGraph]:
    """Graph fingerprints of every signature of the SavedModel at `path`."""
    try:
        return _Reader(path, tags, stat_cache, paranoid).signatures()
    except GraphFingerprintError:
        raise
    except (SavedModelError, KeyError, IndexError, ValueError, OSError) as error:
        raise GraphFingerprintError(f"{type(error).__name__}: {error}") from error


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _Reader:
    def __init__(
        self, path: Path, tags: tuple[str, ...], stat_cache: StatCache, paranoid: bool
    ) -> None:
        self.path = path
        self.stat_cache = stat_cache
        self.paranoid = paranoid
        self.meta = load_meta_graph_def(path, tags)
        self.objects = self.meta.object_graph_def
        if not self.objects.nodes:
            raise GraphFingerprintError("a TF1 SavedModel without an object graph")
        self.library = {f.signature.name: f for f in self.meta.graph_def.library.function}
        self._function_hashes: dict[str, str] = {}
        self._live_args: dict[str, frozenset[int]] = {}
        self._object_digests: dict[int, Capture] = {}
        self._entries: dict[str, BundleEntry] | None = None
        self._checkpoint_graph: Any = None

    # ----------------------------------------------------------------- signatures

    def signatures(self) -> dict[str, SignatureGraph]:
        result = {}
        for name, function in self._signature_functions().items():
            concrete = self.objects.concrete_functions.get(function)
            bound = list(concrete.bound_inputs) if concrete is not None else []
            arg_count = len(self.library[function].signature.input_arg)
            live = self.live_args(function)
            captures = tuple(
                self.capture(node_id)
                for offset, node_id in enumerate(bound)
                if arg_count - len(bound) + offset in live
            )
            result[name] = SignatureGraph(self.function_hash(function), captures)
        return result

    def _signature_functions(self) -> dict[str, str]:
        """Signature name -> the function that implements it."""
        root = self.objects.nodes[0]
        functions: dict[str, str] = {}
        holder = next((c.node_id for c in root.children if c.local_name == "signatures"), None)
        if holder is not None:
            for child in self.objects.nodes[holder].children:
                node = self.objects.nodes[child.node_id]
                if node.WhichOneof("kind") == "bare_concrete_function":
                    functions[child.local_name] = node.bare_concrete_function.concrete_function_name
        graph_nodes = {node.name: node for node in self.meta.graph_def.node}
        for name, signature in self.meta.signature_def.items():
            if name in functions or name.startswith("__"):
                continue
            # Fallback: the signature's output node calls the function through its `f` attr.
            for output in signature.outputs.values():
                node = graph_nodes.get(output.name.split(":")[0])
                if (
                    node is not None
                    and "f" in node.attr
                    and node.attr["f"].func.name in self.library
                ):
                    functions[name] = node.attr["f"].func.name
                    break
            else:
                raise GraphFingerprintError(f"cannot find the function of signature '{name}'")
        return functions

    # ----------------------------------------------------------------- functions

    def function_hash(self, name: str) -> str:
        if name not in self._function_hashes:
            self._function_hashes[name] = ""  # guards against a cycle
            self._function_hashes[name] = self._hash_function(name)
        return self._function_hashes[name]

    def _hash_function(self, name: str) -> str:
        from tensorboard.compat.proto import function_pb2

        function = function_pb2.FunctionDef()
        function.CopyFrom(self.library[name])
        function.signature.name = ""
        function.ClearField("resource_arg_unique_id")
        for attrs in function.arg_attr.values():
            for key in _VOLATILE_ATTRS & set(attrs.attr):
                del attrs.attr[key]
        for node in function.node_def:
            if node.op in self.library:
                node.op = "function:" + self.function_hash(node.op)
            for key in list(node.attr):
                if key in _VOLATILE_ATTRS:
                    del node.attr[key]
                    continue
                value = node.attr[key]
                if value.HasField("func"):
                    self._rename_function(value.func)
                for func in value.list.func:
                    self._rename_function(func)
        return _sha(function.SerializeToString(deterministic=True))

    def _rename_function(self, func: Any) -> None:
        if func.name in self.library:
            func.name = "function:" + self.function_hash(func.name)

    def live_args(self, name: str) -> frozenset[int]:
        """Indices of the function's inputs that reach an output through data edges."""
        if name not in self._live_args:
            self._live_args[name] = frozenset()  # guards against a cycle
            self._live_args[name] = self._find_live_args(name)
        return self._live_args[name]

    def _find_live_args(self, name: str) -> frozenset[int]:
        function = self.library[name]
        args = {arg.name: index for index, arg in enumerate(function.signature.input_arg)}
        nodes = {node.name: node for node in function.node_def}
        pending = [ret.split(":")[0] for ret in function.ret.values()]
        seen: set[str] = set()
        live: set[int] = set()
        while pending:
            source = pending.pop()
            if source in seen:
                continue
            seen.add(source)
            if source in args:
                live.add(args[source])
                continue
            node = nodes.get(source)
            if node is not None:
                pending.extend(self._data_inputs(node))
        return frozenset(live)

    def _data_inputs(self, node: Any) -> Iterator[str]:
        inputs = [i for i in node.input if not i.startswith("^")]
        callee = node.op if node.op in self.library else None
        if callee is None and node.op in _CALL_OPS and node.attr["f"].func.name in self.library:
            callee = node.attr["f"].func.name
        if callee is None:
            yield from (i.split(":")[0] for i in inputs)
            return
        live = self.live_args(callee)
        for index, source in enumerate(inputs):
            if index in live:
                yield source.split(":")[0]

    # ----------------------------------------------------------------- captures

    def capture(self, node_id: int) -> Capture:
        if node_id not in self._object_digests:
            self._object_digests[node_id] = self._capture(node_id)
        return self._object_digests[node_id]

    def _capture(self, node_id: int) -> Capture:
        node = self.objects.nodes[node_id]
        kind = node.WhichOneof("kind")
        if kind == "variable":
            return self._variable(node_id, node.variable)
        if kind == "asset":
            filename = self.meta.asset_file_def[node.asset.asset_file_def_index].filename
            digest = self.stat_cache.digest(self.path / "assets" / filename)
            return Capture("asset", filename, digest)
        if kind == "constant":
            operation = node.constant.operation
            graph_node = next(n for n in self.meta.graph_def.node if n.name == operation)
            return Capture(
                "constant",
                operation,
                _sha(graph_node.attr["value"].SerializeToString(deterministic=True)),
            )
        if kind == "resource":
            return self._resource(node_id)
        raise GraphFingerprintError(f"cannot fingerprint a captured {kind} (object {node_id})")

    def _variable(self, node_id: int, variable: Any) -> Capture:
        key = self._checkpoint_key(node_id)
        if key is None:  # not in the checkpoint: its value lives in the graph
            return Capture(
                "variable", variable.name, _sha(variable.SerializeToString(deterministic=True))
            )
        entry = self.entries()[key]
        name = key.removesuffix(_VARIABLE_SUFFIX)
        if self.paranoid:
            with data_shard_path(self.path / VARIABLES_DIR, entry.shard_id).open("rb") as handle:
                handle.seek(entry.offset)
                return Capture("variable", name, _sha(handle.read(entry.size)))
        return Capture(
            "variable", name, f"{entry.dtype}:{entry.shape}:{entry.size}:{entry.crc32c:08x}"
        )

    def _resource(self, node_id: int) -> Capture:
        """A resource (e.g. a lookup table): its functions and everything they capture."""
        parts = []
        for child in sorted(self.objects.nodes[node_id].children, key=lambda c: c.local_name):
            node = self.objects.nodes[child.node_id]
            kind = node.WhichOneof("kind")
            names: list[str] = []
            if kind == "bare_concrete_function":
                names = [node.bare_concrete_function.concrete_function_name]
            elif kind == "function":
                names = list(node.function.concrete_functions)
            for name in names:
                captured = self.objects.concrete_functions[name].bound_inputs
                inner = [self.capture(i).digest for i in captured if i != node_id]
                parts.append(f"{child.local_name}:{self.function_hash(name)}:{','.join(inner)}")
        return Capture("resource", self._object_path(node_id), _sha("\n".join(parts).encode()))

    def _object_path(self, node_id: int) -> str:
        pending: list[tuple[int, str]] = [(0, "")]
        seen = {0}
        while pending:
            current, path = pending.pop(0)
            if current == node_id:
                return path or "(root)"
            for child in self.objects.nodes[current].children:
                if child.node_id not in seen:
                    seen.add(child.node_id)
                    pending.append(
                        (child.node_id, f"{path}/{child.local_name}" if path else child.local_name)
                    )
        return f"object {node_id}"

    def entries(self) -> dict[str, BundleEntry]:
        if self._entries is None:
            self._entries = read_bundle_index(self.path / VARIABLES_DIR / VARIABLES_INDEX)
        return self._entries

    def _checkpoint_key(self, node_id: int) -> str | None:
        if self._checkpoint_graph is None:
            self._checkpoint_graph = read_checkpoint_object_graph(
                self.path / VARIABLES_DIR, self.entries()
            )
        nodes = self._checkpoint_graph.nodes
        if node_id >= len(nodes):
            return None
        for attribute in nodes[node_id].attributes:
            if attribute.name == "VARIABLE_VALUE":
                return str(attribute.checkpoint_key)
        return None


SourceEntry = dict[str, Any]  # {"digest", "kind", "details"}: plain, so it goes into the state
WHOLE_MODEL = "whole-model"


def saved_model_sources(
    path: Path,
    tags: tuple[str, ...],
    model_digest: str,
    stat_cache: StatCache,
    *,
    paranoid: bool,
) -> dict[str, SourceEntry]:
    """Signature name -> what its output depends on; "*" when only the whole model can say.

    What the graph fingerprint cannot read (a TF1 SavedModel without an object graph, a captured
    object of an unknown kind, an unparseable file) falls back to the whole model's content
    digest, and the reason travels with it into the plan.
    """
    try:
        graphs = signature_graphs(path, tags, stat_cache, paranoid=paranoid)
    except GraphFingerprintError as error:
        return {
            "*": {
                "digest": model_digest,
                "kind": WHOLE_MODEL,
                "details": {"whole model": str(error)},
            }
        }
    kind = "graph-paranoid" if paranoid else "graph"
    return {
        name: {
            "digest": graph.digest,
            "kind": kind,
            "details": {
                "graph": graph.graph,
                **{f"{c.kind} {c.name}": c.digest for c in graph.captures},
            },
        }
        for name, graph in graphs.items()
    }


def changed_captures(before: Mapping[str, str], now: Mapping[str, str]) -> dict[str, list[str]]:
    """Capture kind -> names of `now`'s captures whose digest `before` does not hold.

    `before` and `now` are two graph fingerprints' details ("graph", "<kind> <name>" -> digest).
    """
    old_digests: dict[str, set[str]] = {}
    for key, digest in before.items():
        old_digests.setdefault(key.split(" ", 1)[0], set()).add(digest)
    changed: dict[str, list[str]] = {}
    for key, digest in now.items():
        if key == "graph":
            continue
        kind, _, name = key.partition(" ")
        # By digest, not name: Keras renames variables between exports of the same model.
        if digest not in old_digests.get(kind, set()):
            changed.setdefault(kind, []).append(name)
    return changed


class ModelSources:
    """One plan's view of its model sources: signature names and per-signature fingerprints.

    Both are cached in the state under the source's content digest, so an unchanged model is
    neither parsed nor walked again; only `stat` calls remain.
    """

    def __init__(
        self,
        stat_cache: StatCache,
        previous: dict[str, dict[str, Any]],
        *,
        paranoid: bool,
    ) -> None:
        self.stat_cache = stat_cache
        self.previous = previous
        self.paranoid = paranoid
        self.used: dict[str, dict[str, Any]] = {}
        self._digests: dict[Source, str] = {}  # each source is walked once per plan

    def _digest(self, source: Source) -> str:
        if source not in self._digests:
            self._digests[source] = source_digest(source, self.stat_cache, paranoid=self.paranoid)
        return self._digests[source]

    def _entry(self, source: SavedModelSource) -> tuple[str, str, dict[str, Any]]:
        digest = self._digest(source)
        key = f"{digest}:{','.join(source.tags)}:{'paranoid' if self.paranoid else 'crc32c'}"
        if key not in self.used:
            self.used[key] = dict(self.previous.get(key, {}))
        return digest, key, self.used[key]

    def signature_names(self, source: SavedModelSource) -> list[str]:
        _, _, entry = self._entry(source)
        if "names" not in entry:
            entry["names"] = find_meta_graph(source.path, source.tags).signature_names()
        return list(entry["names"])

    def fingerprints(self, source: Source) -> dict[str, SourceEntry]:
        if isinstance(source, KerasSource):
            # A tf.keras SavedModel folder converted to a graph model: its graph fingerprint.
            source = source.as_saved_model() or source
        if not isinstance(source, SavedModelSource):
            digest = self._digest(source)
            return {"*": {"digest": digest, "kind": f"{source.kind}-content", "details": {}}}
        digest, _, entry = self._entry(source)
        if "sources" not in entry:
            entry["sources"] = saved_model_sources(
                source.path, source.tags, digest, self.stat_cache, paranoid=self.paranoid
            )
        sources: dict[str, SourceEntry] = entry["sources"]
        return sources
