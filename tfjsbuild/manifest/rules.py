"""Cross-field rules: what the JSON Schema cannot say about a manifest, checked after it.

One source per model and only its own keys, quantization globs that tensorflowjs accepts,
JSON-able metadata, finite numbers, no NUL byte anywhere, and layout placeholders; each problem
located in the document. Rules about where outputs go live in `manifest.output_rules`.
Nothing here reads files, runs the schema validator or builds typed values.
"""

from __future__ import annotations

import json
import math
import re
import string
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from tfjsbuild.errors import Problem
from tfjsbuild.manifest.types import (
    ALL_SIGNATURES,
    AUTO_QUANTIZATION,
    DEFAULT_LAYOUT,
    KERAS_V3_SUFFIX,
    LAYOUT_PLACEHOLDERS,
    SOURCE_KINDS,
    line_at,
)
from tfjsbuild.manifest.yaml_positions import KeyPath, PositionedDocument, format_key_path


def rule_problems(doc: PositionedDocument, earlier: Sequence[Problem]) -> list[Problem]:
    """Every cross-field problem of a document, given the problems already found in it."""
    problems = [
        *_model_rule_problems(doc),
        *_quantization_problems(doc),
        *_auto_quantization_problems(doc),
        *_metadata_problems(doc),
        *_verify_backend_problems(doc),
    ]
    # Once per place: e.g. -.inf is below `minimum: 0`, which the schema reported already.
    reported = {(p.line, p.column) for p in [*earlier, *problems]}
    problems += [p for p in _finite_number_problems(doc) if (p.line, p.column) not in reported]
    problems += _nul_problems(doc, doc.data, ())
    layout = as_mapping(doc.data).get("layout", DEFAULT_LAYOUT)
    if isinstance(layout, str):
        for message in layout_problems(layout):
            problems.append(doc.problem_at(doc.value_mark(("layout",)), ("layout",), message))
    return problems


def as_mapping(value: Any) -> dict[str, Any]:
    """The value if it is a mapping, else an empty one (the schema reports the wrong type)."""
    return value if isinstance(value, dict) else {}


def _model_rule_problems(doc: PositionedDocument) -> Iterator[Problem]:
    models = as_mapping(as_mapping(doc.data).get("models"))
    for name, model in models.items():
        if not isinstance(model, dict):
            continue
        base = ("models", name)
        sources = [kind for kind in SOURCE_KINDS if kind in model]
        yield from _source_choice_problems(doc, base, model, sources)
        if len(sources) == 1:
            yield from _source_setting_problems(doc, base, model, sources[0])


def _source_choice_problems(
    doc: PositionedDocument, base: KeyPath, model: dict[str, Any], sources: list[str]
) -> Iterator[Problem]:
    """Exactly one source per model, and no key that belongs to another kind of source."""
    name = base[-1]
    if not sources:
        yield doc.problem_at(
            doc.key_mark(base),
            base,
            f"model '{name}' has no source: add exactly one of {', '.join(SOURCE_KINDS)}",
        )
    elif len(sources) > 1:
        second = (*base, sources[1])
        yield doc.problem_at(
            doc.key_mark(second),
            second,
            f"model '{name}' has {len(sources)} sources ({', '.join(sources)}): keep exactly one",
        )
    only_for = {"tags": "saved_model", "format": "keras", "inputs": "python"}
    for key, kind in only_for.items():
        if key in model and sources and kind not in sources:
            yield doc.problem_at(
                doc.key_mark((*base, key)),
                (*base, key),
                f"'{key}' applies to {kind} sources only; remove it from this {sources[0]} model",
            )


def _source_setting_problems(
    doc: PositionedDocument, base: KeyPath, model: dict[str, Any], source: str
) -> Iterator[Problem]:
    """What a model's one source needs besides its schema: relative inputs, named python
    signatures, a Keras 3 file converted to a graph model."""
    inputs = model.get("inputs")
    for index, pattern in enumerate(inputs if isinstance(inputs, list) else []):
        if isinstance(pattern, str) and pattern.startswith("/"):
            yield doc.problem_at(
                doc.value_mark((*base, "inputs", index)),
                (*base, "inputs", index),
                f"'{pattern}' is an absolute path: `inputs` globs are relative to the "
                "manifest's folder (e.g. '../shared/*.py' for a sibling folder)",
            )
    if source == "python" and model.get("signatures", ALL_SIGNATURES) == ALL_SIGNATURES:
        where = (*base, "signatures") if "signatures" in model else (*base, "python")
        yield doc.problem_at(
            doc.key_mark(where) if "signatures" in model else doc.value_mark(where),
            where,
            "a python source needs `signatures:` naming the functions to export "
            "(tfjs-build plans without running your code, so it cannot list them)",
        )
    keras_path = model.get("keras")
    if (
        isinstance(keras_path, str)
        and keras_path.lower().endswith(KERAS_V3_SUFFIX)
        and model.get("format") == "layers_model"
    ):
        yield doc.problem_at(
            doc.value_mark((*base, "format")),
            (*base, "format"),
            "format: layers_model is not supported for Keras 3 .keras files: "
            "tensorflowjs 4.22 converts them with wrong weights or fails "
            "(tensorflow/tfjs#8229, #8266); use format: graph_model (the default)",
        )


def _option_scopes(data: Any) -> Iterator[tuple[KeyPath, dict[str, Any]]]:
    """Every mapping that may hold converter options: defaults, each model, each signature."""
    root = as_mapping(data)
    if isinstance(root.get("defaults"), dict):
        yield ("defaults",), root["defaults"]
    for name, model in as_mapping(root.get("models")).items():
        if not isinstance(model, dict):
            continue
        yield ("models", name), model
        for sig_name, sig in as_mapping(model.get("signatures")).items():
            if isinstance(sig, dict):
                yield ("models", name, "signatures", sig_name), sig


def _quantization_problems(doc: PositionedDocument) -> Iterator[Problem]:
    # An override replaces the whole quantization mapping, so checking each written mapping
    # checks every signature's effective one.
    for scope, options in _option_scopes(doc.data):
        quantization = options.get("quantization")
        if not isinstance(quantization, dict):
            continue
        seen: dict[str, str] = {}
        catch_all: str | None = None
        for dtype, globs in quantization.items():
            if not isinstance(globs, list):
                continue
            for index, glob in enumerate(globs):
                item = (*scope, "quantization", dtype, index)
                if glob == "*" and catch_all is not None and catch_all != dtype:
                    yield doc.problem_at(
                        doc.value_mark(item),
                        item,
                        f"'*' is used for both {catch_all} and {dtype}: tensorflowjs accepts the "
                        "catch-all for one dtype only; list node globs for the other",
                    )
                elif isinstance(glob, str) and glob in seen and seen[glob] != dtype:
                    yield doc.problem_at(
                        doc.value_mark(item),
                        item,
                        f"node glob '{glob}' is listed under both {seen[glob]} and {dtype}: "
                        "tensorflowjs rejects a node quantized to two dtypes; keep it under one",
                    )
                if glob == "*":
                    catch_all = catch_all or dtype
                elif isinstance(glob, str):
                    seen.setdefault(glob, dtype)


def _auto_quantization_problems(doc: PositionedDocument) -> Iterator[Problem]:
    """`quantization: auto` where verification is off: auto chooses by verifying candidates.

    Each signature's (or a `"*"` model's) effective values, the deepest scope's winning; the
    problem is shown once, at the `auto` that is in effect."""
    root = as_mapping(doc.data)
    defaults = as_mapping(root.get("defaults"))
    shown: set[KeyPath] = set()
    for name, model in as_mapping(root.get("models")).items():
        if not isinstance(model, dict):
            continue
        signatures = as_mapping(model.get("signatures"))
        chains = [
            [(("defaults",), defaults), (("models", name), model)]
            + ([(("models", name, "signatures", sig), as_mapping(raw))] if raw else [])
            for sig, raw in signatures.items()
        ] or [[(("defaults",), defaults), (("models", name), model)]]
        for chain in chains:
            auto_at = _effective_at(chain, lambda scope: "quantization" in scope)
            off_at = _effective_at(
                chain, lambda scope: "enabled" in as_mapping(scope.get("verify"))
            )
            scopes = dict(chain)
            if auto_at is None or scopes[auto_at]["quantization"] != AUTO_QUANTIZATION:
                continue
            if off_at is None or as_mapping(scopes[off_at]["verify"])["enabled"] is not False:
                continue
            path = (*auto_at, "quantization")
            if path in shown:
                continue
            shown.add(path)
            off = (*off_at, "verify", "enabled")
            yield doc.problem_at(
                doc.value_mark(path),
                path,
                "quantization: auto chooses the smallest quantization that passes verification, "
                f"but verification is off ({format_key_path(off)}: false, line "
                f"{doc.value_mark(off).line}); turn verification on, or give dtype -> weight "
                "globs (e.g. {float16: ['*']})",
            )


def _effective_at(
    chain: Sequence[tuple[KeyPath, dict[str, Any]]], sets: Callable[[dict[str, Any]], bool]
) -> KeyPath | None:
    """The deepest scope of `chain` (defaults, model, signature) that sets a key, if any."""
    found = None
    for path, scope in chain:
        if sets(scope):
            found = path
    return found


def _metadata_problems(doc: PositionedDocument) -> Iterator[Problem]:
    for scope, options in _option_scopes(doc.data):
        if "metadata" not in options:
            continue
        try:
            # Only the types; a NaN is reported by _finite_number_problems, at its own line.
            json.dumps(options["metadata"], allow_nan=True)
        except (TypeError, ValueError):
            path = (*scope, "metadata")
            yield doc.problem_at(
                doc.value_mark(path),
                path,
                "metadata must be plain JSON values (quote dates and times)",
            )


def _verify_backend_problems(doc: PositionedDocument) -> Iterator[Problem]:
    for scope, options in _option_scopes(doc.data):
        verify = as_mapping(options.get("verify"))
        if "backend" in verify and "backends" in verify:
            path = (*scope, "verify", "backend")
            yield doc.problem_at(
                doc.key_mark(path),
                path,
                "give `backend` (one backend) or `backends` (several), not both; "
                f"`backend: {verify['backend']}` is `backends: [{verify['backend']}]`",
            )


def non_finite_numbers(value: Any, path: KeyPath = ()) -> Iterator[tuple[KeyPath, float]]:
    """Every NaN or infinity in plain data, with its key path. JSON Schema cannot say
    "finite", and JSON (reports, the state, the asset index, model.json) cannot hold them."""
    if isinstance(value, float) and not math.isfinite(value):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from non_finite_numbers(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from non_finite_numbers(item, (*path, index))


def _finite_number_problems(doc: PositionedDocument) -> Iterator[Problem]:
    for path, value in non_finite_numbers(doc.data):
        mark = doc.value_mark(path)
        written = re.match(r"[^\s,\]}#]+", (line_at(doc.lines, mark.line) or "")[mark.column - 1 :])
        if written is None:
            written_text = ".nan" if math.isnan(value) else (".inf" if value > 0 else "-.inf")
        else:
            written_text = written.group()
        message = (
            f"{written_text} is not a finite number (reports and the state are JSON, which has "
            "no NaN or infinity): write a number"
        )
        if path[-2:] in (("verify", "atol"), ("verify", "rtol")):
            message += "; to accept any difference, set `verify: {enabled: false}`"
        yield doc.problem_at(mark, path, message)


def _nul_problems(doc: PositionedDocument, value: Any, path: KeyPath) -> Iterator[Problem]:
    """A NUL byte in any key or text: no path, name or option can hold one (the OS refuses it)."""
    if isinstance(value, str) and "\0" in value:
        yield doc.problem_at(doc.value_mark(path), path, f"{value!r} contains a NUL byte")
    elif isinstance(value, dict):
        for key, item in value.items():
            if "\0" in key:
                yield doc.problem_at(
                    doc.key_mark((*path, key)), path, f"key {key!r} contains a NUL byte"
                )
            else:
                yield from _nul_problems(doc, item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _nul_problems(doc, item, (*path, index))


def layout_problems(layout: str) -> list[str]:
    """What is wrong with a layout string's placeholders, as messages."""
    try:
        fields = list(string.Formatter().parse(layout))
    except ValueError as error:
        return [
            f"invalid layout {layout!r}: {error}; write placeholders as {{model}} and {{signature}}"
        ]
    messages = []
    for _, name, spec, conversion in fields:
        if name is None:
            continue
        if name not in LAYOUT_PLACEHOLDERS:
            messages.append(
                f"unknown placeholder {{{name}}} in layout; available: "
                + ", ".join(f"{{{p}}}" for p in LAYOUT_PLACEHOLDERS)
            )
        elif spec or conversion:
            messages.append(f"placeholder {{{name}}} takes no format spec or conversion")
    return messages
