"""JSON for build scripts: the plan, a build's results, any other command's payload, an error.

Every document starts with the same `version`, `ok` and `exit_code` (see
schemas/build-report.schema.json). Everything here takes typed values and returns a string:
nothing here prints, reads files, or decides what to build.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tfjsbuild.building.results import ReportRow, SignatureResult
from tfjsbuild.errors import (
    EXIT_FAILED,
    EXIT_OK,
    ManifestError,
    error_kind,
)
from tfjsbuild.files.artifacts import tensor_specs_json
from tfjsbuild.planning.plan import PlanItem
from tfjsbuild.sources.description import (
    DescribedSignature,
    SavedModelDescription,
    SourceDescription,
    TracedSignature,
)
from tfjsbuild.verify.quantization import choice_json
from tfjsbuild.verify.record import verification_json

JSON_REPORT_VERSION = 1


def item_json(item: PlanItem) -> dict[str, Any]:
    return {
        "manifest": str(item.manifest),
        "model": item.model,
        "signature": item.signature,
        "output": item.output,
        "action": item.action,
        "reasons": list(item.reasons) if item.blocked is None else [item.blocked],
        "fingerprint": item.fingerprint.digest if item.fingerprint is not None else None,
        "cache": item.cached,
        "quantization_choice": choice_json(item.quantization),
    }


def plan_json(manifests: Sequence[Path], items: Sequence[PlanItem]) -> str:
    ok = not any(item.blocked for item in items)
    payload = {
        **_outcome(EXIT_OK if ok else EXIT_FAILED),
        "manifests": [str(m) for m in manifests],
        "signatures": [item_json(item) for item in items],
    }
    return _dumps(payload)


def results_json(
    manifests: Sequence[Path], results: Sequence[SignatureResult], *, seconds: float, dry_run: bool
) -> str:
    signatures = []
    for result in results:
        entry = item_json(result.item)
        entry.update(
            status=result.status,
            seconds=round(result.seconds, 3),
            timings={phase: round(s, 3) for phase, s in (result.timings or {}).items()},
            bytes=result.bytes,
            model_json_bytes=result.model_json_bytes,
            weight_bytes=result.weight_bytes,
            verification=verification_json(result.verification),
            quantization_choice=choice_json(result.quantization),
            warnings=list(result.warnings),
            error=result.error,
        )
        signatures.append(entry)
    ok = all(r.status != "failed" for r in results)
    payload = {
        **_outcome(EXIT_OK if ok else EXIT_FAILED),
        "manifests": [str(m) for m in manifests],
        "dry_run": dry_run,
        "seconds": round(seconds, 3),
        "signatures": signatures,
    }
    return _dumps(payload)


def report_json(rows: Sequence[ReportRow]) -> str:
    """`tfjs-build report --json`: every recorded output, from the state."""
    return command_json({"signatures": [row.as_dict() for row in rows]})


def command_json(payload: Mapping[str, Any], *, exit_code: int = EXIT_OK) -> str:
    """Any other command's --json output: the same version, ok and exit_code first."""
    return _dumps({**_outcome(exit_code), **payload})


def saved_model_json(description: SavedModelDescription) -> str:
    """`inspect --json` of a SavedModel."""
    return command_json(
        {
            "path": str(description.path),
            "meta_graphs": [
                {
                    "tags": list(meta.tags),
                    "fingerprint_fallback": meta.fingerprint_fallback,
                    "signatures": [_described_signature_json(sig) for sig in meta.signatures],
                }
                for meta in description.meta_graphs
            ],
        }
    )


def _described_signature_json(described: DescribedSignature) -> dict[str, Any]:
    sig, graph = described.signature, described.fingerprint
    return {
        "name": sig.name,
        "inputs": tensor_specs_json([t.spec for t in sig.inputs]),
        "outputs": tensor_specs_json([t.spec for t in sig.outputs]),
        "fingerprint": None
        if graph is None
        else {
            "digest": graph.digest,
            "graph": graph.graph,
            "captures": [
                {"kind": c.kind, "name": c.name, "digest": c.digest} for c in graph.captures
            ],
        },
    }


def source_json(description: SourceDescription) -> str:
    """`inspect --json` of a Keras file or a Python source."""
    payload: dict[str, Any] = {
        "kind": description.source.kind,
        "fingerprint": description.fingerprint,
    }
    payload.update(description.fields_json)
    payload["signatures"] = [_traced_signature_json(sig) for sig in description.signatures]
    return command_json(payload)


def _traced_signature_json(traced: TracedSignature) -> dict[str, Any]:
    if traced.error is not None:
        return {"name": traced.name, "error": traced.error}
    return {
        "name": traced.name,
        "inputs": tensor_specs_json(traced.inputs),
        "outputs": tensor_specs_json(traced.outputs),
    }


def error_json(error: BaseException, *, exit_code: int, message: str) -> str:
    """The --json output of a command that ended in an error instead of its report: the same
    version, ok and exit_code as a report, then what went wrong (the text stderr shows)."""
    problems = error.problems if isinstance(error, ManifestError) else []
    payload = {
        **_outcome(exit_code),
        "error": {
            "kind": error_kind(error),
            "message": message,
            "problems": [
                {
                    "file": str(problem.file),
                    "line": problem.line,
                    "column": problem.column,
                    "key_path": problem.key_path,
                    "message": problem.message,
                }
                for problem in problems
            ],
        },
    }
    return _dumps(payload)


def _outcome(exit_code: int) -> dict[str, Any]:
    return {"version": JSON_REPORT_VERSION, "ok": exit_code == EXIT_OK, "exit_code": exit_code}


def _dumps(payload: Mapping[str, Any]) -> str:
    # allow_nan=False: JSON.parse rejects NaN and Infinity, so one reaching here is a bug to fix
    # where it came from (`verify.record.json_float` writes measured ones as strings).
    return json.dumps(payload, indent=2, allow_nan=False)
