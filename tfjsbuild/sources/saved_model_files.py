"""Read a SavedModel's tag sets and signatures without importing TensorFlow.

`saved_model.pb` is a `SavedModel` message: field 1 is the schema version, field 2 repeats
`MetaGraphDef`. The wrapper is decoded by hand (two fields of protobuf wire format); each
MetaGraphDef is parsed with TensorBoard's copy of the TensorFlow protos, which import in
milliseconds and pull in no TensorFlow. The checkpoint's `variables.index` is read by hand too
(a LevelDB-format table of BundleEntryProtos). Whether a folder is whole is
`saved_model_integrity.py`'s question.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from tfjsbuild.errors import TfjsBuildError
from tfjsbuild.files.artifacts import TensorSpec

SAVED_MODEL_PB = "saved_model.pb"
CHUNKED_SAVED_MODEL = "saved_model.cpb"

_DTYPES = {
    "DT_FLOAT": "float32",
    "DT_DOUBLE": "float64",
    "DT_HALF": "float16",
    "DT_BFLOAT16": "bfloat16",
    "DT_INT8": "int8",
    "DT_INT16": "int16",
    "DT_INT32": "int32",
    "DT_INT64": "int64",
    "DT_UINT8": "uint8",
    "DT_UINT16": "uint16",
    "DT_UINT32": "uint32",
    "DT_UINT64": "uint64",
    "DT_BOOL": "bool",
    "DT_STRING": "string",
    "DT_COMPLEX64": "complex64",
    "DT_RESOURCE": "resource",
    "DT_VARIANT": "variant",
}


class SavedModelError(TfjsBuildError):
    """A SavedModel folder that is missing, unreadable or lacks what was asked for."""


@dataclass(frozen=True)
class TensorInfo:
    key: str  # the SignatureDef key users address the tensor by
    name: str  # the graph tensor name, e.g. serving_default_x:0
    dtype: str
    shape: tuple[int | None, ...] | None  # None: unknown rank

    @property
    def spec(self) -> TensorSpec:
        """As a converted model names it: by its key."""
        return TensorSpec(self.key, self.dtype, self.shape)

    def as_dict(self) -> dict[str, Any]:
        return self.spec.to_json_dict()


@dataclass(frozen=True)
class SignatureInfo:
    name: str
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    method: str


@dataclass(frozen=True)
class MetaGraphInfo:
    tags: tuple[str, ...]
    signatures: tuple[SignatureInfo, ...]

    def signature_names(self) -> list[str]:
        """Exportable signatures; TF's internal `__saved_model_init_op` and the like excluded."""
        return [s.name for s in self.signatures if not s.name.startswith("__")]


def is_saved_model(path: Path) -> bool:
    return (path / SAVED_MODEL_PB).is_file() or (path / CHUNKED_SAVED_MODEL).is_file()


def read_meta_graphs(path: Path) -> tuple[MetaGraphInfo, ...]:
    """Every MetaGraph in the SavedModel at `path`, with its tags and signatures."""
    return tuple(_meta_graph_info(meta_graph) for meta_graph in parse_saved_model(path))


def load_meta_graph_def(path: Path, tags: tuple[str, ...]) -> Any:
    """The MetaGraphDef proto tagged `tags` (TensorBoard's copy of the proto class)."""
    for meta_graph in parse_saved_model(path):
        if set(meta_graph.meta_info_def.tags) == set(tags):
            return meta_graph
    raise SavedModelError(f"{path} has no MetaGraph tagged {','.join(tags)}")


def parse_saved_model(path: Path) -> tuple[Any, ...]:
    pb = path / SAVED_MODEL_PB
    if not path.exists():
        raise SavedModelError(f"SavedModel folder {path} does not exist")
    if not pb.is_file():
        if (path / CHUNKED_SAVED_MODEL).is_file():
            raise SavedModelError(
                f"{path} holds a chunked {CHUNKED_SAVED_MODEL} (a > 2 GB graph), which "
                "tfjs-build cannot read yet; list the signatures by name in the manifest"
            )
        raise SavedModelError(f"{path} is not a SavedModel: it has no {SAVED_MODEL_PB}")
    stat = pb.stat()
    return _parse_saved_model_file(pb, stat.st_size, stat.st_mtime_ns, stat.st_ino)


@lru_cache(maxsize=8)
def _parse_saved_model_file(pb: Path, size: int, mtime_ns: int, inode: int) -> tuple[Any, ...]:
    """Parsed once per plan even when several steps ask; keyed by the file's stat data."""
    from tensorboard.compat.proto import meta_graph_pb2

    try:
        data = pb.read_bytes()
        meta_graphs = tuple(
            meta_graph_pb2.MetaGraphDef.FromString(payload)
            for field_number, payload in _fields(data)
            if field_number == 2 and isinstance(payload, bytes)
        )
    except Exception as error:  # protobuf's DecodeError and friends
        raise SavedModelError(f"cannot parse {pb}: {error}") from error
    if not meta_graphs:
        raise SavedModelError(f"{pb} holds no MetaGraph")
    return meta_graphs


def find_meta_graph(path: Path, tags: tuple[str, ...]) -> MetaGraphInfo:
    infos = read_meta_graphs(path)
    for info in infos:
        if set(info.tags) == set(tags):
            return info
    available = "; ".join(",".join(info.tags) or "(no tags)" for info in infos)
    raise SavedModelError(
        f"{path} has no MetaGraph tagged {','.join(tags)}; it has: {available}. "
        "Set `tags` in the manifest to one of these."
    )


def _meta_graph_info(meta_graph: Any) -> MetaGraphInfo:
    signatures = []
    for name in sorted(meta_graph.signature_def):
        signature = meta_graph.signature_def[name]
        signatures.append(
            SignatureInfo(
                name=name,
                inputs=tuple(
                    _tensor_info(key, signature.inputs[key]) for key in sorted(signature.inputs)
                ),
                outputs=tuple(
                    _tensor_info(key, signature.outputs[key]) for key in sorted(signature.outputs)
                ),
                method=signature.method_name,
            )
        )
    return MetaGraphInfo(tags=tuple(meta_graph.meta_info_def.tags), signatures=tuple(signatures))


def _tensor_info(key: str, info: Any) -> TensorInfo:
    from tensorboard.compat.proto import types_pb2

    dtype_name = types_pb2.DataType.Name(info.dtype)
    shape: tuple[int | None, ...] | None
    if info.tensor_shape.unknown_rank:
        shape = None
    else:
        shape = tuple(None if dim.size < 0 else int(dim.size) for dim in info.tensor_shape.dim)
    return TensorInfo(
        key=key, name=info.name, dtype=_DTYPES.get(dtype_name, dtype_name.lower()), shape=shape
    )


def _varint(data: bytes, position: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if position >= len(data):
            raise SavedModelError("truncated protobuf varint")
        byte = data[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, position
        shift += 7


# --------------------------------------------------------------------------- checkpoints

VARIABLES_DIR = "variables"
VARIABLES_INDEX = "variables.index"
OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"
_TABLE_MAGIC = 0xDB4775248B80FB57


@dataclass(frozen=True)
class BundleEntry:
    """Where a checkpoint tensor lives and what it is (TensorFlow's BundleEntryProto)."""

    dtype: int
    shape: tuple[int, ...]
    shard_id: int
    offset: int
    size: int
    crc32c: int


def read_bundle_index(path: Path) -> dict[str, BundleEntry]:
    """Every tensor of a checkpoint's `variables.index` (a LevelDB-format table), by key.

    The file is untrusted: whatever is wrong with it is a SavedModelError naming it.
    """
    data = path.read_bytes()
    if len(data) < 48 or int.from_bytes(data[-8:], "little") != _TABLE_MAGIC:
        raise SavedModelError(f"{path} is not a checkpoint index (bad table magic)")
    try:
        return _bundle_entries(data)
    except SavedModelError as error:
        raise SavedModelError(f"{path}: {error}") from error
    except (ValueError, IndexError) as error:  # e.g. a key that is not UTF-8
        raise SavedModelError(f"{path}: corrupt entry ({type(error).__name__})") from error


def _bundle_entries(data: bytes) -> dict[str, BundleEntry]:
    footer = data[-48:]
    _, position = _varint(footer, 0)  # metaindex offset
    _, position = _varint(footer, position)  # metaindex size
    index_offset, position = _varint(footer, position)
    index_size, _ = _varint(footer, position)
    entries: dict[str, BundleEntry] = {}
    for _, handle in _table_block(data, index_offset, index_size):
        block_offset, position = _varint(handle, 0)
        block_size, _ = _varint(handle, position)
        for key, value in _table_block(data, block_offset, block_size):
            if key:  # the empty key holds the BundleHeaderProto
                entries[key.decode("utf-8")] = _bundle_entry(value)
    return entries


def _table_block(data: bytes, offset: int, size: int) -> list[tuple[bytes, bytes]]:
    if offset + size + 5 > len(data):
        raise SavedModelError("truncated checkpoint index block")
    if data[offset + size] != 0:
        raise SavedModelError("compressed checkpoint index blocks are not supported")
    block = data[offset : offset + size]
    restarts = int.from_bytes(block[-4:], "little")
    end = len(block) - 4 - 4 * restarts
    entries = []
    key = b""
    position = 0
    while position < end:
        shared, position = _varint(block, position)
        unshared, position = _varint(block, position)
        value_length, position = _varint(block, position)
        key = key[:shared] + block[position : position + unshared]
        position += unshared
        entries.append((key, block[position : position + value_length]))
        position += value_length
    return entries


def _bundle_entry(raw: bytes) -> BundleEntry:
    fields = _fields(raw)
    integers = {number: value for number, value in fields if isinstance(value, int)}
    shape: tuple[int, ...] = ()
    for field_number, shape_proto in fields:
        if field_number != 2 or not isinstance(shape_proto, bytes):
            continue
        for dim_number, dim in _fields(shape_proto):  # TensorShapeProto.dim
            if dim_number == 2 and isinstance(dim, bytes):
                size = next((v for n, v in _fields(dim) if n == 1 and isinstance(v, int)), 0)
                shape += (_signed(size),)
    return BundleEntry(
        dtype=integers.get(1, 0),
        shape=shape,
        shard_id=integers.get(3, 0),
        offset=integers.get(4, 0),
        size=integers.get(5, 0),
        crc32c=integers.get(6, 0),
    )


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _fields(data: bytes) -> list[tuple[int, int | bytes]]:
    """All top-level fields of a protobuf message: varints and fixed ints as int, the rest as bytes."""
    fields: list[tuple[int, int | bytes]] = []
    position = 0
    while position < len(data):
        key, position = _varint(data, position)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            value, position = _varint(data, position)
            fields.append((number, value))
        elif wire_type == 1:
            fields.append((number, int.from_bytes(data[position : position + 8], "little")))
            position += 8
        elif wire_type == 5:
            fields.append((number, int.from_bytes(data[position : position + 4], "little")))
            position += 4
        elif wire_type == 2:
            length, position = _varint(data, position)
            if position + length > len(data):
                raise SavedModelError("truncated protobuf field")
            fields.append((number, data[position : position + length]))
            position += length
        else:
            raise SavedModelError(f"unexpected protobuf wire type {wire_type}")
    return fields


def data_shard_path(variables_dir: Path, shard_id: int) -> Path:
    """`variables.data-0000N-of-0000M` for a shard id (M read from the folder)."""
    shards = sorted(variables_dir.glob("variables.data-*-of-*"))
    if not shards:
        raise SavedModelError(f"{variables_dir} has no variables.data-* shards")
    total = shards[0].name.rsplit("-of-", 1)[1]
    return variables_dir / f"variables.data-{shard_id:05d}-of-{total}"


def read_checkpoint_object_graph(variables_dir: Path, entries: dict[str, BundleEntry]) -> Any:
    """The checkpoint's TrackableObjectGraph, which lines up node for node with the SavedModel's."""
    from tensorboard.compat.proto import trackable_object_graph_pb2

    entry = entries.get(OBJECT_GRAPH_KEY)
    if entry is None:
        raise SavedModelError(f"{variables_dir / VARIABLES_INDEX} has no {OBJECT_GRAPH_KEY}")
    shard = data_shard_path(variables_dir, entry.shard_id)
    with shard.open("rb") as handle:
        handle.seek(entry.offset)
        raw = handle.read(entry.size)
    # A scalar string tensor: varint length, a 4-byte checksum of the lengths, then the bytes.
    try:
        length, position = _varint(raw, 0)
        payload = raw[position + 4 : position + 4 + length]
        return trackable_object_graph_pb2.TrackableObjectGraph.FromString(payload)
    except Exception as error:  # protobuf's DecodeError and friends: the bytes are damaged
        raise SavedModelError(f"cannot parse the object graph in {shard}: {error}") from error
