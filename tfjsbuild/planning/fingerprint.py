"""What a signature's output depends on, as one digest with its parts kept for explanations.

Source content is hashed file by file, cheapest check first: a file whose size, mtime and inode
match the stat cache is not read again, so planning an unchanged 1 GB model costs a few stats.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from tfjsbuild.files.artifacts import file_sha256
from tfjsbuild.manifest.load import (
    ConverterOptions,
    KerasSource,
    PythonSource,
    SavedModelSource,
    Source,
)
from tfjsbuild.sources.saved_model_files import SavedModelError

# Bump when what goes into a fingerprint changes: every signature then rebuilds once.
# 2: verification settings left the digest (they are compared on their own: `verify`).
SCHEME_VERSION = "2"
TOOL_DISTRIBUTIONS = ("tensorflow", "tensorflowjs", "tfjs-build")
# Keras files are read, and Python sources usually built, by Keras 3 or tf.keras.
KERAS_DISTRIBUTIONS = ("keras", "tf-keras")


@dataclass(frozen=True)
class FingerprintParts(Mapping[str, str]):
    """The named values a digest is made of (each a value or a digest of one).

    A mapping too, by part name: a record read back from the state keeps its parts as plain JSON
    (of whatever scheme wrote it), and reasons compare the two name by name.
    """

    scheme: str
    tools: str  # "name=version,..." sorted by name
    source: str
    source_kind: str
    signature: str
    tags: str
    options: str
    output: str
    # Only for formats other than graph_model, so graph model fingerprints stay as they were.
    format: str | None = None

    def as_dict(self) -> dict[str, str]:
        parts = {
            "scheme": self.scheme,
            "tools": self.tools,
            "source": self.source,
            "source_kind": self.source_kind,
            "signature": self.signature,
            "tags": self.tags,
            "options": self.options,
            "output": self.output,
        }
        if self.format is not None:
            parts["format"] = self.format
        return parts

    def __getitem__(self, name: str) -> str:
        return self.as_dict()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.as_dict())

    def __len__(self) -> int:
        return len(self.as_dict())


@dataclass(frozen=True)
class SignatureFingerprint:
    """What the output's bytes depend on (`digest`), and apart from it what its verification does.

    Verification settings are not in the digest: changing them re-verifies the existing output
    instead of converting it again, and an output built without verifying stays up to date.
    """

    digest: str
    parts: FingerprintParts  # compared to a record's parts to explain a rebuild
    options: Mapping[str, Any]  # effective converter options, compared key by key for reasons
    # Not hashed, only compared to explain a change: the graph hash and each capture's digest
    # by name (names change between identical Keras exports; the digest must not).
    details: Mapping[str, str] = field(default_factory=dict)
    # What a verification depends on (settings, sample inputs' digest, TF.js version); empty
    # when verification is off for this signature. A record keeps the one it was verified with.
    verify: Mapping[str, Any] = field(default_factory=dict)


def tool_versions(source_kind: str = "saved_model") -> dict[str, str]:
    """Installed versions of the tools that shape the output, read without importing them."""
    names: tuple[str, ...] = TOOL_DISTRIBUTIONS
    if source_kind in ("keras", "python"):
        names += KERAS_DISTRIBUTIONS
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "missing"
    return versions


def canonical_json(value: Any, *, allow_nan: bool = False) -> str:
    """Sorted, compact JSON. A NaN or infinity raises: JSON has none (a written file with one
    fails `JSON.parse`), so one reaching here is a bug to fix where it came from."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=allow_nan)


def _sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class StatCache:
    """path -> (size, mtime_ns, inode, sha256); a file is rehashed only when its stat changed."""

    def __init__(self, entries: Mapping[str, list[Any]] | None = None) -> None:
        self._entries: dict[str, list[Any]] = dict(entries or {})
        self._used: dict[str, list[Any]] = {}
        self.hashed_bytes = 0

    def digest(self, path: Path) -> str:
        info = path.stat()
        key = str(path)
        cached = self._entries.get(key)
        if cached is not None and cached[:3] == [info.st_size, info.st_mtime_ns, info.st_ino]:
            self._used[key] = cached
            return str(cached[3])
        digest = file_sha256(path)
        self.hashed_bytes += info.st_size
        entry = [info.st_size, info.st_mtime_ns, info.st_ino, digest]
        self._entries[key] = entry
        self._used[key] = entry
        return digest

    def entries(self) -> dict[str, list[Any]]:
        """The entries used by this plan: stale paths drop out of the state."""
        return dict(sorted(self._used.items()))


def source_digest(source: Source, stat_cache: StatCache, *, paranoid: bool = False) -> str:
    """Content digest of a model source: every file, by relative path and content.

    A SavedModel's variable data shards are left out unless `paranoid`: `variables.index`
    holds a crc32c of every tensor, so any change to the data changes the index too.
    """
    if isinstance(source, SavedModelSource):
        skip = None if paranoid else "variables/variables.data-"
        return _path_digest(source.path, stat_cache, skip)
    if isinstance(source, KerasSource):
        if source.container == "keras_v3" and not paranoid:
            archive = keras_archive_digest(source.path)
            if archive is not None:
                return archive
        skip = None if paranoid else "variables/variables.data-"
        return _path_digest(source.path, stat_cache, skip)
    assert isinstance(source, PythonSource)
    lines = [
        f"{p.relative_to(source.root).as_posix()}\0{stat_cache.digest(p)}"
        for p in python_input_files(source)
    ]
    return _sha256_text(f"python:{source.target}\n" + "\n".join(lines))


def keras_archive_digest(path: Path) -> str | None:
    """A `.keras` file by what it holds, not its bytes: saving the same model again is no change.

    Keras 3 stamps every save: `date_saved` in metadata.json, Python object ids as
    `shared_object_id` in config.json, the zip time of each member. Other members are taken by
    name, size and the CRC-32 the archive stores (as a SavedModel's variables by the index's
    crc32c; `--paranoid` hashes the bytes). None if this is not a zip archive.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            lines = []
            for info in sorted(archive.infolist(), key=lambda i: i.filename):
                if info.filename == "metadata.json":
                    metadata = json.loads(archive.read(info))
                    metadata.pop("date_saved", None)
                    # Only hashed, never written: a model's own NaN must not fail the build.
                    lines.append(f"{info.filename}\0{canonical_json(metadata, allow_nan=True)}")
                elif info.filename == "config.json":
                    config = _renumber_shared_objects(json.loads(archive.read(info)), {})
                    lines.append(f"{info.filename}\0{canonical_json(config, allow_nan=True)}")
                else:
                    lines.append(f"{info.filename}\0{info.file_size}\0{info.CRC:08x}")
    except (OSError, ValueError, zipfile.BadZipFile):
        return None
    return _sha256_text("keras archive\n" + "\n".join(lines))


def _renumber_shared_objects(value: Any, ids: dict[Any, int]) -> Any:
    """`shared_object_id`s numbered by first appearance instead of by Python's `id()`."""
    if isinstance(value, dict):
        return {
            key: ids.setdefault(item, len(ids))
            if key == "shared_object_id"
            else _renumber_shared_objects(item, ids)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_renumber_shared_objects(item, ids) for item in value]
    return value


def python_input_files(source: PythonSource) -> list[Path]:
    """The files a Python source's output depends on: its `inputs` globs, or its module file."""
    if not source.inputs:
        return [f for f in source.module_files() if f.is_file()][:1]
    found = {p for pattern in source.inputs for p in source.root.glob(pattern) if p.is_file()}
    return sorted(found)


def python_source_problem(source: PythonSource) -> str | None:
    """Why a Python source cannot be fingerprinted, before any of its code runs."""
    if not source.inputs:
        if any(f.is_file() for f in source.module_files()):
            return None
        looked = " and ".join(f.relative_to(source.root).as_posix() for f in source.module_files())
        return (
            f"module '{source.module}' is not in {source.root} (looked for {looked}); put it "
            "there, or list the files the model is built from in `inputs:`"
        )
    for pattern in source.inputs:
        if not any(p.is_file() for p in source.root.glob(pattern)):
            return f"inputs pattern '{pattern}' matches no files in {source.root}"
    return None


def _check_regular(file: Path) -> None:
    """A model folder's file that cannot be hashed is the model's problem, said where it is: a
    dangling link, or a fifo or device (whose read would hang or never end)."""
    try:
        mode = file.stat().st_mode
    except FileNotFoundError:
        raise SavedModelError(
            f"{file} is a broken symbolic link; remove it or restore what it points to"
        ) from None
    if not stat.S_ISREG(mode):
        raise SavedModelError(
            f"{file} is not a regular file (a fifo, socket or device); a model folder holds "
            "only files: remove it"
        )


def _path_digest(path: Path, stat_cache: StatCache, skip_prefix: str | None = None) -> str:
    if path.is_file():
        return _sha256_text(f"file\n{stat_cache.digest(path)}")
    files = []
    for folder, _, names in os.walk(path):
        for name in names:
            files.append(Path(folder, name))
    lines = []
    for file in sorted(files):
        _check_regular(file)
        relative = file.relative_to(path).as_posix()
        if skip_prefix is not None and relative.startswith(skip_prefix):
            lines.append(f"{relative}\0{file.stat().st_size}")
        else:
            lines.append(f"{relative}\0{stat_cache.digest(file)}")
    return _sha256_text("folder\n" + "\n".join(lines))


def fingerprint_signature(
    *,
    source: str,
    source_kind: str,
    signature: str,
    tags: tuple[str, ...],
    options: ConverterOptions,
    output: str,
    tools: Mapping[str, str],
    details: Mapping[str, str] | None = None,
    format: str = "graph_model",
    verify: Mapping[str, Any] | None = None,
) -> SignatureFingerprint:
    """`verify`: what a verification depends on (settings, input digest, runtime), or None.

    It is kept beside the digest, not in it: the output does not depend on it.
    """
    parts = FingerprintParts(
        scheme=SCHEME_VERSION,
        tools=",".join(f"{name}={version}" for name, version in sorted(tools.items())),
        source=source,
        source_kind=source_kind,
        signature=signature,
        tags=",".join(tags),
        options=_sha256_text(canonical_json(options.as_dict())),
        output=output,
        # Only then, so graph model fingerprints stay as they were.
        format=None if format == "graph_model" else format,
    )
    return SignatureFingerprint(
        digest=_sha256_text(canonical_json(parts.as_dict())),
        parts=parts,
        options=options.as_dict(),
        details=dict(details or {}),
        verify=dict(verify or {}),
    )
