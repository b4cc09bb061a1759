"""What `inspect` learns about a Keras file or a Python source: typed, and its --json form.

`loaders.describe` fills these in (tracing the functions, which needs TensorFlow); this module
imports no TensorFlow, so the API and the CLI read them without it. Nothing here loads, traces
or prints.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tfjsbuild.files.artifacts import TensorSpec, tensor_specs_json


@dataclass(frozen=True)
class DescribedSignature:
    """One signature a graph model build would convert: its tensors, or why tracing failed."""

    name: str
    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()
    error: str | None = None  # the user's error while tracing; then no tensors

    def to_json_dict(self) -> dict[str, Any]:
        if self.error is not None:
            return {"name": self.name, "error": self.error}
        return {
            "name": self.name,
            "inputs": tensor_specs_json(self.inputs),
            "outputs": tensor_specs_json(self.outputs),
        }


@dataclass(frozen=True)
class SourceInspection:
    """A Keras file or Python source as `inspect` shows it."""

    kind: str
    fingerprint: str  # the source's content digest
    # The kind's own fields (`SourceKind.inspect_fields`: path, container, python, inputs...),
    # JSON by that protocol's contract, shown by its `inspect_heading`.
    fields_json: dict[str, Any]
    signatures: tuple[DescribedSignature, ...]

    def to_json_dict(self) -> dict[str, Any]:
        """The `inspect --json` payload (after the version, ok and exit_code every one has)."""
        return {
            "kind": self.kind,
            "fingerprint": self.fingerprint,
            **self.fields_json,
            "signatures": [signature.to_json_dict() for signature in self.signatures],
        }
