"""The versioned state file of the last successful builds (the build lock is `lock`'s).

Only the parent process writes state. The file is JSON with sorted keys, written atomically and
only when its content changed. It is read back untrusted (it may be restored from another
machine's CI cache, or edited): every record is checked before use, and one that does not have
the shape this tool writes, or whose output is not inside output_dir, is dropped with a warning.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from tfjsbuild.errors import BuildError
from tfjsbuild.files.artifacts import (
    OutputFile,
    TensorSpec,
    file_sha256,
    tensor_specs_from_json,
    tensor_specs_json,
)
from tfjsbuild.files.atomic import write_atomically
from tfjsbuild.files.filesystem import refusals_reported
from tfjsbuild.files.json_types import JsonObject
from tfjsbuild.files.readback import (
    InvalidData,
    as_dict,
    as_float,
    as_int,
    as_list,
    as_sha256,
    as_str,
    as_str_dict,
    parse_json,
    safe_relative_path,
)
from tfjsbuild.manifest.types import STATE_ROOT
from tfjsbuild.sources.base import GraphCacheEntry
from tfjsbuild.stores.build_history import PreviousBuild, as_time, error_of
from tfjsbuild.stores.recorded_options import RecordedOptions
from tfjsbuild.verify import quantization as verify_quantization
from tfjsbuild.verify import record as verify_record
from tfjsbuild.verify import request as verify_request

T = TypeVar("T")

STATE_VERSION = 1
STATE_FILE = "state.json"
STATE_REMEDY = (
    f"make it writable: tfjs-build keeps its state and lock in {STATE_ROOT} beside the manifest"
)


@dataclass(frozen=True)
class RecordedFile:
    path: str
    size: int
    sha256: str
    mtime_ns: int


# Fields newer than the state's version: left out when None, as older states are (not rewritten).
_LEFT_OUT_WHEN_NONE = ("built_at", "previous", "quantization_choice")


@dataclass(frozen=True)
class SignatureRecord:
    """What the last successful build of one signature wrote, and from what."""

    model: str
    signature: str
    output: str  # relative to the manifest's folder, POSIX separators
    fingerprint: str
    parts: dict[str, str]
    options: RecordedOptions
    files: tuple[RecordedFile, ...]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    content_hash: str
    seconds: float
    details: dict[str, str] = field(default_factory=dict)
    # The TensorFlow.js parity check this output passed; None when built without verifying.
    verification: verify_record.VerificationRecord | None = None
    # What that check was run with (`SignatureFingerprint.verify`); None when not verified.
    # Compared apart from `fingerprint`: other settings re-verify, they do not reconvert.
    verified_with: verify_request.VerificationRequest | None = None
    # When this output was placed (built, or restored from a cache); None in older states.
    built_at: str | None = None
    # The output it replaced, if any: what `report` compares it with.
    previous: PreviousBuild | None = None
    # What `quantization: auto` tried and kept; None for any other quantization.
    quantization_choice: verify_quantization.QuantizationChoice | None = None

    @property
    def key(self) -> str:
        return f"{self.model}:{self.signature}"

    @property
    def bytes(self) -> int:
        return sum(f.size for f in self.files)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON types (lists, not tuples), so it compares equal to what was loaded."""
        data = asdict(self)
        data["options"] = self.options.to_json_dict()
        data["files"] = [asdict(f) for f in self.files]
        data["inputs"] = tensor_specs_json(self.inputs)
        data["outputs"] = tensor_specs_json(self.outputs)
        data["verification"] = verify_record.verification_json(self.verification)
        data["verified_with"] = verify_request.request_json(self.verified_with)
        data["previous"] = None if self.previous is None else self.previous.to_json()
        data["quantization_choice"] = verify_quantization.choice_json(self.quantization_choice)
        for key in _LEFT_OUT_WHEN_NONE:
            if data[key] is None:
                del data[key]
        return data

    @classmethod
    def from_json(cls, data: Any, where: str = "record") -> SignatureRecord:
        """A record read back, checked field by field; raises InvalidData naming the key path."""
        record = as_dict(data, where)
        files = as_list(record.get("files"), f"{where}.files")
        return cls(
            model=as_str(record.get("model"), f"{where}.model"),
            signature=as_str(record.get("signature"), f"{where}.signature"),
            output=recorded_output(record.get("output"), f"{where}.output"),
            fingerprint=as_sha256(record.get("fingerprint"), f"{where}.fingerprint"),
            parts=as_str_dict(record.get("parts"), f"{where}.parts"),
            options=RecordedOptions.from_json_dict(record.get("options"), f"{where}.options"),
            files=tuple(
                _recorded_file(item, f"{where}.files[{index}]") for index, item in enumerate(files)
            ),
            inputs=tensor_specs_from_json(record.get("inputs"), f"{where}.inputs"),
            outputs=tensor_specs_from_json(record.get("outputs"), f"{where}.outputs"),
            content_hash=as_sha256(record.get("content_hash"), f"{where}.content_hash"),
            seconds=as_float(record.get("seconds"), f"{where}.seconds"),
            details=as_str_dict(record.get("details", {}), f"{where}.details"),
            verification=verify_record.verification_from_json(
                record.get("verification"), f"{where}.verification"
            ),
            verified_with=verify_request.request_from_json(
                record.get("verified_with"), f"{where}.verified_with"
            ),
            built_at=as_time(record.get("built_at"), f"{where}.built_at"),
            previous=PreviousBuild.from_json(record.get("previous"), f"{where}.previous"),
            quantization_choice=verify_quantization.choice_from_json(
                record.get("quantization_choice"), f"{where}.quantization_choice"
            ),
        )

    def superseded(self) -> PreviousBuild:
        """What a record that replaces this one keeps of it."""
        return PreviousBuild(
            self.built_at, self.bytes, error_of(self.verification), self.content_hash
        )


def _recorded_file(data: Any, where: str) -> RecordedFile:
    item = as_dict(data, where)
    return RecordedFile(
        path=safe_relative_path(item.get("path"), f"{where}.path"),
        size=as_int(item.get("size"), f"{where}.size"),
        sha256=as_sha256(item.get("sha256"), f"{where}.sha256"),
        mtime_ns=as_int(item.get("mtime_ns"), f"{where}.mtime_ns", minimum=-(2**63)),
    )


def recorded_output(value: Any, where: str) -> str:
    """A recorded output folder: relative to the manifest's folder, normalised, POSIX.

    It may start with `..` (an output_dir outside the manifest's folder); `output_folder` says
    whether it lies inside the manifest's output_dir.
    """
    text = as_str(value, where)
    if text.startswith("/") or "\\" in text or re.match(r"[A-Za-z]:", text):
        raise InvalidData(where, f"{text!r} is not a relative POSIX path")
    if not text or posixpath.normpath(text) != text or text == ".":
        raise InvalidData(where, f"{text!r} is not a normalised relative path")
    return text


def output_folder(root: Path, output_dir: Path, output: str, where: str = "output") -> Path:
    """Where a recorded output lies, if it is a folder below `output_dir` reached without a
    symbolic link; else InvalidData. Only such folders are ever deleted from (or trusted)."""
    folder = os.path.normpath(os.path.join(root, recorded_output(output, where)))
    base = str(output_dir).rstrip(os.sep) + os.sep
    if not folder.startswith(base):
        raise InvalidData(where, f"{output!r} is not inside output_dir {output_dir}")
    # As readback.resolve_inside, on strings: this runs for every record of every plan.
    current = base[:-1]
    for part in folder[len(base) :].split(os.sep):
        current = f"{current}{os.sep}{part}"
        if os.path.islink(current):
            raise InvalidData(where, f"{current} is a symbolic link")
    return Path(folder)


@dataclass
class BuildState:
    records: dict[str, SignatureRecord] = field(default_factory=dict)
    stat_cache: dict[str, list[Any]] = field(default_factory=dict)
    # source digest -> signature -> graph fingerprint: an unchanged model is not parsed again
    graph_cache: dict[str, GraphCacheEntry] = field(default_factory=dict)

    # What the file held when loaded or last saved: an unchanged state is not serialised again.
    saved_json: JsonObject | None = field(default=None, compare=False, repr=False)
    # A state file of the shared layout (`.tfjs-build/state.json`) this state was read from:
    # removed once this state is saved in the manifest's own folder.
    adopted_from: Path | None = field(default=None, compare=False, repr=False)

    def to_json_dict(self) -> JsonObject:
        """The state file's content: the one place the state becomes JSON."""
        return {
            "version": STATE_VERSION,
            "signatures": {key: record.to_json() for key, record in sorted(self.records.items())},
            "stat_cache": self.stat_cache,
            "graph_cache": {key: entry.to_json_dict() for key, entry in self.graph_cache.items()},
        }

    def to_json(self) -> str:
        return json.dumps(self.to_json_dict(), sort_keys=True, indent=1, allow_nan=False) + "\n"


def state_path(state_dir: Path) -> Path:
    return state_dir / STATE_FILE


def load_state(
    state_dir: Path,
    *,
    root: Path | None = None,
    output_dir: Path | None = None,
    adopt: Path | None = None,
    consequence: str = "it will be rebuilt",
) -> tuple[BuildState, list[str]]:
    """The recorded state and warnings: a record that fails its checks is dropped (and said so,
    with `consequence`); an unreadable file is an empty state.

    With `root` and `output_dir` (the manifest's), a record whose output is not a folder inside
    output_dir, reached without a symbolic link, is dropped too. `adopt` is a state folder of the
    old shared layout, read when `state_dir` has no state yet (see `save_state`).
    """
    path = state_path(state_dir)
    adopted = None
    if not path.exists() and adopt is not None and state_path(adopt).is_file():
        path = adopted = state_path(adopt)
    if not path.exists():
        return BuildState(), []
    if not path.is_file():  # a folder cannot be rewritten, and a fifo would hang the read
        raise BuildError(
            f"{path} is not a file: tfjs-build keeps the build state there; remove it and run "
            "again (everything is rebuilt)"
        )
    payload = _read_payload(path)
    if isinstance(payload, str):
        return BuildState(adopted_from=adopted), [
            f"{path}{payload}: rebuilding everything (it will be rewritten)"
        ]
    records, warnings = _checked_records(payload["signatures"], path, root, output_dir, consequence)
    # Caches of digests: an entry that does not check out is simply computed again.
    stat_cache = _valid_entries(payload.get("stat_cache"), _stat_entry)
    graph_cache = _valid_entries(payload.get("graph_cache"), GraphCacheEntry.from_json_dict)
    state = BuildState(records, stat_cache, graph_cache, saved_json=payload)
    if adopted is not None:
        state.saved_json, state.adopted_from = None, adopted
    return state, warnings


def _read_payload(path: Path) -> dict[str, Any] | str:
    """The state file's JSON object, of this version, with a `signatures` object; or why it is
    not one (the rest of a sentence that starts with the path)."""
    try:
        payload = parse_json(path.read_bytes())
    except (OSError, InvalidData) as error:
        why = str(error) if isinstance(error, InvalidData) else f"{type(error).__name__}: {error}"
        return f" is unreadable ({why})"
    if not isinstance(payload, dict):
        return f" is not a tfjs-build state (expected an object, got {type(payload).__name__})"
    version = payload.get("version")
    if version != STATE_VERSION:
        return f" has state version {version!r}, this tfjs-build reads version {STATE_VERSION}"
    try:
        as_dict(payload.get("signatures"), "signatures")
    except InvalidData as error:
        return f": {error}"
    return payload


def _checked_records(
    signatures: dict[str, Any],
    path: Path,
    root: Path | None,
    output_dir: Path | None,
    consequence: str,
) -> tuple[dict[str, SignatureRecord], list[str]]:
    """The records that pass their checks, and a warning for each one dropped."""
    records: dict[str, SignatureRecord] = {}
    warnings = []
    for key, value in signatures.items():
        shown = key if key.isprintable() else repr(key)
        where = f"signatures.{shown}"
        try:
            record = SignatureRecord.from_json(value, where)
            if record.key != key:
                raise InvalidData(
                    where, f"is the record of {record.key!r}, filed under another key"
                )
            if root is not None and output_dir is not None:
                output_folder(root, output_dir, record.output, f"{where}.output")
        except InvalidData as error:
            warnings.append(f"{path}: record {shown} dropped: {error}; {consequence}")
            continue
        records[key] = record
    return records, warnings


def _valid_entries(data: Any, check: Callable[[Any], T]) -> dict[str, T]:
    if not isinstance(data, dict):
        return {}
    entries: dict[str, T] = {}
    for key, value in data.items():
        try:
            entries[as_str(key, "key")] = check(value)
        except InvalidData:
            continue
    return entries


def _stat_entry(value: Any) -> list[Any]:
    """[size, mtime_ns, inode, sha256], as `fingerprint.StatCache` keeps them."""
    items = as_list(value, "")
    if len(items) != 4:
        raise InvalidData("", "expected [size, mtime_ns, inode, sha256]")
    return [
        as_int(items[0], "size"),
        as_int(items[1], "mtime_ns", minimum=-(2**63)),
        as_int(items[2], "inode"),
        as_sha256(items[3], "sha256"),
    ]


def save_state(state_dir: Path, state: BuildState) -> bool:
    """Write the state if it changed; True when written."""
    path = state_path(state_dir)
    payload = state.to_json_dict()
    if payload == state.saved_json and path.exists():
        return False
    text = json.dumps(payload, sort_keys=True, indent=1, allow_nan=False) + "\n"
    # The file is replaced whole or not at all: on failure it still describes the outputs of
    # the previous records, and an output swapped in since is "changed" to the next plan.
    with refusals_reported(
        state_dir,
        "state folder",
        STATE_REMEDY,
        doing=f"cannot write {path}: ",
        after="; the next run checks again what this one built but could not record",
    ):
        write_atomically(path, text)
    state.saved_json = payload
    if state.adopted_from is not None:
        # Saved in the manifest's own folder now: the shared file must not be adopted again.
        state.adopted_from.unlink(missing_ok=True)
        state.adopted_from = None
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
