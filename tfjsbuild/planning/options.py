"""Converter options given as keyword arguments (the Python API), checked as a manifest's are.

Against the manifest schema's `options`, with the same finiteness rule; nothing here converts.
"""

from __future__ import annotations

from typing import Any

from tfjsbuild.errors import UsageError
from tfjsbuild.manifest.rules import non_finite_numbers
from tfjsbuild.manifest.schema import manifest_schema
from tfjsbuild.manifest.types import ConverterOptions
from tfjsbuild.manifest.yaml_positions import format_key_path


def converter_options(**options: Any) -> ConverterOptions:
    """Converter options from keyword arguments, checked against the manifest schema."""
    import jsonschema

    schema = dict(manifest_schema()["$defs"]["options"])
    schema["$defs"] = manifest_schema()["$defs"]
    try:
        jsonschema.validate(options, schema, cls=jsonschema.Draft202012Validator)
    except jsonschema.ValidationError as error:
        where = ".".join(str(p) for p in error.absolute_path) or "options"
        raise UsageError(f"invalid converter option {where}: {error.message}") from None
    for path, value in non_finite_numbers(options):  # JSON Schema cannot say "finite"
        raise UsageError(
            f"invalid converter option {format_key_path(path)}: {value} is not a finite number "
            "(model.json is JSON, which has no NaN or infinity)"
        )
    return ConverterOptions.from_json_dict(options)
