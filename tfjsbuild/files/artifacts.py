"""Check a converted graph model on disk, and describe it for the state and the asset index."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from tfjsbuild.errors import BuildError
from tfjsbuild.files.readback import (
    InvalidData,
    as_dict,
    as_int,
    as_list,
    as_str,
    resolve_inside,
    safe_relative_path,
)

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
class TensorSpec:
    """One input or output tensor of a converted signature, keyed as model.json keys it."""

    name: str
    dtype: str  # TensorFlow.js's name for it: float32, int32, string, ...
    shape: tuple[int | None, ...] | None  # None: unknown rank; a None dimension: unknown size

    def to_json_dict(self) -> dict[str, Any]:
        """As the state, cache entries, the asset index and --json write it (in this order)."""
        return {
            "name": self.name,
            "dtype": self.dtype,
            "shape": None if self.shape is None else list(self.shape),
        }

    @classmethod
    def from_json_dict(cls, value: Any, where: str) -> TensorSpec:
        """A spec read back (untrusted), checked; raises InvalidData naming the key path."""
        spec = as_dict(value, where)
        shape = spec.get("shape")
        if shape is not None:  # checked first, as ever: the same error for the same bad record
            shape = tuple(
                None if dim is None else as_int(dim, f"{where}.shape[{i}]")
                for i, dim in enumerate(as_list(shape, f"{where}.shape"))
            )
        return cls(
            name=as_str(spec.get("name"), f"{where}.name"),
            dtype=as_str(spec.get("dtype"), f"{where}.dtype"),
            shape=shape,
        )


def tensor_specs_from_json(value: Any, where: str) -> tuple[TensorSpec, ...]:
    """The `inputs`/`outputs` list of a record read back: [{name, dtype, shape}], checked."""
    return tuple(
        TensorSpec.from_json_dict(item, f"{where}[{index}]")
        for index, item in enumerate(as_list(value, where))
    )


def tensor_specs_json(specs: Iterable[TensorSpec]) -> list[dict[str, Any]]:
    """The `inputs`/`outputs` list as the state, cache entries and the asset index write it."""
    return [spec.to_json_dict() for spec in specs]


@dataclass(frozen=True)
class GraphModelOutput:
    files: tuple[OutputFile, ...]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @property
    def bytes(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def content_hash(self) -> str:
        return content_hash(self.files)


class HashedFile(Protocol):
    @property
    def path(self) -> str: ...
    @property
    def sha256(self) -> str: ...


def content_hash(files: Iterable[HashedFile]) -> str:
    """An output's content hash (state, asset index, the loader's `?v=`): its files' paths and
    digests, in order (shared shards by their path below output_dir)."""
    digest = hashlib.sha256()
    for item in files:
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
    files, inputs, outputs = _checked_model(directory)
    described = tuple(
        OutputFile(name, (directory / name).stat().st_size, file_sha256(directory / name))
        for name in files
    )
    return GraphModelOutput(files=described, inputs=inputs, outputs=outputs)


def validate_graph_model(directory: Path) -> None:
    """Every check of `check_graph_model`, without hashing the files (a restore hashed them)."""
    _checked_model(directory)


def shard_paths(model: Any, where: str) -> list[str]:
    """The weight shard files a parsed model.json lists, in order, each a safe relative name.

    model.json is read back from converters and caches: a shard path must never make this tool
    look (or a restore write) outside the model's folder.
    """
    manifest = model.get("weightsManifest", []) if isinstance(model, dict) else None
    if not isinstance(manifest, list):
        raise OutputCheckError(f"{where}: weightsManifest is not a list")
    shards: list[str] = []
    for index, group in enumerate(manifest):
        paths = group.get("paths", []) if isinstance(group, dict) else None
        if not isinstance(paths, list):
            raise OutputCheckError(f"{where}: weightsManifest[{index}].paths is not a list")
        for number, path in enumerate(paths):
            try:
                shard = safe_relative_path(path, f"weightsManifest[{index}].paths[{number}]")
            except InvalidData as error:
                raise OutputCheckError(f"{where}: {error}") from error
            if shard == MODEL_JSON or shard in shards:
                problem = "is model.json itself" if shard == MODEL_JSON else "is listed twice"
                raise OutputCheckError(
                    f"{where}: weightsManifest[{index}].paths[{number}]: {shard!r} {problem}"
                )
            shards.append(shard)
    return shards


def _checked_model(
    directory: Path,
) -> tuple[list[str], tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """(files, inputs, outputs) of the graph model in `directory`, or OutputCheckError."""
    model_json = directory / MODEL_JSON
    model = _read_model_json(model_json, directory)
    shards = shard_paths(model, str(model_json))
    _check_shards_written(directory, model_json, shards)
    try:
        expected_bytes, variable_size = _expected_weight_bytes(model)
        signature = model.get("signature") or {}
        inputs = _tensor_list(signature.get("inputs", {}))
        outputs = _tensor_list(signature.get("outputs", {}))
    except (AttributeError, TypeError, ValueError, ArithmeticError) as error:
        # Not what tensorflowjs writes (1e999 parses as infinity): name the file, never crash.
        raise OutputCheckError(
            f"{model_json} has weight specs or a signature TensorFlow.js does not write "
            f"({type(error).__name__}: {error})"
        ) from error
    shard_bytes = sum((directory / shard).stat().st_size for shard in shards)
    if shard_bytes != expected_bytes and not (variable_size and shard_bytes > expected_bytes):
        raise OutputCheckError(
            f"weight shards in {directory} hold {shard_bytes} bytes but model.json's weight "
            f"specs need {expected_bytes}"
        )
    return _output_files(directory, shards), inputs, outputs


def _read_model_json(model_json: Path, directory: Path) -> dict[str, Any]:
    """The parsed model.json, if it is a regular file holding a TensorFlow.js model."""
    if model_json.is_symlink():
        raise OutputCheckError(f"{model_json} is a symbolic link; an output holds only files")
    if not model_json.is_file():
        raise OutputCheckError(f"the converter wrote no {MODEL_JSON} in {directory}")
    try:
        model = json.loads(model_json.read_text("utf-8"))
    except (OSError, ValueError, RecursionError) as error:
        raise OutputCheckError(f"{model_json} is not valid JSON: {error}") from error
    if not isinstance(model, dict) or "modelTopology" not in model:
        raise OutputCheckError(f"{model_json} is not a TensorFlow.js model (no modelTopology)")
    return model


def _check_shards_written(directory: Path, model_json: Path, shards: list[str]) -> None:
    """Every listed shard is a file in `directory`, reached through no symbolic link."""
    missing = []
    for shard in shards:
        try:
            path = resolve_inside(directory, shard, shard)
        except InvalidData as error:
            raise OutputCheckError(
                f"{model_json} lists a weight shard through a symbolic link: {error}"
            ) from error
        if not path.is_file():
            missing.append(shard)
    if missing:
        raise OutputCheckError(
            f"{model_json} lists weight shards that were not written: {', '.join(missing)}"
        )


def _expected_weight_bytes(model: dict[str, Any]) -> tuple[int, bool]:
    """(bytes the weight specs need, whether some weight's size is unknown: strings)."""
    expected_bytes = 0
    variable_size = False
    for group in model.get("weightsManifest", []):
        for spec in group.get("weights", []):
            size = weight_bytes(spec)
            if size is None:
                variable_size = True
            else:
                expected_bytes += size
    return expected_bytes, variable_size


def _output_files(directory: Path, shards: list[str]) -> list[str]:
    """model.json, its shards, then any other file the converter wrote, sorted."""
    files = [MODEL_JSON, *shards]
    for path in sorted(directory.rglob("*")):
        if path.is_symlink():
            # rglob does not descend into a linked folder, and a linked file is not output.
            raise OutputCheckError(f"{path} is a symbolic link; an output holds only files")
        name = path.relative_to(directory).as_posix()
        if path.is_file() and name not in files:
            files.append(name)
    return files


def weight_bytes(spec: dict[str, Any]) -> int | None:
    dtype = spec.get("dtype", "float32")
    quantization = spec.get("quantization")
    if quantization:
        dtype = quantization.get("dtype", dtype)
    if dtype == "string":
        return None
    per_element = _WEIGHT_BYTES.get(dtype)
    if per_element is None:
        return None
    return per_element * math.prod(_dimension(d) for d in spec.get("shape", []))


def _dimension(value: Any) -> int:
    size = int(value)
    if size < 0:
        raise ValueError(f"negative dimension {size}")
    return size


def _tensor_list(tensors: dict[str, Any]) -> tuple[TensorSpec, ...]:
    """model.json's `signature.inputs`/`outputs` (TensorInfo protos as JSON), sorted by key."""
    described = []
    for key in sorted(tensors):
        info = tensors[key]
        shape_info = info.get("tensorShape", {})
        shape: tuple[int | None, ...] | None
        if shape_info.get("unknownRank"):
            shape = None
        else:
            shape = tuple(
                None if int(dim.get("size", -1)) < 0 else int(dim["size"])
                for dim in shape_info.get("dim", [])
            )
        dtype = _DTYPE_NAMES.get(info.get("dtype", ""), str(info.get("dtype", "")).lower())
        described.append(TensorSpec(name=str(key), dtype=dtype, shape=shape))
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
        weights = []
        for group in model.get("weightsManifest", []):
            for spec in group.get("weights", []):
                quantization = spec.get("quantization") or {}
                dtype = str(quantization.get("dtype", spec.get("dtype", "float32")))
                shape = tuple(_dimension(d) for d in spec.get("shape", []))
                size = weight_bytes(spec)
                weights.append(StoredWeight(str(spec.get("name")), dtype, shape, size or 0))
    except (OSError, ValueError, RecursionError, AttributeError, TypeError, ArithmeticError):
        return []  # only a hint in a message: a model.json not as TensorFlow.js writes it has none
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
