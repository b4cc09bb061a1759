"""What a signature's output depends on, as one digest with its parts kept for explanations.

Source content is hashed file by file, cheapest check first: a file whose size, mtime and inode
match the stat cache is not read again, so planning an unchanged 1 GB model costs a few stats.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from tfjsbuild.artifacts import file_sha256
from tfjsbuild.manifest import ConverterOptions, KerasSource, PythonSource, SavedModelSource, Source

# Bump when what goes into a fingerprint changes: every signature then rebuilds once.
SCHEME_VERSION = "1"
TOOL_DISTRIBUTIONS = ("tensorflow", "tensorflowjs", "tfjs-build")


@dataclass(frozen=True)
class SignatureFingerprint:
    digest: str
    parts: Mapping[str, str]  # part name -> value or digest, compared to explain a rebuild
    options: Mapping[str, Any]  # effective options, compared key by key for reasons
    # Not hashed, only compared to explain a change: the graph hash and each capture's digest
    # by name (names change between identical Keras exports; the digest must not).
    details: Mapping[str, str] = field(default_factory=dict)


def tool_versions() -> dict[str, str]:
    """Installed versions of the tools that shape the output, read without importing them."""
    versions = {}
    for name in TOOL_DISTRIBUTIONS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "missing"
    return versions


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class StatCache:
    """path -> (size, mtime_ns, inode, sha256); a file is rehashed only when its stat changed."""

    def __init__(self, entries: Mapping[str, list[Any]] | None = None) -> None:
        self._entries: dict[str, list[Any]] = dict(entries or {})
        self._used: dict[str, list[Any]] = {}
        self.hashed_bytes = 0

    def digest(self, path: Path) -> str:
        stat = path.stat()
        key = str(path)
        cached = self._entries.get(key)
        if cached is not None and cached[:3] == [stat.st_size, stat.st_mtime_ns, stat.st_ino]:
            self._used[key] = cached
            return str(cached[3])
        digest = file_sha256(path)
        self.hashed_bytes += stat.st_size
        entry = [stat.st_size, stat.st_mtime_ns, stat.st_ino, digest]
        self._entries[key] = entry
        self._used[key] = entry
        return digest

    def entries(self) -> dict[str, list[Any]]:
        """The entries used by this plan: stale paths drop out of the state."""
        return dict(sorted(self._used.items()))


def source_digest(
    source: Source, root: Path, stat_cache: StatCache, *, paranoid: bool = False
) -> str:
    """Content digest of a model source: every file, by relative path and content.

    A SavedModel's variable data shards are left out unless `paranoid`: `variables.index`
    holds a crc32c of every tensor, so any change to the data changes the index too.
    """
    if isinstance(source, SavedModelSource):
        skip = None if paranoid else "variables/variables.data-"
        return _path_digest(source.path, stat_cache, skip)
    if isinstance(source, KerasSource):
        return _path_digest(source.path, stat_cache)
    assert isinstance(source, PythonSource)
    files = sorted({p for pattern in source.inputs for p in root.glob(pattern) if p.is_file()})
    lines = [f"{p.relative_to(root).as_posix()}\0{stat_cache.digest(p)}" for p in files]
    return _sha256_text(f"python:{source.target}\n" + "\n".join(lines))


def _path_digest(path: Path, stat_cache: StatCache, skip_prefix: str | None = None) -> str:
    if path.is_file():
        return _sha256_text(f"file\n{stat_cache.digest(path)}")
    files = []
    for folder, _, names in os.walk(path):
        for name in names:
            files.append(Path(folder, name))
    lines = []
    for file in sorted(files):
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
) -> SignatureFingerprint:
    option_values = options.as_dict()
    parts = {
        "scheme": SCHEME_VERSION,
        "tools": ",".join(f"{name}={version}" for name, version in sorted(tools.items())),
        "source": source,
        "source_kind": source_kind,
        "signature": signature,
        "tags": ",".join(tags),
        "options": _sha256_text(canonical_json(option_values)),
        "output": output,
    }
    return SignatureFingerprint(
        digest=_sha256_text(canonical_json(parts)),
        parts=parts,
        options=option_values,
        details=dict(details or {}),
    )
