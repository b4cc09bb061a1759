"""One cache location and its files: `entries/<k[:2]>/<key>.json` and `blobs/<s[:2]>/<sha256>`.

Blobs are uploaded first under temporary names and moved into place; the entry's manifest is
published last, so a reader sees a complete entry or none. Every blob is checked against its
hash on restore: a corrupt or partial entry is a miss, never restored. A restore writes only
model.json and the shards it lists. A local folder is read and written without following links
below it (`nofollow`).

Locations are fsspec URLs (a local folder, `file://`, `s3://`, `gs://`, ...); credentials come
from the storage library's usual environment and configuration, never from the manifest. This
module moves bytes between a store and a folder; it never places an output or writes state.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import warnings
from pathlib import Path

from tfjsbuild.errors import UsageError
from tfjsbuild.files import nofollow
from tfjsbuild.files.artifacts import MODEL_JSON, OutputCheckError, OutputFile, shard_paths
from tfjsbuild.files.nofollow import UnsafePath
from tfjsbuild.files.readback import InvalidData
from tfjsbuild.stores.cache_entry import (
    ENTRY_MAX_BYTES,
    SIGNATURE_KEY_ENV,
    UNSIGNED,
    CacheEntry,
    SignatureRefused,
)

_ENTRY_NAME = re.compile(r"entries/([0-9a-f]{2})/\1[0-9a-f]{62}\.json")
_BLOB_NAME = re.compile(r"blobs/([0-9a-f]{2})/\1[0-9a-f]{62}")


class Store:
    """One cache location: `entries/<k[:2]>/<key>.json` and `blobs/<s[:2]>/<sha256>`.

    Everything read back is checked before use: an entry that is invalid, unsigned (when a
    signature key is set) or reached through a symbolic link is a miss with a warning.
    """

    def __init__(self, url: str, mode: str, label: str, signature_key: str | None = None) -> None:
        import fsspec
        from fsspec.implementations.local import LocalFileSystem

        self.url = url
        self.mode = mode
        self.label = label  # "local" or "remote", for plans and reports
        self.signature_key = signature_key
        self.unreachable: str | None = None  # set on the first failure that is not a miss
        self.bad_blobs: set[str] = set()  # found corrupt or missing: overwritten by `put`
        self._warned: set[str] = set()  # each refusal is told once per store
        try:
            self.fs, self.root = fsspec.core.url_to_fs(url)
        except (ImportError, ValueError) as error:  # e.g. s3:// without s3fs installed
            raise UsageError(
                f"{label} cache {url}: {error} (s3:// needs `pip install s3fs`, gs:// gcsfs)"
            ) from error
        self.root = self.root.rstrip("/") or "/"
        # A local folder is read and written without following links below it (nofollow).
        self.local_root = Path(self.root) if isinstance(self.fs, LocalFileSystem) else None

    @property
    def writable(self) -> bool:
        return self.mode == "rw"

    def get(self, key: str) -> CacheEntry | None:
        """The entry for `key`, checked; None on a miss. Read only (see `mark_used`)."""
        if self.unreachable is not None:
            return None
        relative = _entry_relative(key)
        try:
            text = self._read(relative, ENTRY_MAX_BYTES + 1)
        except FileNotFoundError:
            return None
        except UnsafePath as error:
            self._warn(f"entry {relative} is refused ({error}); a cache miss")
            return None
        except Exception as error:  # network, credentials: build without this cache, once
            self.unreachable = f"{type(error).__name__}: {error}"
            warnings.warn(
                f"{self.label} cache {self.url} is unreachable ({self.unreachable}); "
                "building without it",
                stacklevel=1,
            )
            return None
        try:
            entry = CacheEntry.from_json(key, text, self.signature_key)
        except InvalidData as error:
            at = f" at {error.where}" if error.where else ""
            detail = str(error).removeprefix(f"{error.where}: ")
            self._warn(f"entry {relative} is invalid{at}: {detail}; a cache miss")
            return None
        except SignatureRefused as refused:
            self._warn(
                f"refusing unsigned entries, as {SIGNATURE_KEY_ENV} is set; each is a cache miss"
                if refused.reason == UNSIGNED
                else f"refusing entries whose signature does not match {SIGNATURE_KEY_ENV} "
                "(signed with another key, or changed since); each is a cache miss"
            )
            return None
        return entry

    def mark_used(self, key: str) -> None:
        """Called on a restore, not on a lookup: a plan writes nothing, and a restore counts as
        use, for `cache prune` (least recently used first)."""
        if self.local_root is not None:
            with contextlib.suppress(OSError):
                nofollow.touch(self.local_root, _entry_relative(key))

    def _warn(self, message: str) -> None:
        """A refusal, once per store (one build may look up many entries of one kind)."""
        if message not in self._warned:
            self._warned.add(message)
            warnings.warn(f"{self.label} cache {self.url}: {message}", stacklevel=2)

    def fetch(self, entry: CacheEntry, destination: Path) -> str | None:
        """Write model.json and the files it references into `destination`; None, or why the
        entry is unusable. An entry listing any other file is unusable: a restore writes nothing
        a conversion would not have."""
        model_item = next(f for f in entry.files if f.path == MODEL_JSON)
        model_data, problem = self._blob(model_item)
        if problem is not None:
            return problem
        try:
            referenced = {MODEL_JSON, *shard_paths(json.loads(model_data), MODEL_JSON)}
        except (ValueError, RecursionError) as error:
            return f"its {MODEL_JSON} is not JSON ({error})"
        except OutputCheckError as error:
            return str(error)
        listed = {f.path for f in entry.files}
        unexpected = sorted(listed - referenced)
        if unexpected:
            named = ", ".join(repr(name) for name in unexpected)
            return f"it lists {named}, which {MODEL_JSON} does not reference"
        missing = sorted(referenced - listed)
        if missing:
            named = ", ".join(repr(name) for name in missing)
            return f"its {MODEL_JSON} references {named}, which the entry does not hold"
        for item in entry.files:
            data, problem = (model_data, None) if item is model_item else self._blob(item)
            if problem is not None:
                return problem
            target = destination / item.path
            target.parent.mkdir(parents=True, exist_ok=True)
            with target.open("xb") as handle:  # exclusive: never through anything already there
                handle.write(data)
        return None

    def _blob(self, item: OutputFile) -> tuple[bytes, str | None]:
        """A blob's bytes, checked against the entry's size and hash; or why it is unusable."""
        try:
            data = self._read(_blob_relative(item.sha256), item.size + 1)
        except UnsafePath as error:
            return b"", f"blob {item.sha256[:12]} of {item.path!r} is refused ({error})"
        except Exception as error:  # missing, or the store went away mid-restore
            self.bad_blobs.add(item.sha256)
            return b"", f"blob {item.sha256[:12]} of {item.path!r} is missing ({error})"
        if len(data) != item.size or hashlib.sha256(data).hexdigest() != item.sha256:
            self.bad_blobs.add(item.sha256)
            return b"", f"blob {item.sha256[:12]} of {item.path!r} is corrupt or truncated"
        return data, None

    def put(self, entry: CacheEntry, source: Path) -> None:
        """Blobs first (temporary name, then moved), the entry's manifest last."""
        for item in entry.files:
            blob = _blob_relative(item.sha256)
            if item.sha256 not in self.bad_blobs and self._has(blob, item.size):
                continue
            self._publish(blob, (source / item.path).read_bytes())
            self.bad_blobs.discard(item.sha256)
        self._publish(_entry_relative(entry.key), entry.to_json(self.signature_key).encode())

    def _read(self, relative: str, limit: int) -> bytes:
        """At most `limit` bytes of a file of the store (a bigger file is refused by its caller)."""
        if self.local_root is not None:
            return nofollow.read_file(self.local_root, relative, limit)
        path = f"{self.root}/{relative}"
        try:
            return bytes(self.fs.cat_file(path, start=0, end=limit))
        except OSError as error:
            # S3 answers a Range request on an empty object with 416 (EINVAL from s3fs).
            if error.errno == errno.EINVAL and self.fs.size(path) == 0:
                return b""
            raise

    def _has(self, blob: str, size: int) -> bool:
        """A blob already there, of the right size (a truncated upload is replaced)."""
        try:
            if self.local_root is not None:
                return nofollow.file_size(self.local_root, blob) == size
            return bool(self.fs.size(f"{self.root}/{blob}") == size)
        except FileNotFoundError:
            return False

    def _publish(self, relative: str, data: bytes) -> None:
        if self.local_root is not None:
            nofollow.write_file(self.local_root, relative, data)
            return
        path = f"{self.root}/{relative}"
        folder = path.rsplit("/", 1)[0]
        self.fs.makedirs(folder, exist_ok=True)
        temporary = f"{folder}/.tmp-{os.urandom(8).hex()}"
        self.fs.pipe_file(temporary, data)
        try:
            self.fs.mv(temporary, path)
        except Exception:
            self.fs.rm_file(temporary)
            raise

    def _remove(self, relative: str) -> None:
        if self.local_root is not None:
            nofollow.remove_file(self.local_root, relative)
        else:
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm_file(f"{self.root}/{relative}")

    def stats(self) -> dict[str, int]:
        entries = self._find("entries")
        blobs = self._find("blobs")
        return {
            "entries": len(entries),
            "blobs": len(blobs),
            "bytes": sum(size for _, size, _ in blobs) + sum(size for _, size, _ in entries),
        }

    def _find(self, kind: str) -> list[tuple[str, int, float]]:
        """(relative path, size, modification time) of every entry or blob.

        Only names this tool writes count; anything else in the folder (a link, a stray file)
        is neither counted nor ever deleted.
        """
        pattern = _ENTRY_NAME if kind == "entries" else _BLOB_NAME
        if self.local_root is not None:
            found, skipped = nofollow.list_files(self.local_root, kind)
            if skipped:
                self._warn(
                    f"ignoring {len(skipped)} symbolic link(s) or special file(s) under {kind}/ "
                    f"(e.g. {skipped[0]!r}): tfjs-build never writes one, nor follows or "
                    "deletes it"
                )
        else:
            try:
                listed = self.fs.find(f"{self.root}/{kind}", detail=True)
            except FileNotFoundError:
                listed = {}
            found = []
            for path, info in listed.items():
                modified = info.get("mtime") or info.get("LastModified") or info.get("created")
                if hasattr(modified, "timestamp"):
                    modified = modified.timestamp()
                relative = path.removeprefix(f"{self.root}/")
                found.append((relative, int(info.get("size", 0)), float(modified or 0)))
        return [item for item in found if pattern.fullmatch(item[0])]

    def prune(self, max_bytes: int) -> dict[str, int]:
        """Drop the least recently used entries until the cache fits, then unused blobs.

        An entry that is invalid references nothing and goes first.
        """
        referenced: dict[str, set[str]] = {}
        for relative, _, _ in self._find("entries"):
            key = relative.rsplit("/", 1)[-1].removesuffix(".json")
            try:
                entry = CacheEntry.from_json(key, self._read(relative, ENTRY_MAX_BYTES + 1))
                referenced[relative] = {f.sha256 for f in entry.files}
            except (OSError, InvalidData):
                referenced[relative] = set()
        entries = sorted(  # invalid ones first, then oldest first
            self._find("entries"), key=lambda e: (bool(referenced.get(e[0])), e[2])
        )
        blobs = {path.rsplit("/", 1)[-1]: size for path, size, _ in self._find("blobs")}
        total = sum(blobs.values()) + sum(size for _, size, _ in entries)
        removed = 0
        kept = list(entries)
        while kept and total > max_bytes:
            path, size, _ = kept.pop(0)
            self._remove(path)
            total -= size
            removed += 1
            still_used = set().union(*(referenced.get(p, set()) for p, _, _ in kept))
            for sha in referenced.get(path, set()) - still_used:
                if sha in blobs:
                    self._remove(_blob_relative(sha))
                    total -= blobs.pop(sha)
        still_used = set().union(*(referenced.get(p, set()) for p, _, _ in kept))
        for sha in [sha for sha in blobs if sha not in still_used]:  # left by interrupted puts
            self._remove(_blob_relative(sha))
            total -= blobs.pop(sha)
        return {"removed_entries": removed, "entries": len(kept), "bytes": total}


def _entry_relative(key: str) -> str:
    return f"entries/{key[:2]}/{key}.json"


def _blob_relative(sha256: str) -> str:
    return f"blobs/{sha256[:2]}/{sha256}"
