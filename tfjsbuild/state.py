"""The versioned state file of the last successful builds, and the build lock.

Only the parent process writes state. The file is JSON with sorted keys, written atomically and
only when its content changed.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from tfjsbuild.artifacts import OutputFile, file_sha256
from tfjsbuild.atomic import write_atomically
from tfjsbuild.errors import LockHeldError

STATE_VERSION = 1
STATE_FILE = "state.json"
LOCK_FILE = "lock"


@dataclass(frozen=True)
class RecordedFile:
    path: str
    size: int
    sha256: str
    mtime_ns: int


@dataclass(frozen=True)
class SignatureRecord:
    """What the last successful build of one signature wrote, and from what."""

    model: str
    signature: str
    output: str  # relative to the manifest's folder, POSIX separators
    fingerprint: str
    parts: dict[str, str]
    options: dict[str, Any]
    files: tuple[RecordedFile, ...]
    inputs: tuple[dict[str, Any], ...]
    outputs: tuple[dict[str, Any], ...]
    content_hash: str
    seconds: float
    details: dict[str, str] = field(default_factory=dict)
    # The TensorFlow.js parity check this output passed; None when built without verifying.
    verification: dict[str, Any] | None = None
    # What that check was run with (`SignatureFingerprint.verify`); None when not verified.
    # Compared apart from `fingerprint`: other settings re-verify, they do not reconvert.
    verified_with: dict[str, Any] | None = None

    @property
    def key(self) -> str:
        return f"{self.model}:{self.signature}"

    @property
    def bytes(self) -> int:
        return sum(f.size for f in self.files)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON types (lists, not tuples), so it compares equal to what was loaded."""
        data = asdict(self)
        data["files"] = [asdict(f) for f in self.files]
        data["inputs"] = list(self.inputs)
        data["outputs"] = list(self.outputs)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SignatureRecord:
        return cls(
            model=data["model"],
            signature=data["signature"],
            output=data["output"],
            fingerprint=data["fingerprint"],
            parts=dict(data["parts"]),
            options=dict(data["options"]),
            files=tuple(RecordedFile(**f) for f in data["files"]),
            inputs=tuple(data["inputs"]),
            outputs=tuple(data["outputs"]),
            content_hash=data["content_hash"],
            seconds=float(data["seconds"]),
            details=dict(data.get("details", {})),
            verification=data.get("verification"),
            verified_with=data.get("verified_with"),
        )


@dataclass
class BuildState:
    records: dict[str, SignatureRecord] = field(default_factory=dict)
    stat_cache: dict[str, list[Any]] = field(default_factory=dict)
    # source digest -> signature -> graph fingerprint: an unchanged model is not parsed again
    graph_cache: dict[str, dict[str, Any]] = field(default_factory=dict)

    # What the file held when loaded or last saved: an unchanged state is not serialised again.
    saved_payload: dict[str, Any] | None = field(default=None, compare=False, repr=False)

    def to_payload(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "signatures": {key: record.to_json() for key, record in sorted(self.records.items())},
            "stat_cache": self.stat_cache,
            "graph_cache": self.graph_cache,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_payload(), sort_keys=True, indent=1) + "\n"


def state_path(state_dir: Path) -> Path:
    return state_dir / STATE_FILE


def load_state(state_dir: Path) -> tuple[BuildState, str | None]:
    """The recorded state, or an empty one and a warning saying why everything rebuilds."""
    path = state_path(state_dir)
    if not path.exists():
        return BuildState(), None
    try:
        payload = json.loads(path.read_text("utf-8"))
        version = payload.get("version") if isinstance(payload, dict) else None
        if version != STATE_VERSION:
            return BuildState(), (
                f"{path} has state version {version!r}, this tfjs-build reads version "
                f"{STATE_VERSION}: rebuilding everything (it will be rewritten)"
            )
        records = {
            key: SignatureRecord.from_json(value) for key, value in payload["signatures"].items()
        }
        stat_cache = dict(payload.get("stat_cache", {}))
        graph_cache = dict(payload.get("graph_cache", {}))
        return BuildState(records, stat_cache, graph_cache, saved_payload=payload), None
    except (OSError, ValueError, KeyError, TypeError) as error:
        return BuildState(), (
            f"{path} is unreadable ({type(error).__name__}: {error}): rebuilding everything "
            "(it will be rewritten)"
        )


def save_state(state_dir: Path, state: BuildState) -> bool:
    """Write the state if it changed; True when written."""
    path = state_path(state_dir)
    payload = state.to_payload()
    if payload == state.saved_payload and path.exists():
        return False
    write_atomically(path, json.dumps(payload, sort_keys=True, indent=1) + "\n")
    state.saved_payload = payload
    return True


def record_files(directory: Path, files: tuple[OutputFile, ...]) -> tuple[RecordedFile, ...]:
    return tuple(
        RecordedFile(f.path, f.size, f.sha256, (directory / f.path).stat().st_mtime_ns)
        for f in files
    )


def output_change(root: Path, record: SignatureRecord) -> str | None:
    """Why the recorded output on disk no longer is what was built, or None if it still is."""
    directory = root / record.output
    if not directory.is_dir():
        return f"output missing: {record.output}"
    expected = {f.path for f in record.files}
    for recorded in record.files:
        path = directory / recorded.path
        try:
            stat = path.stat()
        except FileNotFoundError:
            return f"output missing: {record.output}/{recorded.path}"
        if stat.st_size != recorded.size:
            return f"output modified: {record.output}/{recorded.path}"
        if stat.st_mtime_ns != recorded.mtime_ns and file_sha256(path) != recorded.sha256:
            return f"output modified: {record.output}/{recorded.path}"
    for path in sorted(directory.rglob("*")):
        relative = path.relative_to(directory).as_posix()
        if path.is_file() and relative not in expected:
            return f"output modified: unexpected file {record.output}/{relative}"
    return None


class BuildLock:
    """An exclusive lock per manifest; the kernel releases it if the holder dies."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / LOCK_FILE
        self._fd: int | None = None

    def __enter__(self) -> BuildLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode("utf-8", "replace").strip() or "unknown"
            os.close(fd)
            raise LockHeldError(
                f"another build holds the lock {self.path}: {holder}. Wait for it to finish "
                "or stop it, then run again"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}".encode(), 0)
        self._fd = fd
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
