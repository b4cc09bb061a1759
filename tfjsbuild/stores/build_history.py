"""When a signature's output was built, and what the build it replaced left behind.

A record keeps one step of history, not a log: enough for `report` to say what the last build
changed (bytes, verification error) without the state growing with every build. Read back
untrusted, like the rest of the state.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tfjsbuild.files.readback import InvalidData, as_dict, as_int, as_sha256, as_str
from tfjsbuild.verify.record import VerificationRecord, error_from_json, json_float

# UTC, to the second: sortable as text, and the same on every machine that reads it.
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


def now_utc() -> str:
    return datetime.now(UTC).strftime(TIME_FORMAT)


def as_time(value: Any, where: str) -> str | None:
    """A recorded time (`TIME_FORMAT`), or None where none was recorded (older states)."""
    if value is None:
        return None
    text = as_str(value, where)
    try:
        if _TIME.fullmatch(text) is None:
            raise ValueError(text)
        datetime.strptime(text, TIME_FORMAT)
    except ValueError:
        raise InvalidData(where, f"{text!r} is not a UTC time like 2026-01-31T12:00:00Z") from None
    return text


def error_of(verification: VerificationRecord | None) -> float | None:
    """The largest error a verification measured; None when not verified or nothing ran."""
    if verification is None or not verification.ran:
        return None
    return verification.max_abs_error


@dataclass(frozen=True)
class PreviousBuild:
    """What the output an output replaced was: its size, its verification error, its time."""

    built_at: str | None  # None: built before tfjs-build recorded the time
    bytes: int
    # As measured (NaN: not compared); None: not verified, or no backend could run it.
    max_abs_error: float | None
    content_hash: str

    def to_json(self) -> dict[str, Any]:
        error = self.max_abs_error
        return {
            "built_at": self.built_at,
            "bytes": self.bytes,
            "max_abs_error": None if error is None else json_float(error),
            "content_hash": self.content_hash,
        }

    @classmethod
    def from_json(cls, data: Any, where: str) -> PreviousBuild | None:
        if data is None:
            return None
        item = as_dict(data, where)
        error = item.get("max_abs_error")
        return cls(
            built_at=as_time(item.get("built_at"), f"{where}.built_at"),
            bytes=as_int(item.get("bytes"), f"{where}.bytes"),
            max_abs_error=None
            if error is None
            else error_from_json(error, f"{where}.max_abs_error"),
            content_hash=as_sha256(item.get("content_hash"), f"{where}.content_hash"),
        )
