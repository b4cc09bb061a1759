"""A content-addressed cache of built signatures, shared by checkouts, machines and CI.

An entry is keyed by everything the output depends on (the signature fingerprint without the
output path) and holds the output's files as blobs named by their sha256, plus the
verification result and what it was run with: verification is not in the key, an entry
serves a verifying build only if it carries that very verification (`serves`). Blobs are uploaded first under temporary names and moved into place; the
entry's manifest is published last, so a reader sees a complete entry or none. Every blob is
checked against its hash on restore: a corrupt or partial entry is a miss, never restored.

Locations are fsspec URLs (a local folder, `file://`, `s3://`, `gs://`, ...); credentials come
from the storage library's usual environment and configuration, never from the manifest.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tfjsbuild.artifacts import OutputFile
from tfjsbuild.errors import UsageError
from tfjsbuild.fingerprint import SignatureFingerprint, canonical_json
from tfjsbuild.manifest import Manifest

CACHE_VERSION = 1
CACHE_ENV = "TFJS_BUILD_CACHE"
REMOTE_CACHE_ENV = "TFJS_BUILD_REMOTE_CACHE"
MODES = ("rw", "r", "off")


def cache_key(fingerprint: SignatureFingerprint) -> str:
    """Everything that shapes the output (graph, weights, options, versions), not where it goes:
    two checkouts in different folders share entries. Verification settings are not in it (they
    do not shape the output); the entry says which verification it carries."""
    parts = {name: value for name, value in fingerprint.parts.items() if name != "output"}
    return hashlib.sha256(canonical_json({"cache": CACHE_VERSION, **parts}).encode()).hexdigest()


@dataclass(frozen=True)
class CacheEntry:
    key: str
    files: tuple[OutputFile, ...]
    inputs: tuple[dict[str, Any], ...]
    outputs: tuple[dict[str, Any], ...]
    verification: dict[str, Any] | None
    seconds: float  # what the original conversion took: what a restore saves
    # What `verification` was run with (`SignatureFingerprint.verify`); None: not verified.
    verified_with: dict[str, Any] | None = None

    def to_json(self) -> str:
        return canonical_json(
            {
                "version": CACHE_VERSION,
                "key": self.key,
                "files": [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in self.files],
                "inputs": list(self.inputs),
                "outputs": list(self.outputs),
                "verification": self.verification,
                "verified_with": self.verified_with,
                "seconds": self.seconds,
            }
        )

    @classmethod
    def from_json(cls, key: str, text: str | bytes) -> CacheEntry | None:
        try:
            data = json.loads(text)
            if data.get("version") != CACHE_VERSION or data.get("key") != key:
                return None
            files = tuple(
                OutputFile(str(f["path"]), int(f["size"]), str(f["sha256"])) for f in data["files"]
            )
            if any(f.path.startswith("/") or ".." in f.path.split("/") for f in files):
                return None
            verified_with = data.get("verified_with")
            if verified_with is not None and not isinstance(verified_with, dict):
                return None
            return cls(
                key,
                files,
                tuple(data["inputs"]),
                tuple(data["outputs"]),
                data.get("verification"),
                float(data.get("seconds", 0.0)),
                verified_with,
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            return None


class Store:
    """One cache location: `entries/<k[:2]>/<key>.json` and `blobs/<s[:2]>/<sha256>`."""

    def __init__(self, url: str, mode: str, label: str) -> None:
        import fsspec

        self.url = url
        self.mode = mode
        self.label = label  # "local" or "remote", for plans and reports
        self.unreachable: str | None = None  # set on the first failure that is not a miss
        self.bad_blobs: set[str] = set()  # found corrupt or missing: overwritten by `put`
        try:
            self.fs, self.root = fsspec.core.url_to_fs(url)
        except (ImportError, ValueError) as error:  # e.g. s3:// without s3fs installed
            raise UsageError(
                f"{label} cache {url}: {error} (s3:// needs `pip install s3fs`, gs:// gcsfs)"
            ) from error
        self.root = self.root.rstrip("/")

    @property
    def writable(self) -> bool:
        return self.mode == "rw"

    def _entry_path(self, key: str) -> str:
        return f"{self.root}/entries/{key[:2]}/{key}.json"

    def _blob_path(self, sha256: str) -> str:
        return f"{self.root}/blobs/{sha256[:2]}/{sha256}"

    def get(self, key: str) -> CacheEntry | None:
        if self.unreachable is not None:
            return None
        try:
            text = self.fs.cat_file(self._entry_path(key))
        except FileNotFoundError:
            return None
        except Exception as error:  # network, credentials: build without this cache, once
            self.unreachable = f"{type(error).__name__}: {error}"
            warnings.warn(
                f"{self.label} cache {self.url} is unreachable ({self.unreachable}); "
                "building without it",
                stacklevel=1,
            )
            return None
        entry = CacheEntry.from_json(key, text)
        if entry is not None and self.label == "local":
            with contextlib.suppress(OSError):  # a restore counts as use, for `cache prune`
                os.utime(self._entry_path(key))
        return entry

    def fetch(self, entry: CacheEntry, destination: Path) -> str | None:
        """Write the entry's files into `destination`; None, or why the entry is unusable."""
        for item in entry.files:
            try:
                data = self.fs.cat_file(self._blob_path(item.sha256))
            except Exception as error:  # missing, or the store went away mid-restore
                self.bad_blobs.add(item.sha256)
                return f"blob {item.sha256[:12]} of {item.path} is missing ({error})"
            if len(data) != item.size or hashlib.sha256(data).hexdigest() != item.sha256:
                self.bad_blobs.add(item.sha256)
                return f"blob {item.sha256[:12]} of {item.path} is corrupt or truncated"
            target = destination / item.path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        return None

    def put(self, entry: CacheEntry, source: Path) -> None:
        """Blobs first (temporary name, then moved), the entry's manifest last."""
        for item in entry.files:
            blob = self._blob_path(item.sha256)
            if item.sha256 not in self.bad_blobs and self._has(blob, item.size):
                continue
            self._publish(blob, (source / item.path).read_bytes())
            self.bad_blobs.discard(item.sha256)
        self._publish(self._entry_path(entry.key), entry.to_json().encode())

    def _has(self, blob: str, size: int) -> bool:
        """A blob already there, of the right size (a truncated upload is replaced)."""
        try:
            return bool(self.fs.size(blob) == size)
        except FileNotFoundError:
            return False

    def _publish(self, path: str, data: bytes) -> None:
        folder = path.rsplit("/", 1)[0]
        self.fs.makedirs(folder, exist_ok=True)
        temporary = f"{folder}/.tmp-{os.urandom(8).hex()}"
        self.fs.pipe_file(temporary, data)
        try:
            self.fs.mv(temporary, path)
        except Exception:
            self.fs.rm_file(temporary)
            raise

    def stats(self) -> dict[str, int]:
        entries = self._find("entries")
        blobs = self._find("blobs")
        return {
            "entries": len(entries),
            "blobs": len(blobs),
            "bytes": sum(size for _, size, _ in blobs) + sum(size for _, size, _ in entries),
        }

    def _find(self, kind: str) -> list[tuple[str, int, float]]:
        """(path, size, modification time) of every entry or blob."""
        try:
            found = self.fs.find(f"{self.root}/{kind}", detail=True)
        except FileNotFoundError:
            return []
        described = []
        for path, info in found.items():
            if path.rsplit("/", 1)[-1].startswith(".tmp-"):
                continue
            modified = info.get("mtime") or info.get("LastModified") or info.get("created") or 0
            if hasattr(modified, "timestamp"):
                modified = modified.timestamp()
            described.append((path, int(info.get("size", 0)), float(modified)))
        return described

    def prune(self, max_bytes: int) -> dict[str, int]:
        """Drop the least recently used entries until the cache fits, then unused blobs."""
        entries = sorted(self._find("entries"), key=lambda e: e[2])  # oldest first
        referenced: dict[str, set[str]] = {}
        for path, _, _ in entries:
            key = path.rsplit("/", 1)[-1].removesuffix(".json")
            entry = CacheEntry.from_json(key, self.fs.cat_file(path))
            referenced[path] = {f.sha256 for f in entry.files} if entry else set()
        blobs = {path.rsplit("/", 1)[-1]: size for path, size, _ in self._find("blobs")}
        total = sum(blobs.values()) + sum(size for _, size, _ in entries)
        removed = 0
        kept = list(entries)
        while kept and total > max_bytes:
            path, size, _ = kept.pop(0)
            self.fs.rm_file(path)
            total -= size
            removed += 1
            still_used = set().union(*(referenced[p] for p, _, _ in kept)) if kept else set()
            for sha in referenced[path] - still_used:
                if sha in blobs:
                    self.fs.rm_file(self._blob_path(sha))
                    total -= blobs.pop(sha)
        still_used = set().union(*(referenced[p] for p, _, _ in kept)) if kept else set()
        for sha in [sha for sha in blobs if sha not in still_used]:  # left by interrupted puts
            self.fs.rm_file(self._blob_path(sha))
            total -= blobs.pop(sha)
        return {"removed_entries": removed, "entries": len(kept), "bytes": total}


@dataclass(frozen=True)
class CacheConfig:
    """Where the cache is and how it may be used, after manifest, environment and flags."""

    local: str | None
    local_mode: str
    remote: str | None
    remote_mode: str

    def stores(self) -> list[Store]:
        found = []
        if self.local is not None and self.local_mode != "off":
            found.append(Store(self.local, self.local_mode, "local"))
        if self.remote is not None and self.remote_mode != "off":
            found.append(Store(self.remote, self.remote_mode, "remote"))
        return found


def resolve_config(
    manifest: Manifest, flag: str | None = None, environ: Mapping[str, str] = os.environ
) -> CacheConfig:
    """Manifest `cache:` < environment < `--cache` flag (`local:rw,remote:r`, `off`)."""
    settings = manifest.cache
    local = str(settings.dir or manifest.state_dir / "cache")
    remote = settings.remote
    local_mode = remote_mode = settings.mode
    if environ.get(CACHE_ENV):
        local = environ[CACHE_ENV]
    if environ.get(REMOTE_CACHE_ENV):
        remote = environ[REMOTE_CACHE_ENV]
    if flag:
        local_mode, remote_mode = _parse_flag(flag, local_mode, remote_mode)
    return CacheConfig(local, local_mode, remote, remote_mode)


def _parse_flag(flag: str, local_mode: str, remote_mode: str) -> tuple[str, str]:
    if flag == "off":
        return "off", "off"
    modes = {"local": local_mode, "remote": remote_mode}
    for part in flag.split(","):
        where, _, mode = part.strip().partition(":")
        if where not in modes or mode not in MODES:
            raise UsageError(
                f"--cache {flag}: expected comma-separated local:MODE and remote:MODE with "
                f"MODE one of {', '.join(MODES)} (e.g. local:rw,remote:r), or off"
            )
        modes[where] = mode
    return modes["local"], modes["remote"]


def serves(entry: CacheEntry, verification: Mapping[str, Any]) -> bool:
    """Whether a restore of `entry` is the build wanted: any entry when no verification is
    (`verification` empty), else only one that passed that very verification."""
    if not verification:
        return True
    return (
        isinstance(entry.verification, dict)
        and entry.verification.get("passed") is True
        and entry.verified_with == dict(verification)
    )


def first_entry(
    stores: Iterable[Store], key: str, verification: Mapping[str, Any] | None = None
) -> tuple[Store, CacheEntry] | None:
    """The first store's entry for `key` that serves `verification` (see `serves`)."""
    for store in stores:
        entry = store.get(key)
        if entry is not None and serves(entry, verification or {}):
            return store, entry
    return None
