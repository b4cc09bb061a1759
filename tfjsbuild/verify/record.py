"""What a verification leaves behind: its recorded outcome, and the settings it was run with.

`VerificationRecord` is what the state, cache entries, the asset index and reports keep of a
`compare.Verification` (the worker's, which also knows each output's worst sample and why it
failed). `VerificationRequest` is what a build wants a verification run with, and what a recorded
one was run with: compared by value. Each has its JSON form here (`to_json_dict`), and a check of
that JSON read back untrusted (`verification_from_json`, `request_from_json`).

Nothing here compares tensors, reads files or imports numpy or TensorFlow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from tfjsbuild.files.readback import (
    as_bool,
    as_dict,
    as_error_value,
    as_float,
    as_int,
    as_scalar_dict,
    as_str,
)


@dataclass(frozen=True)
class OutputRecord:
    """One output key's recorded comparison: its largest errors, and whether it passed."""

    key: str
    # As measured, NaN and the infinities included (written as "NaN", "Infinity", "-Infinity").
    max_abs_error: float
    max_rel_error: float
    passed: bool


@dataclass(frozen=True)
class VerificationRecord:
    """A recorded TensorFlow.js parity check of one output (without the failure message, which
    the build's error carries)."""

    passed: bool
    samples: int
    inputs: str  # the `.npz` file given, or "generated"
    atol: float
    rtol: float
    max_abs_error: float  # over all outputs; NaN or an infinity as measured
    outputs: tuple[OutputRecord, ...] = ()
    backend: str = "cpu"  # the TensorFlow.js backend that ran the output: "cpu" or "wasm"

    def to_json_dict(self) -> dict[str, Any]:
        """As the state, cache entries and --json write it (the asset index keeps a summary)."""
        return {
            "passed": self.passed,
            "samples": self.samples,
            "inputs": self.inputs,
            "atol": self.atol,
            "rtol": self.rtol,
            "backend": self.backend,
            "max_abs_error": json_float(self.max_abs_error),
            "outputs": {
                output.key: {
                    "max_abs_error": json_float(output.max_abs_error),
                    "max_rel_error": json_float(output.max_rel_error),
                    "passed": output.passed,
                }
                for output in self.outputs
            },
        }

    def summary_json_dict(self) -> dict[str, Any]:
        """For the asset index: whether TF.js matched TensorFlow, and how closely."""
        return {
            "passed": self.passed,
            "max_abs_error": json_float(self.max_abs_error),
            "samples": self.samples,
            "atol": self.atol,
            "rtol": self.rtol,
            "backend": self.backend,
        }


def verification_json(verification: VerificationRecord | None) -> dict[str, Any] | None:
    return None if verification is None else verification.to_json_dict()


def request_json(request: VerificationRequest | None) -> dict[str, Any] | None:
    return None if request is None else request.to_json_dict()


def verification_from_json(value: Any, where: str) -> VerificationRecord | None:
    """A recorded verification read back (None: not verified), checked key by key.

    Keys this version does not know (an older or newer tfjs-build may have written more) are
    not kept: nothing here reads them, and a record rewritten by this version drops them. A
    record without `outputs` (as early ones were written) reads with none, one without `backend`
    (written before the WebAssembly backend verified) as run on "cpu", as all of those were.
    """
    if value is None:
        return None
    data = as_dict(value, where)
    outputs = []
    for key, item in as_dict(data.get("outputs", {}), f"{where}.outputs").items():
        at = f"{where}.outputs.{key}"
        output = as_dict(item, at)
        outputs.append(
            OutputRecord(
                key,
                _error(output.get("max_abs_error"), f"{at}.max_abs_error"),
                _error(output.get("max_rel_error"), f"{at}.max_rel_error"),
                as_bool(output.get("passed"), f"{at}.passed"),
            )
        )
    return VerificationRecord(
        passed=as_bool(data.get("passed"), f"{where}.passed"),
        samples=as_int(data.get("samples"), f"{where}.samples"),
        inputs=as_str(data.get("inputs"), f"{where}.inputs"),
        atol=as_float(data.get("atol"), f"{where}.atol"),
        rtol=as_float(data.get("rtol"), f"{where}.rtol"),
        max_abs_error=_error(data.get("max_abs_error"), f"{where}.max_abs_error"),
        outputs=tuple(outputs),
        backend=as_str(data.get("backend", "cpu"), f"{where}.backend"),
    )


def _error(value: Any, where: str) -> float:
    """An error measure as `json_float` writes it: a number as written (500 stays an int, so it
    is written back as it was), "NaN"/"Infinity"/"-Infinity" as the float they stand for."""
    checked = as_error_value(value, where)
    return float(checked) if isinstance(checked, str) else checked


@dataclass(frozen=True)
class VerificationRequest:
    """What a verification is run with: a build's wish (`SignatureFingerprint.verify`), or what
    a recorded one was run with (`verified_with`). Two are the same verification when equal."""

    samples: int
    atol: float
    rtol: float
    inputs: (
        str | None
    )  # the sample inputs' `.npz`, relative to the manifest's folder; None: generated
    tfjs: str  # the TensorFlow.js version that runs the output
    inputs_sha256: str | None = None  # the `.npz`'s digest, when there is one
    backend: str = "auto"  # the manifest's `verify.backend`: "auto", "cpu" or "wasm"

    def to_json_dict(self) -> dict[str, Any]:
        """As the state and cache entries write it (`verified_with`)."""
        data: dict[str, Any] = {
            "samples": self.samples,
            "atol": self.atol,
            "rtol": self.rtol,
            "inputs": self.inputs,
            "tfjs": self.tfjs,
            "backend": self.backend,
        }
        if self.inputs_sha256 is not None:
            data["inputs_sha256"] = self.inputs_sha256
        return data


def request_from_json(value: Any, where: str) -> VerificationRequest | None:
    """What a recorded verification was run with, read back (None: not said).

    An object of scalars (text, finite numbers, booleans, null), checked as such. One this
    version would not have written (a key missing, unknown, or of another type: another
    tfjs-build version wrote it, or it was edited) is no request of this version's: it reads as
    None, so the verification it comes with answers no request of this version (the output is
    verified again; a cache entry serves only builds that verify nothing). One without
    `backend` was written before the backend could be chosen, when every verification ran on
    the CPU backend: it reads as run with `backend: cpu`.
    """
    if value is None:
        return None
    data = as_scalar_dict(value, where)
    samples, atol, rtol = data.get("samples"), data.get("atol"), data.get("rtol")
    inputs, tfjs, digest = data.get("inputs"), data.get("tfjs"), data.get("inputs_sha256")
    backend = data.get("backend", "cpu")  # not said before it could be chosen: all ran on cpu
    if not (
        set(data) <= _REQUEST_KEYS | {"inputs_sha256", "backend"}
        and set(data) >= _REQUEST_KEYS
        and isinstance(samples, int)
        and not isinstance(samples, bool)
        and isinstance(atol, int | float)
        and not isinstance(atol, bool)
        and isinstance(rtol, int | float)
        and not isinstance(rtol, bool)
        and (inputs is None or isinstance(inputs, str))
        and isinstance(tfjs, str)
        and isinstance(backend, str)
        and ("inputs_sha256" not in data or isinstance(digest, str))  # never written as null
    ):
        return None
    return VerificationRequest(
        samples, atol, rtol, inputs, tfjs, digest if isinstance(digest, str) else None, backend
    )


_REQUEST_KEYS = {"samples", "atol", "rtol", "inputs", "tfjs"}


def json_float(value: float) -> float | str:
    """A float for JSON, which has no literal for NaN or the infinities."""
    if math.isfinite(value):
        return value
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
