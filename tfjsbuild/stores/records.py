"""A signature's record in the state: what its last successful build wrote, and from what.

Read back untrusted, field by field (`SignatureRecord.from_json`); only an output folder below
output_dir, reached without a symbolic link, is ever trusted or deleted from (`output_folder`).
Whether the files on disk are still what a record says is `output_change`'s question.
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tfjsbuild.files.artifacts import (
    OutputFile,
    TensorSpec,
    file_sha256,
    tensor_specs_from_json,
    tensor_specs_json,
)
from tfjsbuild.files.readback import (
    InvalidData,
    as_dict,
    as_float,
    as_int,
    as_list,
    as_sha256,
    as_str,
    as_str_dict,
    safe_relative_path,
)
from tfjsbuild.files.shared_weights import shared_path
from tfjsbuild.stores.build_history import PreviousBuild, as_time, error_of
from tfjsbuild.stores.recorded_options import RecordedOptions
from tfjsbuild.verify import quantization as verify_quantization
from tfjsbuild.verify import record as verify_record
from tfjsbuild.verify import request as verify_request


@dataclass(frozen=True)
class RecordedFile:
    path: str
    size: int
    sha256: str
    mtime_ns: int


# Fields newer than the state's version: left out when None, as older states are (not rewritten).
_LEFT_OUT_WHEN_NONE = ("built_at", "previous", "quantization_choice")
_LEFT_OUT_WHEN_EMPTY = ("shared_files",)


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
    # Weight shards shared with other signatures (`share_weights`), relative to output_dir;
    # `files` then holds model.json alone. Never deleted with the output: see shared_weights.
    shared_files: tuple[RecordedFile, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.model}:{self.signature}"

    @property
    def all_files(self) -> tuple[RecordedFile, ...]:
        """Its own files, then the shared shards it reads."""
        return (*self.files, *self.shared_files)

    @property
    def bytes(self) -> int:
        """What a browser fetches for this signature: its own files and the shards it shares."""
        return sum(f.size for f in self.files) + sum(f.size for f in self.shared_files)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON types (lists, not tuples), so it compares equal to what was loaded."""
        data = asdict(self)
        data["options"] = self.options.to_json_dict()
        data["files"] = [asdict(f) for f in self.files]
        data["shared_files"] = [asdict(f) for f in self.shared_files]
        data["inputs"] = tensor_specs_json(self.inputs)
        data["outputs"] = tensor_specs_json(self.outputs)
        data["verification"] = verify_record.verification_json(self.verification)
        data["verified_with"] = verify_request.request_json(self.verified_with)
        data["previous"] = None if self.previous is None else self.previous.to_json()
        data["quantization_choice"] = verify_quantization.choice_json(self.quantization_choice)
        for key in _LEFT_OUT_WHEN_NONE:
            if data[key] is None:
                del data[key]
        for key in _LEFT_OUT_WHEN_EMPTY:
            if not data[key]:
                del data[key]
        return data

    @classmethod
    def from_json(cls, data: Any, where: str = "record") -> SignatureRecord:
        """A record read back, checked field by field; raises InvalidData naming the key path."""
        record = as_dict(data, where)
        files = as_list(record.get("files"), f"{where}.files")
        shared = record.get("shared_files", [])
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
            shared_files=tuple(
                _recorded_file(item, f"{where}.shared_files[{index}]", shared_path)
                for index, item in enumerate(as_list(shared, f"{where}.shared_files"))
            ),
        )

    def superseded(self) -> PreviousBuild:
        """What a record that replaces this one keeps of it."""
        return PreviousBuild(
            self.built_at, self.bytes, error_of(self.verification), self.content_hash
        )


def _recorded_file(
    data: Any, where: str, path: Callable[[Any, str], str] = safe_relative_path
) -> RecordedFile:
    """A recorded file; `path` checks its path (inside the output folder, by default)."""
    item = as_dict(data, where)
    return RecordedFile(
        path=path(item.get("path"), f"{where}.path"),
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


def record_files(directory: Path, files: tuple[OutputFile, ...]) -> tuple[RecordedFile, ...]:
    return tuple(
        RecordedFile(f.path, f.size, f.sha256, (directory / f.path).stat().st_mtime_ns)
        for f in files
    )


def output_change(root: Path, record: SignatureRecord, output_dir: Path) -> str | None:
    """Why the recorded output on disk no longer is what was built, or None if it still is."""
    directory = root / record.output
    if not directory.is_dir():
        return f"output missing: {record.output}"
    expected = {f.path for f in record.files}
    shown = f"{record.output}/"
    listed = [(directory, shown, f) for f in record.files]
    shared_dir = Path(os.path.relpath(output_dir, root)).as_posix()
    listed += [(output_dir, f"{shared_dir}/", f) for f in record.shared_files]
    for folder, prefix, recorded in listed:
        path = folder / recorded.path
        if folder == output_dir and (path.is_symlink() or path.parent.is_symlink()):
            return f"output modified: {prefix}{recorded.path} is reached through a symbolic link"
        try:
            stat = path.stat()
        except FileNotFoundError:
            return f"output missing: {prefix}{recorded.path}"
        if stat.st_size != recorded.size:
            return f"output modified: {prefix}{recorded.path}"
        if stat.st_mtime_ns != recorded.mtime_ns and file_sha256(path) != recorded.sha256:
            return f"output modified: {prefix}{recorded.path}"
    for path in sorted(directory.rglob("*")):
        relative = path.relative_to(directory).as_posix()
        if path.is_file() and relative not in expected:
            return f"output modified: unexpected file {record.output}/{relative}"
    return None
