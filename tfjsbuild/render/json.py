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
    LockHeldError,
    ManifestError,
    TfjsBuildError,
    UsageError,
)
from tfjsbuild.planning.plan import PlanItem
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
            bytes=result.bytes,
            model_json_bytes=result.model_json_bytes,
            weight_bytes=result.weight_bytes,
            verification=verification_json(result.verification),
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
    return command_json({"signatures": [row_json(row) for row in rows]})


def row_json(row: ReportRow) -> dict[str, Any]:
    return {
        "manifest": str(row.manifest),
        "model": row.model,
        "signature": row.signature,
        "output": row.output,
        "bytes": row.bytes,
        "model_json_bytes": row.model_json_bytes,
        "weight_bytes": row.weight_bytes,
        "shards": row.shards,
        "quantization": row.quantization,
        "verification": verification_json(row.verification),
        "seconds": row.seconds,
    }


def command_json(payload: Mapping[str, Any], *, exit_code: int = EXIT_OK) -> str:
    """Any other command's --json output: the same version, ok and exit_code first."""
    return _dumps({**_outcome(exit_code), **payload})


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


def error_kind(error: BaseException) -> str:
    """What a script may branch on: manifest, usage, lock (retry later), build, interrupted,
    or internal (a bug in tfjs-build)."""
    if isinstance(error, ManifestError):
        return "manifest"
    if isinstance(error, UsageError):
        return "usage"
    if isinstance(error, LockHeldError):
        return "lock"
    if isinstance(error, TfjsBuildError):
        return "build"
    if isinstance(error, KeyboardInterrupt):
        return "interrupted"
    return "internal"


def _outcome(exit_code: int) -> dict[str, Any]:
    return {"version": JSON_REPORT_VERSION, "ok": exit_code == EXIT_OK, "exit_code": exit_code}


def _dumps(payload: Mapping[str, Any]) -> str:
    # allow_nan=False: JSON.parse rejects NaN and Infinity, so one reaching here is a bug to fix
    # where it came from (`verify.record.json_float` writes measured ones as strings).
    return json.dumps(payload, indent=2, allow_nan=False)
