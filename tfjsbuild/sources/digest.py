"""Content digests of source files, cheapest check first.

A file whose size, mtime and inode match the stat cache is not read again, so planning an
unchanged 1 GB model costs a few stats. Nothing here knows what kind of source it hashes (the
kinds in this package decide which files count) or imports TensorFlow.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tfjsbuild.files.artifacts import file_sha256
from tfjsbuild.sources.saved_model_files import SavedModelError


def canonical_json(value: Any, *, allow_nan: bool = False) -> str:
    """Sorted, compact JSON. A NaN or infinity raises: JSON has none (a written file with one
    fails `JSON.parse`), so one reaching here is a bug to fix where it came from."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=allow_nan)


def sha256_text(text: str) -> str:
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


def path_digest(path: Path, stat_cache: StatCache, skip_prefix: str | None = None) -> str:
    """A file by its content, or a folder by every file's relative path and content.

    Files under `skip_prefix` count by size only (a SavedModel's data shards, whose crc32c
    the index already holds).
    """
    if path.is_file():
        return sha256_text(f"file\n{stat_cache.digest(path)}")
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
    return sha256_text("folder\n" + "\n".join(lines))
