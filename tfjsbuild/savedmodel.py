"""Read a SavedModel's tag sets and signatures without importing TensorFlow.

`saved_model.pb` is a `SavedModel` message: field 1 is the schema version, field 2 repeats
`MetaGraphDef`. The wrapper is decoded by hand (two fields of protobuf wire format); each
MetaGraphDef is parsed with TensorBoard's copy of the TensorFlow protos, which import in
milliseconds and pull in no TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tfjsbuild.errors import TfjsBuildError

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

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.key,
            "dtype": self.dtype,
            "shape": None if self.shape is None else list(self.shape),
        }


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
    from tensorboard.compat.proto import meta_graph_pb2

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
    try:
        data = pb.read_bytes()
        infos = []
        for field_number, payload in _length_delimited_fields(data):
            if field_number != 2:
                continue
            meta_graph = meta_graph_pb2.MetaGraphDef.FromString(payload)
            infos.append(_meta_graph_info(meta_graph))
    except Exception as error:  # protobuf's DecodeError and friends
        raise SavedModelError(f"cannot parse {pb}: {error}") from error
    if not infos:
        raise SavedModelError(f"{pb} holds no MetaGraph")
    return tuple(infos)


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


def _length_delimited_fields(data: bytes) -> list[tuple[int, bytes]]:
    """Top-level fields of a protobuf message; varints skipped, length-delimited ones returned."""
    fields = []
    position = 0
    while position < len(data):
        key, position = _varint(data, position)
        field_number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            _, position = _varint(data, position)
        elif wire_type == 2:
            length, position = _varint(data, position)
            if position + length > len(data):
                raise SavedModelError("truncated protobuf field")
            fields.append((field_number, data[position : position + length]))
            position += length
        elif wire_type == 1:
            position += 8
        elif wire_type == 5:
            position += 4
        else:
            raise SavedModelError(f"unexpected protobuf wire type {wire_type}")
    return fields


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
