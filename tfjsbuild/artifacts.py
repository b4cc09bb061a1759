"""Check a converted graph model on disk, and describe it for the state and the asset index."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tfjsbuild.errors import BuildError

MODEL_JSON = "model.json"

_DTYPE_NAMES = {
    "DT_FLOAT": "float32",
    "DT_HALF": "float16",
    "DT_INT32": "int32",
    "DT_INT64": "int64",
    "DT_BOOL": "bool",
    "DT_STRING": "string",
    "DT_UINT8": "uint8",
    "DT_INT8": "int8",
    "DT_DOUBLE": "float64",
    "DT_COMPLEX64": "complex64",
    "DT_RESOURCE": "resource",
}
_WEIGHT_BYTES = {
    "float32": 4,
    "int32": 4,
    "bool": 1,
    "complex64": 8,
    "float16": 2,
    "uint8": 1,
    "uint16": 2,
    "int64": 8,
}


class OutputCheckError(BuildError):
    """A converted output that is missing files or whose shards do not add up."""


@dataclass(frozen=True)
class OutputFile:
    path: str  # relative to the signature's output folder, POSIX separators
    size: int
    sha256: str


@dataclass(frozen=True)
class GraphModelOutput:
    files: tuple[OutputFile, ...]
    inputs: tuple[dict[str, Any], ...]
    outputs: tuple[dict[str, Any], ...]

    @property
    def bytes(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def content_hash(self) -> str:
        digest = hashlib.sha256()
        for item in self.files:
            digest.update(f"{item.path}\0{item.sha256}\n".encode())
        return digest.hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_graph_model(directory: Path) -> GraphModelOutput:
    """Fail loudly unless `directory` holds a model.json whose every shard exists and adds up."""
    model_json = directory / MODEL_JSON
    if not model_json.is_file():
        raise OutputCheckError(f"the converter wrote no {MODEL_JSON} in {directory}")
    try:
        model = json.loads(model_json.read_text("utf-8"))
    except (OSError, ValueError) as error:
        raise OutputCheckError(f"{model_json} is not valid JSON: {error}") from error
    if not isinstance(model, dict) or "modelTopology" not in model:
        raise OutputCheckError(f"{model_json} is not a TensorFlow.js model (no modelTopology)")

    shards: list[str] = []
    expected_bytes = 0
    variable_size = False
    for group in model.get("weightsManifest", []):
        shards.extend(group.get("paths", []))
        for spec in group.get("weights", []):
            size = _weight_bytes(spec)
            if size is None:
                variable_size = True
            else:
                expected_bytes += size
    missing = [shard for shard in shards if not (directory / shard).is_file()]
    if missing:
        raise OutputCheckError(
            f"{model_json} lists weight shards that were not written: {', '.join(missing)}"
        )
    shard_bytes = sum((directory / shard).stat().st_size for shard in shards)
    if shard_bytes != expected_bytes and not (variable_size and shard_bytes > expected_bytes):
        raise OutputCheckError(
            f"weight shards in {directory} hold {shard_bytes} bytes but model.json's weight "
            f"specs need {expected_bytes}"
        )

    files = [MODEL_JSON, *shards]
    files += sorted(
        p.relative_to(directory).as_posix()
        for p in directory.rglob("*")
        if p.is_file() and p.relative_to(directory).as_posix() not in files
    )
    described = tuple(
        OutputFile(name, (directory / name).stat().st_size, file_sha256(directory / name))
        for name in files
    )
    signature = model.get("signature") or {}
    return GraphModelOutput(
        files=described,
        inputs=_tensor_list(signature.get("inputs", {})),
        outputs=_tensor_list(signature.get("outputs", {})),
    )


def _weight_bytes(spec: dict[str, Any]) -> int | None:
    dtype = spec.get("dtype", "float32")
    quantization = spec.get("quantization")
    if quantization:
        dtype = quantization.get("dtype", dtype)
    if dtype == "string":
        return None
    per_element = _WEIGHT_BYTES.get(dtype)
    if per_element is None:
        return None
    return per_element * math.prod(int(d) for d in spec.get("shape", []))


def _tensor_list(tensors: dict[str, Any]) -> tuple[dict[str, Any], ...]:
    described = []
    for key in sorted(tensors):
        info = tensors[key]
        shape_info = info.get("tensorShape", {})
        shape: list[int | None] | None
        if shape_info.get("unknownRank"):
            shape = None
        else:
            shape = [
                None if int(dim.get("size", -1)) < 0 else int(dim["size"])
                for dim in shape_info.get("dim", [])
            ]
        described.append(
            {
                "name": key,
                "dtype": _DTYPE_NAMES.get(
                    info.get("dtype", ""), str(info.get("dtype", "")).lower()
                ),
                "shape": shape,
            }
        )
    return tuple(described)


@dataclass(frozen=True)
class StoredWeight:
    name: str
    dtype: str  # as stored: the quantized dtype for a quantized weight
    shape: tuple[int, ...]
    bytes: int


def stored_weights(directory: Path) -> list[StoredWeight]:
    """Every weight of the model in `directory`, biggest first, as its shards store it."""
    try:
        model = json.loads((directory / MODEL_JSON).read_text("utf-8"))
    except (OSError, ValueError):
        return []
    weights = []
    for group in model.get("weightsManifest", []):
        for spec in group.get("weights", []):
            quantization = spec.get("quantization") or {}
            dtype = quantization.get("dtype", spec.get("dtype", "float32"))
            shape = tuple(int(d) for d in spec.get("shape", []))
            size = _weight_bytes(spec)
            weights.append(StoredWeight(str(spec.get("name")), dtype, shape, size or 0))
    return sorted(weights, key=lambda w: (-w.bytes, w.name))


def size_parts(files: Any) -> tuple[int, int]:
    """(model.json bytes, weight shard bytes) of an output's files (anything with path, size)."""
    model_json = sum(f.size for f in files if f.path == MODEL_JSON)
    return model_json, sum(f.size for f in files if f.path.endswith(".bin"))


def over_budget_message(directory: Path, total: int, budget: int) -> str:
    """Why an output is over `max_bytes`, naming the weights worth quantizing."""
    biggest = stored_weights(directory)[:5]
    named = ", ".join(
        f"{w.name} ({w.dtype} {list(w.shape)}, {format_bytes(w.bytes)})" for w in biggest
    )
    return (
        f"output is {format_bytes(total)} ({total} bytes), over its max_bytes budget of "
        f"{format_bytes(budget)} ({budget} bytes); the biggest weights: {named or 'none'}. "
        "Quantize them (e.g. quantization: {float16: [...]}) or raise max_bytes"
    )


def format_bytes(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")
