"""What a verification leaves behind: its recorded outcome per backend, and what it was run with.

`VerificationRecord` is what the state, cache entries, the asset index and reports keep of a
`compare.Verification` (the worker's, which also knows each output's worst sample and why it
failed): one `BackendRecord` per TensorFlow.js backend asked for. Each has its JSON form here
(`to_json_dict`), and a check of that JSON read back untrusted (`verification_from_json`). What
a verification is run with is `request.VerificationRequest`.

Nothing here compares tensors, reads files or imports numpy or TensorFlow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from tfjsbuild.files.readback import (
    InvalidData,
    as_bool,
    as_dict,
    as_error_value,
    as_float,
    as_int,
    as_str,
)

# The TensorFlow.js backends a signature can be verified on, in the order they run.
BACKENDS = ("cpu", "wasm", "webgl")


@dataclass(frozen=True)
class OutputRecord:
    """One output key's recorded comparison: its largest errors, and whether it passed."""

    key: str
    # As measured, NaN and the infinities included (written as "NaN", "Infinity", "-Infinity").
    max_abs_error: float
    max_rel_error: float
    passed: bool


@dataclass(frozen=True)
class BackendRecord:
    """How one TensorFlow.js backend answered: its errors per output against TensorFlow's, or
    why it did not answer (`note`: a kernel it lacks, a browser not found)."""

    backend: str  # the backend that ran it: "cpu", "wasm" or "webgl"
    passed: bool
    atol: float
    rtol: float
    max_abs_error: float  # over all outputs; NaN or an infinity as measured (NaN: not compared)
    outputs: tuple[OutputRecord, ...] = ()
    seconds: float | None = None  # TF.js's own time: loading the model and running the samples
    skipped: bool = False  # not run here (webgl without a browser, not required): no verdict
    # Why it failed without comparing, why it was skipped, or why `auto` ran the CPU backend.
    note: str | None = None

    def to_json_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "passed": self.passed,
            "atol": self.atol,
            "rtol": self.rtol,
            "max_abs_error": json_float(self.max_abs_error),
            "outputs": {
                output.key: {
                    "max_abs_error": json_float(output.max_abs_error),
                    "max_rel_error": json_float(output.max_rel_error),
                    "passed": output.passed,
                }
                for output in self.outputs
            },
            "seconds": self.seconds,
            "note": self.note,
        }
        if self.skipped:
            data["skipped"] = True
        return data


@dataclass(frozen=True)
class VerificationRecord:
    """A recorded TensorFlow.js parity check of one output, on each backend asked for (without
    the failure message, which the build's error carries)."""

    samples: int
    inputs: str  # the `.npz` file given, or "generated"
    backends: tuple[BackendRecord, ...]

    @property
    def passed(self) -> bool:
        """Some backend ran, and every one that ran agreed with TensorFlow (a skipped one has
        no say; none ran: nothing was verified)."""
        return bool(self.ran) and all(run.passed for run in self.ran)

    @property
    def ran(self) -> tuple[BackendRecord, ...]:
        return tuple(run for run in self.backends if not run.skipped)

    @property
    def max_abs_error(self) -> float:
        """The largest error over every backend that ran (NaN wins: it was not comparable; none
        ran: NaN, nothing was measured)."""
        errors = [run.max_abs_error for run in self.ran]
        if not errors or any(math.isnan(error) for error in errors):
            return math.nan
        return max(errors)

    def to_json_dict(self) -> dict[str, Any]:
        """As the state, cache entries, --json and the asset index write it."""
        return {
            "passed": self.passed,
            "samples": self.samples,
            "inputs": self.inputs,
            "max_abs_error": json_float(self.max_abs_error),
            "backends": {run.backend: run.to_json_dict() for run in self.backends},
        }


def index_json(verification: VerificationRecord | None) -> dict[str, Any] | None:
    """For the asset index: as `to_json_dict`, without the seconds each backend took, so that
    the index changes only when an output or what its verification found does."""
    if verification is None:
        return None
    data = verification.to_json_dict()
    for run in data["backends"].values():
        del run["seconds"]
    return data


def verification_json(verification: VerificationRecord | None) -> dict[str, Any] | None:
    return None if verification is None else verification.to_json_dict()


def verification_from_json(value: Any, where: str) -> VerificationRecord | None:
    """A recorded verification read back (None: not verified), checked key by key.

    Keys this version does not know (an older or newer tfjs-build may have written more) are
    not kept: nothing here reads them, and a record rewritten by this version drops them. One
    written before several backends could be asked for (its `atol`, `rtol`, `outputs` and
    `backend` at the top) reads as that one backend's; one without `backend` as run on "cpu",
    as all of those were; one without `outputs` (as early ones were written) with none.
    """
    if value is None:
        return None
    data = as_dict(value, where)
    samples = as_int(data.get("samples"), f"{where}.samples")
    inputs = as_str(data.get("inputs"), f"{where}.inputs")
    if "backends" not in data:
        backend = as_str(data.get("backend", "cpu"), f"{where}.backend")
        run = _backend_from_json(backend, data, where)
        # Its `passed` was the record's: one backend, so the same verdict.
        return VerificationRecord(samples, inputs, (run,))
    runs = tuple(
        _backend_from_json(name, item, f"{where}.backends.{name}")
        for name, item in as_dict(data["backends"], f"{where}.backends").items()
    )

    if not runs:
        raise InvalidData(f"{where}.backends", "names no backend")
    return VerificationRecord(samples, inputs, runs)


def _backend_from_json(backend: str, value: Any, where: str) -> BackendRecord:
    if backend not in BACKENDS:
        raise InvalidData(where, f"{backend!r} is no TensorFlow.js backend ({', '.join(BACKENDS)})")
    data = as_dict(value, where)
    outputs = []
    for key, item in as_dict(data.get("outputs", {}), f"{where}.outputs").items():
        at = f"{where}.outputs.{key}"
        output = as_dict(item, at)
        outputs.append(
            OutputRecord(
                key,
                error_from_json(output.get("max_abs_error"), f"{at}.max_abs_error"),
                error_from_json(output.get("max_rel_error"), f"{at}.max_rel_error"),
                as_bool(output.get("passed"), f"{at}.passed"),
            )
        )
    seconds, note = data.get("seconds"), data.get("note")
    return BackendRecord(
        backend=backend,
        passed=as_bool(data.get("passed"), f"{where}.passed"),
        atol=as_float(data.get("atol"), f"{where}.atol"),
        rtol=as_float(data.get("rtol"), f"{where}.rtol"),
        max_abs_error=error_from_json(data.get("max_abs_error"), f"{where}.max_abs_error"),
        outputs=tuple(outputs),
        seconds=None if seconds is None else as_float(seconds, f"{where}.seconds"),
        skipped=as_bool(data.get("skipped", False), f"{where}.skipped"),
        note=None if note is None else as_str(note, f"{where}.note"),
    )


def error_from_json(value: Any, where: str) -> float:
    """An error measure as `json_float` writes it: a number as written (500 stays an int, so it
    is written back as it was), "NaN"/"Infinity"/"-Infinity" as the float they stand for."""
    checked = as_error_value(value, where)
    return float(checked) if isinstance(checked, str) else checked


def json_float(value: float) -> float | str:
    """A float for JSON, which has no literal for NaN or the infinities."""
    if math.isfinite(value):
        return value
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
