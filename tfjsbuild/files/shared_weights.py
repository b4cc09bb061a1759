"""Weights shared across signatures: a model's weights read back as bytes, grouped by the set
of signatures that use them, and stored once as content-addressed shards.

Shared shards live in `output_dir/tfjs-build-weights/`, each named by the first 32 hex digits
of the SHA-256 of its bytes: equal bytes are one file, and a name says what its file must
hold. Weights are matched by their stored bytes (quantized, if they are), never by name: two
signatures whose weights are named differently but hold the same bytes share them.

TensorFlow.js reads a `weightsManifest` group by concatenating its `paths` and cutting the
weights out in order, so a group of shared shards holds exactly the weights of one set of
signatures (the backbone all heads use, then each head's own), in one order fixed by their
content: the same signatures with the same weights always give the same files.

Nothing here knows the manifest or the state, or writes: `building/shared_weights.py` does.
"""

from __future__ import annotations

import hashlib
import math
import posixpath
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tfjsbuild.files.artifacts import MODEL_JSON, OutputCheckError, OutputFile, weight_bytes
from tfjsbuild.files.json_types import JsonObject
from tfjsbuild.files.readback import (
    InvalidData,
    as_str,
    parse_json,
    resolve_inside,
    safe_relative_path,
)

SHARED_WEIGHTS_DIR = "tfjs-build-weights"  # in output_dir, reserved there by the manifest
_NAME_HEX = 32
_SHARD_NAME = re.compile(rf"[0-9a-f]{{{_NAME_HEX}}}\.bin")


def shard_name(data: bytes) -> str:
    """The file name a shared shard holding `data` has."""
    return _name(hashlib.sha256(data).hexdigest())


def _name(sha256: str) -> str:
    return sha256[:_NAME_HEX] + ".bin"


def is_shard_name(name: str) -> bool:
    """Whether `name` is a content-addressed shard's (the app loader adds no `?v=` to these)."""
    return _SHARD_NAME.fullmatch(name) is not None


def shared_path(value: Any, where: str) -> str:
    """A shared shard as a record keeps it: `tfjs-build-weights/<32 hex>.bin`, relative to
    output_dir; anything else is InvalidData (it is read back untrusted)."""
    text = as_str(value, where)
    folder, _, name = text.partition("/")
    if folder != SHARED_WEIGHTS_DIR or not is_shard_name(name):
        raise InvalidData(
            where, f"{text!r} is not a shared weight shard ({SHARED_WEIGHTS_DIR}/<hex>.bin)"
        )
    return text


def holds_its_name(path: Path) -> bool:
    """Whether a shared shard is a file holding the bytes its name says (a missing file or a
    symbolic link: False)."""
    try:
        return not path.is_symlink() and shard_name(path.read_bytes()) == path.name
    except OSError:
        return False


@dataclass(frozen=True)
class Weight:
    spec: JsonObject  # the weight's entry in model.json's weightsManifest
    data: bytes  # its bytes as stored: quantized, if it is


@dataclass(frozen=True)
class StoredModel:
    """A model.json and its weights, as read from disk."""

    model: JsonObject
    weights: tuple[Weight, ...]


def read_model(directory: Path, output_dir: Path, folder: str | None = None) -> StoredModel:
    """The model in `directory` with every weight cut out of its shards, its own or shared ones;
    OutputCheckError if the files do not add up. Shared paths are resolved as from `folder`
    (relative to output_dir; by default where `directory` is): a staged model.json is read as
    it will be once in place."""
    model_json = directory / MODEL_JSON
    try:
        model = parse_json(model_json.read_bytes())
        groups = model.get("weightsManifest") if isinstance(model, dict) else None
        if not isinstance(groups, list):
            raise InvalidData("weightsManifest", "is not a list")
    except (OSError, InvalidData) as error:
        raise OutputCheckError(f"{model_json} is not a TensorFlow.js model: {error}") from error
    if folder is None:
        folder = directory.relative_to(output_dir).as_posix()
    weights: list[Weight] = []
    for index, group in enumerate(groups):
        where = f"{model_json}: weightsManifest[{index}]"
        try:
            paths, specs = list(group["paths"]), list(group["weights"])
        except (KeyError, TypeError) as error:
            raise OutputCheckError(f"{where} has no paths and weights") from error
        parts = []
        for path in paths:
            file = _shard_file(directory, output_dir, folder, path, where)
            try:
                parts.append(file.read_bytes())
            except OSError as error:
                raise OutputCheckError(f"{where}: cannot read {path!r}: {error}") from error
        weights += _cut(b"".join(parts), specs, where)
    return StoredModel(model, tuple(weights))


def _shard_file(directory: Path, output_dir: Path, folder: str, path: Any, where: str) -> Path:
    """Where a listed shard is. A path may leave the model's folder only for a shared shard,
    reached through no symbolic link."""
    try:
        text = as_str(path, where)
        if ".." not in text.split("/"):
            return resolve_inside(directory, safe_relative_path(text, where), where)
        shared = shared_path(posixpath.normpath(posixpath.join(folder, text)), where)
        return resolve_inside(output_dir, shared, where)
    except InvalidData as error:
        raise OutputCheckError(str(error)) from error


def _cut(data: bytes, specs: list[Any], where: str) -> list[Weight]:
    """The weights of one group, cut out of its shards' bytes in order."""
    weights = []
    offset = 0
    for spec in specs:
        try:
            size = weight_bytes(spec)
            if size is None:  # a string tensor: each element a uint32 length, then its bytes
                size = _string_bytes(data, offset, math.prod(int(d) for d in spec["shape"]))
        except (KeyError, TypeError, ValueError, AttributeError, ArithmeticError) as error:
            raise OutputCheckError(
                f"{where}: a weight spec TensorFlow.js does not write"
            ) from error
        if offset + size > len(data):
            raise OutputCheckError(f"{where}: its shards hold fewer bytes than its weights need")
        weights.append(Weight(dict(spec), data[offset : offset + size]))
        offset += size
    if offset != len(data):
        raise OutputCheckError(f"{where}: its shards hold {len(data) - offset} bytes too many")
    return weights


def _string_bytes(data: bytes, offset: int, count: int) -> int:
    """The bytes of `count` strings stored from `offset` (each a uint32 length, then its
    bytes); past the data as soon as they run out (a count read back may be anything)."""
    start = offset
    for _ in range(count):
        if offset >= len(data):
            return len(data) + 1 - start
        offset += 4 + int.from_bytes(data[offset : offset + 4], "little")
    return offset - start


@dataclass(frozen=True)
class SharedLayout:
    """Where every signature's weights go when shared."""

    shards: dict[str, bytes]  # shared path (relative to output_dir) -> its bytes
    sha256: dict[str, str]  # shared path -> the SHA-256 of its bytes (its name's source)
    manifests: dict[str, list[JsonObject]]  # signature -> weightsManifest, paths as above

    def files(self, paths: Iterable[str]) -> tuple[OutputFile, ...]:
        """The shards at `paths` as outputs describe their files."""
        return tuple(OutputFile(path, len(self.shards[path]), self.sha256[path]) for path in paths)


def lay_out(models: Mapping[str, Sequence[Weight]], shard_sizes: Mapping[str, int]) -> SharedLayout:
    """Weights grouped by the set of signatures using them, each group cut into shards of at
    most the smallest `weight_shard_size_bytes` among those signatures.

    A weight is its bytes; the n-th weight of a signature with the same bytes as an earlier one
    is its own weight (TensorFlow.js cuts each spec out of the bytes in order).
    """
    data: dict[tuple[str, int], bytes] = {}
    users: dict[tuple[str, int], set[str]] = {}
    specs: dict[str, dict[tuple[str, int], JsonObject]] = {}
    for signature, weights in models.items():
        seen: dict[str, int] = {}
        specs[signature] = {}
        for weight in weights:
            digest = hashlib.sha256(weight.data).hexdigest()
            key = (digest, seen.get(digest, 0))
            seen[digest] = key[1] + 1
            data[key] = weight.data
            users.setdefault(key, set()).add(signature)
            specs[signature][key] = weight.spec
    groups: dict[frozenset[str], list[tuple[str, int]]] = {}
    for key in sorted(users):
        groups.setdefault(frozenset(users[key]), []).append(key)
    shards: dict[str, bytes] = {}
    digests: dict[str, str] = {}
    manifests: dict[str, list[JsonObject]] = {signature: [] for signature in models}
    for group in sorted(groups, key=lambda g: (-len(g), sorted(g))):
        keys = groups[group]
        joined = b"".join(data[key] for key in keys)
        size = max(1, min(shard_sizes[signature] for signature in group))
        paths = []
        for start in range(0, len(joined), size):
            chunk = joined[start : start + size]
            sha256 = hashlib.sha256(chunk).hexdigest()
            path = f"{SHARED_WEIGHTS_DIR}/{_name(sha256)}"
            shards[path], digests[path] = chunk, sha256
            paths.append(path)
        for signature in sorted(group):
            group_specs = [specs[signature][key] for key in keys]
            manifests[signature].append({"paths": paths, "weights": group_specs})
    return SharedLayout(shards, digests, manifests)


def from_folder(folder: str, manifest: list[JsonObject]) -> list[JsonObject]:
    """A laid-out weightsManifest as the model.json in `folder` (relative to output_dir) lists
    it: TensorFlow.js resolves weight paths relative to model.json."""
    return [
        {**group, "paths": [posixpath.relpath(path, folder) for path in group["paths"]]}
        for group in manifest
    ]
