"""The one name for JSON whose shape is arbitrary: user metadata, a JSON Schema, a file's parsed
payload at the edge where it is read or written.

A value with a known shape is a frozen dataclass instead, converted at its file's edge
(`to_json_dict` / `from_json_dict`). Nothing here reads or writes files.
"""

from __future__ import annotations

from typing import Any, TypeAlias

# A JSON object: str keys, values any JSON (None, bool, int, float, str, list, JsonObject).
JsonObject: TypeAlias = dict[str, Any]
