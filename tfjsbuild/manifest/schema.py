"""The manifest's JSON Schema: the shipped text, validation, and the memo of a passed check.

`schema_problems` runs the validator over a positioned document and words each error through
`manifest.messages`. A passed check is remembered in the manifest's state folder
(`manifest-checked`) so an unchanged manifest is not validated again. Nothing here checks what
the schema cannot express (`manifest.rules`) or builds typed values (`manifest.load`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator
from functools import cache
from importlib import resources
from pathlib import Path

from tfjsbuild.errors import Problem
from tfjsbuild.files.json_types import JsonObject
from tfjsbuild.manifest.messages import describe_error
from tfjsbuild.manifest.types import state_dir_for
from tfjsbuild.manifest.yaml_positions import PositionedDocument
from tfjsbuild.version import __version__

SCHEMA_NAME = "tfjs-build.schema.json"
SCHEMA_CHECK_FILE = "manifest-checked"


def schema_text() -> str:
    """The manifest JSON Schema as shipped inside the package."""
    return resources.files("tfjsbuild").joinpath("schemas", SCHEMA_NAME).read_text("utf-8")


@cache
def manifest_schema() -> JsonObject:
    """The manifest's JSON Schema, parsed (a JSON Schema is arbitrary JSON)."""
    schema: JsonObject = json.loads(schema_text())
    return schema


def schema_problems(doc: PositionedDocument) -> Iterator[Problem]:
    import jsonschema  # here: a manifest checked before is not checked again (see below)

    validator = jsonschema.Draft202012Validator(manifest_schema())
    for error in validator.iter_errors(doc.data):
        yield from describe_error(doc, error)


def schema_check_key(text: str) -> str:
    """The manifest, the schema and this version: the same three always validate the same."""
    payload = "\0".join([text, schema_text(), __version__])
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def schema_checked(manifest_path: Path) -> str | None:
    try:
        return (state_dir_for(manifest_path) / SCHEMA_CHECK_FILE).read_text("utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def remember_schema_check(state_dir: Path, key: str) -> None:
    """Remember a passed schema check (the JSON Schema validator costs more than a no-op
    build's whole plan); written only where a build already keeps its state.

    Only an optimisation: on a full disk or a read-only checkout the next load validates again,
    so a failed write is ignored (`write_atomically` leaves no temporary file behind)."""
    from tfjsbuild.files.atomic import write_atomically

    with contextlib.suppress(OSError):
        write_atomically(state_dir / SCHEMA_CHECK_FILE, key)
