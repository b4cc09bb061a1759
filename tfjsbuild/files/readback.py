"""Checks for data this tool reads back: the state file, cache entries, the asset index.

None of it is trusted (a state file may be restored from another machine's CI cache, a cache
entry may come from a shared bucket). Each function takes a value parsed from JSON and returns
it checked (and where useful normalised), or raises `InvalidData` naming the key path at fault.
Callers turn that into a warning and a rebuild or a cache miss, never a crash.
Nothing here reads files or imports TensorFlow.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

_SHA256 = re.compile(r"[0-9a-f]{64}")


class InvalidData(ValueError):
    """A value read back that does not have the shape this tool writes."""

    def __init__(self, where: str, message: str) -> None:
        self.where = where
        super().__init__(f"{where}: {message}" if where else message)


def parse_json(text: str | bytes) -> Any:
    """JSON as this tool writes it: no NaN or infinities, nesting Python can walk."""
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise InvalidData("", "not JSON: nested too deep") from None
    except InvalidData:
        raise
    except ValueError as error:  # UnicodeDecodeError is a ValueError
        raise InvalidData("", f"not JSON: {error}") from error


def _refuse_constant(name: str) -> Any:
    raise InvalidData("", f"holds {name}, which is not JSON")


def as_str(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise InvalidData(where, f"expected a string, got {_kind(value)}")
    if "\0" in value:
        raise InvalidData(where, "contains a NUL byte")
    return value


def as_bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidData(where, f"expected true or false, got {_kind(value)}")
    return value


def as_int(value: Any, where: str, *, minimum: int = 0, maximum: int = 2**63 - 1) -> int:
    """A whole number in range; the default maximum is what sizes and mtimes fit in."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidData(where, f"expected a whole number, got {_kind(value)}")
    if value < minimum:
        raise InvalidData(where, f"expected at least {minimum}, got {value}")
    if value > maximum:
        raise InvalidData(
            where, f"expected at most {maximum}, got a number of {len(str(value))} digits"
        )
    return value


def as_float(value: Any, where: str, *, minimum: float | None = 0.0) -> float:
    """A finite number (JSON has no NaN or infinities; this tool never writes them as numbers).

    Returned as written, an int as an int: what is read back encodes to the same bytes again
    (`verify: {atol: 500}` recorded as 500 must not come back as 500.0 and rewrite the index).
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidData(where, f"expected a number, got {_kind(value)}")
    try:
        number = float(value)
    except OverflowError:  # an int beyond any float
        number = math.inf
    if not math.isfinite(number):
        raise InvalidData(where, "expected a finite number")
    if minimum is not None and number < minimum:
        raise InvalidData(where, f"expected at least {minimum}, got {number}")
    return value


def as_error_value(value: Any, where: str) -> float | str:
    """An error measure as `verify.record.json_float` writes it: a number, or "NaN"/"Infinity"."""
    if value in ("NaN", "Infinity", "-Infinity"):
        return str(value)
    return as_float(value, where, minimum=None)


def as_sha256(value: Any, where: str) -> str:
    text = as_str(value, where)
    if not _SHA256.fullmatch(text):
        raise InvalidData(where, "expected a sha256 hex digest")
    return text


def as_dict(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise InvalidData(where, f"expected an object, got {_kind(value)}")
    return value


def as_list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise InvalidData(where, f"expected a list, got {_kind(value)}")
    return value


def as_str_dict(value: Any, where: str) -> dict[str, str]:
    return {key: as_str(item, f"{where}.{key}") for key, item in as_dict(value, where).items()}


def safe_relative_path(value: Any, where: str) -> str:
    """A POSIX path relative to the folder it belongs to, that cannot leave that folder.

    No NUL, no absolute path, no backslash, no empty, `.` or `..` component.
    """
    text = as_str(value, where)
    if not text:
        raise InvalidData(where, "is empty")
    if text.startswith("/") or "\\" in text or re.match(r"[A-Za-z]:", text):
        raise InvalidData(where, f"{text!r} is not a relative POSIX path")
    if any(part in ("", ".", "..") for part in text.split("/")):
        raise InvalidData(where, f"{text!r} is not a normalised path inside its folder")
    return text


def resolve_inside(folder: Path, relative: str, where: str) -> Path:
    """`folder / relative`, refusing a path through a symbolic link below `folder` (the last
    component included): a planted link would make a write or a deletion land outside it."""
    path = folder
    for part in safe_relative_path(relative, where).split("/"):
        path = path / part
        if path.is_symlink():
            raise InvalidData(where, f"{path} is a symbolic link")
    return path


def as_scalar_dict(value: Any, where: str) -> dict[str, str | float | bool | None]:
    """An object of scalars: text, finite numbers (as written), booleans, null."""
    checked: dict[str, str | float | bool | None] = {}
    for key, item in as_dict(value, where).items():
        at = f"{where}.{key}"
        if item is None or isinstance(item, bool):
            checked[key] = item
        elif isinstance(item, int | float):
            checked[key] = as_float(item, at, minimum=None)
        elif isinstance(item, str):
            checked[key] = as_str(item, at)
        else:
            raise InvalidData(
                at, f"expected text, a number, true, false or null, got {_kind(item)}"
            )
    return checked


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    names: Mapping[type, str] = {
        bool: "a boolean",
        str: "a string",
        list: "a list",
        dict: "an object",
    }
    return names.get(type(value), type(value).__name__)
