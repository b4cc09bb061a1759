"""jsonschema errors as sentences: what is wrong, where, and what to write instead.

Turns one `ValidationError` into located `Problem`s ("unknown key 'tgas'; did you mean
'tags'?"), describing values in the manifest's words rather than JSON Schema's. Nothing here
runs the validator or decides what is valid: `manifest.schema` does, and hands errors in.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from tfjsbuild.errors import Problem
from tfjsbuild.manifest.types import QUANTIZATION_DTYPES
from tfjsbuild.manifest.yaml_positions import KeyPath, PositionedDocument

if TYPE_CHECKING:
    from jsonschema import ValidationError

_TYPE_NAMES = {
    "object": "a mapping",
    "array": "a list",
    "string": "text",
    "integer": "a whole number",
    "number": "a number",
    "boolean": "true or false",
    "null": "nothing",
}


def describe_value(value: Any) -> str:
    if isinstance(value, bool):
        return f"{str(value).lower()} (true or false)"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing (null)"
    if isinstance(value, str):
        return f"text {value!r}"
    return f"{type(value).__name__} {value!r}"


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    matches = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return matches[0] if matches else None


def describe_error(doc: PositionedDocument, error: ValidationError) -> Iterator[Problem]:
    """The problems one schema error stands for, each at the key or value it is about."""
    path: KeyPath = tuple(error.absolute_path)
    kind = error.validator
    if kind in ("oneOf", "anyOf") and error.context:
        yield from _alternative_problems(doc, error, path)
    elif kind == "pattern" and "propertyNames" in error.absolute_schema_path:
        yield _model_name_problem(doc, path, error.instance)
    elif kind == "additionalProperties" and isinstance(error.instance, dict):
        yield from _unknown_key_problems(doc, path, error.instance, _schema_of(error))
    elif kind == "required" and isinstance(error.instance, dict):
        for key in _schema_of(error).get("required", []):
            if key not in error.instance:
                yield doc.problem_at(doc.key_mark(path), path, f"missing required key '{key}'")
    else:
        yield doc.problem_at(doc.value_mark(path), path, _value_message(error, path))


def _schema_of(error: ValidationError) -> dict[str, Any]:
    return error.schema if isinstance(error.schema, dict) else {}


def _alternative_problems(
    doc: PositionedDocument, error: ValidationError, path: KeyPath
) -> Iterator[Problem]:
    """A failed oneOf/anyOf: the fitting branch's own errors, or what the value should be."""
    branch = _matching_branch(error)
    if branch is not None:
        for sub in branch:
            yield from describe_error(doc, sub)
        return
    expected = str(_schema_of(error).get("description", "a value matching the schema")).rstrip(".")
    yield doc.problem_at(
        doc.value_mark(path), path, f"expected {expected}; got {describe_value(error.instance)}"
    )


def _matching_branch(error: ValidationError) -> list[ValidationError] | None:
    """Of a failed oneOf, the errors of the one branch whose type fits the value, if exactly one."""
    by_branch: dict[int, list[ValidationError]] = {}
    for sub in error.context or ():
        by_branch.setdefault(int(sub.relative_schema_path[0]), []).append(sub)
    fitting = [
        errors
        for errors in by_branch.values()
        if not any(
            e.validator in ("type", "const") and len(e.relative_schema_path) == 2 for e in errors
        )
    ]
    return fitting[0] if len(fitting) == 1 else None


def _model_name_problem(doc: PositionedDocument, path: KeyPath, instance: Any) -> Problem:
    name_path: KeyPath = (*path, str(instance))
    return doc.problem_at(
        doc.key_mark(name_path),
        name_path,
        f"invalid model name '{instance}': use lowercase letters, digits, '-' and '_', "
        "starting with a letter or digit",
    )


def _unknown_key_problems(
    doc: PositionedDocument, path: KeyPath, instance: dict[str, Any], schema: dict[str, Any]
) -> Iterator[Problem]:
    allowed = list(schema.get("properties", {}))
    for key in instance:
        if key in allowed:
            continue
        key_path = (*path, key)
        if path and path[-1] == "quantization":
            message = (
                f"unknown quantization dtype '{key}'; use one of {', '.join(QUANTIZATION_DTYPES)}"
            )
        else:
            message = f"unknown key '{key}'"
        suggestion = did_you_mean(key, allowed)
        if suggestion:
            message += f"; did you mean '{suggestion}'?"
        elif not (path and path[-1] == "quantization"):
            message += f"; allowed here: {', '.join(allowed)}"
        yield doc.problem_at(doc.key_mark(key_path), key_path, message)


def _value_message(error: ValidationError, path: KeyPath) -> str:
    """What is wrong with one value (its type, range, length or form), in the manifest's words."""
    kind = error.validator
    schema = _schema_of(error)
    instance = error.instance
    if kind == "type":
        expected_types = schema.get("type")
        names = [expected_types] if isinstance(expected_types, str) else list(expected_types or [])
        expected = " or ".join(_TYPE_NAMES.get(name, name) for name in names if name != "null")
        return f"expected {expected}, got {describe_value(instance)}"
    if kind == "const" and path == ("version",):
        return f"unsupported manifest version {instance!r}: this tfjs-build reads version 1"
    if kind == "const":
        return f"must be {schema['const']!r}, got {describe_value(instance)}"
    if kind == "enum":
        choices = [str(choice) for choice in schema.get("enum", [])]
        message = f"must be one of {', '.join(choices)}; got {describe_value(instance)}"
        suggestion = did_you_mean(str(instance), choices)
        return message + (f"; did you mean '{suggestion}'?" if suggestion else "")
    if kind == "minimum":
        return f"must be at least {schema['minimum']}, got {instance!r}"
    if kind == "exclusiveMinimum":
        return f"must be more than {schema['exclusiveMinimum']}, got {instance!r}"
    if kind == "maximum":
        return f"must be at most {schema['maximum']}, got {instance!r}"
    if kind in ("minLength", "minItems", "minProperties"):
        return "declare at least one model" if path == ("models",) else "must not be empty"
    if kind == "uniqueItems":
        return "lists the same name twice"
    if kind == "pattern" and path and path[-1] == "python":
        return f"expected 'module:callable' (e.g. mypkg.export:build), got {instance!r}"
    if kind == "pattern" and path[-2:] == ("verify", "inputs"):
        return f"expected a .npz file (numpy.savez, arrays keyed by input name), got {instance!r}"
    return str(error.message)
