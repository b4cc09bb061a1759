"""A content-addressed cache of built signatures, shared by checkouts, machines and CI.

An entry is keyed by everything the output depends on (the signature fingerprint without the
output path) and holds the output's files as blobs named by their sha256, plus the
verification result and what it was run with: verification is not in the key, an entry
serves a verifying build only if it carries that very verification (`serves`). Blobs are
uploaded first under temporary names and moved into place; the entry's manifest is published
last, so a reader sees a complete entry or none. Every blob is checked against its hash on
restore: a corrupt or partial entry is a miss, never restored.

Nothing read back is trusted (a cache may be shared, restored or tampered with): an entry is
size-capped and checked like the state (`readback`) before use, may be signed with a shared key
(`TFJS_BUILD_CACHE_SIGNATURE_KEY`), and a restore writes only model.json and the shards it
lists. A local folder is read and written without following links below it (`nofollow`).

Locations are fsspec URLs (a local folder, `file://`, `s3://`, `gs://`, ...); credentials come
from the storage library's usual environment and configuration, never from the manifest.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import hmac
import json
import os
import re
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from tfjsbuild.errors import UsageError
from tfjsbuild.files import nofollow, readback
from tfjsbuild.files.artifacts import MODEL_JSON, OutputCheckError, OutputFile, shard_paths
from tfjsbuild.files.nofollow import UnsafePath
from tfjsbuild.files.readback import InvalidData
from tfjsbuild.manifest.load import Manifest
from tfjsbuild.planning.fingerprint import SignatureFingerprint, canonical_json

CACHE_VERSION = 1
CACHE_ENV = "TFJS_BUILD_CACHE"
REMOTE_CACHE_ENV = "TFJS_BUILD_REMOTE_CACHE"
SIGNATURE_KEY_ENV = "TFJS_BUILD_CACHE_SIGNATURE_KEY"
MODES = ("rw", "r", "off")
ENTRY_MAX_BYTES = 1 << 20  # an entry is a few KB; bigger is refused before it is parsed
_HEX64 = re.compile(r"[0-9a-f]{64}")
_ENTRY_NAME = re.compile(r"entries/([0-9a-f]{2})/\1[0-9a-f]{62}\.json")
_BLOB_NAME = re.compile(r"blobs/([0-9a-f]{2})/\1[0-9a-f]{62}")


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

    def to_json(self, signature_key: str | None = None) -> str:
        data: dict[str, Any] = {
            "version": CACHE_VERSION,
            "key": self.key,
            "files": [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in self.files],
            "inputs": list(self.inputs),
            "outputs": list(self.outputs),
            "verification": self.verification,
            "verified_with": self.verified_with,
            "seconds": self.seconds,
        }
        if signature_key is not None:
            # Over all of the above: a changed verification or `verified_with` is a mismatch.
            data["signature"] = sign(data, signature_key)
        return canonical_json(data)

    @classmethod
    def from_json(cls, key: str, text: str | bytes, signature_key: str | None = None) -> CacheEntry:
        """Parse and check an entry read back from a store.

        Raises InvalidData naming the key path at fault, or SignatureRefused when a signature
        key is set and the entry is unsigned or its signature does not match.
        """
        if len(text) > ENTRY_MAX_BYTES:
            raise InvalidData("", f"larger than {ENTRY_MAX_BYTES} bytes (an entry is a few KB)")
        data = readback.as_dict(readback.parse_json(text), "")
        signature = data.pop("signature", None)
        if signature_key is not None:
            # Checked before anything else is looked at: an entry not written with the key is
            # not read at all.
            if signature is None:
                raise SignatureRefused(UNSIGNED)
            try:
                expected = sign(data, signature_key)
            except (ValueError, RecursionError) as error:
                raise InvalidData("", f"cannot be signed ({error})") from error
            if not (
                isinstance(signature, str)
                and _HEX64.fullmatch(signature)
                and hmac.compare_digest(signature, expected)
            ):
                raise SignatureRefused(MISMATCHED)
        if data.get("version") != CACHE_VERSION:
            raise InvalidData("version", f"expected {CACHE_VERSION}, got {data.get('version')!r}")
        if data.get("key") != key:
            raise InvalidData(
                "key", f"expected {key} (the entry's own key), got {data.get('key')!r:.80}"
            )
        verification = readback.verification(data.get("verification"), "verification")
        verified_with = readback.verified_with(data.get("verified_with"), "verified_with")
        _check_promise(verification, verified_with)
        return cls(
            key,
            _entry_files(data.get("files")),
            readback.tensor_specs(data.get("inputs"), "inputs"),
            readback.tensor_specs(data.get("outputs"), "outputs"),
            verification,
            readback.as_float(data.get("seconds", 0.0), "seconds"),
            verified_with,
        )


def _check_promise(
    verification: Mapping[str, Any] | None, verified_with: Mapping[str, Any] | None
) -> None:
    """An entry carries the verification it promises: `verified_with` (which `serves` matches
    against what a build wants) comes with a verification, and that verification passed (this
    tool stores no other). One without `verified_with` promises nothing and serves only builds
    that verify nothing."""
    if verification is None:
        if verified_with is not None:
            raise InvalidData("verified_with", "is set, but the entry carries no verification")
        return
    if not verification["passed"]:
        raise InvalidData(
            "verification.passed", "is false: only outputs whose verification passed are stored"
        )


UNSIGNED = "unsigned"
MISMATCHED = "mismatched"


class SignatureRefused(Exception):
    """An entry refused because a signature key is set: UNSIGNED or MISMATCHED."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def sign(data: Mapping[str, Any], signature_key: str) -> str:
    """HMAC-SHA256 of an entry's canonical JSON (without its signature). The entry lists every
    file's sha256, so the signature covers the blobs too."""
    message = canonical_json(dict(data)).encode("utf-8")
    return hmac.new(signature_key.encode("utf-8"), message, hashlib.sha256).hexdigest()


def _entry_files(value: Any) -> tuple[OutputFile, ...]:
    files = []
    seen: set[str] = set()
    for index, item in enumerate(readback.as_list(value, "files")):
        at = f"files[{index}]"
        data = readback.as_dict(item, at)
        path = readback.safe_relative_path(data.get("path"), f"{at}.path")
        if path in seen:
            raise InvalidData(f"{at}.path", f"{path!r} is listed twice")
        seen.add(path)
        files.append(
            OutputFile(
                path,
                readback.as_int(data.get("size"), f"{at}.size"),
                readback.as_sha256(data.get("sha256"), f"{at}.sha256"),
            )
        )
    if MODEL_JSON not in seen:
        raise InvalidData("files", f"lists no {MODEL_JSON}")
    return tuple(files)


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
        """A refusal, once per store (a plan and its build look an entry up twice)."""
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


@dataclass(frozen=True)
class CacheConfig:
    """Where the cache is and how it may be used, after manifest, environment and flags."""

    local: str | None
    local_mode: str
    remote: str | None
    remote_mode: str
    # TFJS_BUILD_CACHE_SIGNATURE_KEY: entries are signed with it and unsigned ones refused.
    signature_key: str | None = field(default=None, repr=False)

    def stores(self) -> list[Store]:
        found = []
        if self.local is not None and self.local_mode != "off":
            found.append(Store(self.local, self.local_mode, "local", self.signature_key))
        if self.remote is not None and self.remote_mode != "off":
            found.append(Store(self.remote, self.remote_mode, "remote", self.signature_key))
        return found


def resolve_config(
    manifest: Manifest, flag: str | None = None, environ: Mapping[str, str] = os.environ
) -> CacheConfig:
    """Manifest `cache:` < environment < `--cache` flag (`local:rw,remote:r`, `off`)."""
    settings = manifest.cache
    local = str(settings.dir or manifest.tool_dir / "cache")  # shared by the folder's manifests
    remote = settings.remote
    local_mode = remote_mode = settings.mode
    if environ.get(CACHE_ENV):
        local = environ[CACHE_ENV]
    if environ.get(REMOTE_CACHE_ENV):
        remote = environ[REMOTE_CACHE_ENV]
    if flag:
        local_mode, remote_mode = _parse_flag(flag, local_mode, remote_mode)
    signature_key = environ.get(SIGNATURE_KEY_ENV) or None
    return CacheConfig(local, local_mode, remote, remote_mode, signature_key)


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


class CacheHit(NamedTuple):
    """An entry a plan found, and the store it came from: the build restores this one."""

    store: Store
    entry: CacheEntry


def first_entry(
    stores: Iterable[Store], key: str, verification: Mapping[str, Any] | None = None
) -> CacheHit | None:
    """The first store's entry for `key` that serves `verification` (see `serves`)."""
    for store in stores:
        entry = store.get(key)
        if entry is not None and serves(entry, verification or {}):
            return CacheHit(store, entry)
    return None
