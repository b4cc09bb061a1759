"""Parity between TensorFlow and TensorFlow.js: sample inputs, and outputs compared per key.

Inputs are generated from the converted signature's input specs, deterministically (seeded by
the model and signature names), unless the manifest gives real ones in a `.npz` file. The
outcome is a typed `Verification`; `as_record` gives what is recorded (`record.py`). No TensorFlow
here and no files written; the worker runs both sides.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from tfjsbuild.errors import BuildError
from tfjsbuild.files.artifacts import TensorSpec
from tfjsbuild.verify.record import BackendRecord, OutputRecord, VerificationRecord

# Unknown dimensions of a generated input: the first (batch) is 1, the others this.
UNKNOWN_DIM = 16
INT_RANGE = (0, 10)  # ids small enough for any embedding or vocabulary
WORDS = ("the", "cat", "dog", "fish", "a", "model", "unknown-word", "")


Array = npt.NDArray[Any]


class VerificationError(BuildError):
    """TensorFlow.js answered differently from TensorFlow (or could not be compared)."""


@dataclass(frozen=True)
class OutputComparison:
    """One output key compared: its largest errors, and whether it is within the tolerance."""

    key: str
    max_abs_error: float
    max_rel_error: float
    passed: bool
    sample: int  # the sample with the largest error (0-based)


@dataclass(frozen=True)
class BackendVerification:
    """One TensorFlow.js backend's answers compared with TensorFlow's, or why there are none."""

    backend: str  # the backend that ran it (or would have): "cpu", "wasm" or "webgl"
    atol: float
    rtol: float
    outputs: tuple[OutputComparison, ...] = ()
    seconds: float | None = None  # TF.js's own: loading the model and running the samples
    error: str | None = None  # why this backend could not run the model (then no outputs)
    skipped: bool = False  # not run here (a browser for webgl not found, not required)
    note: str | None = None  # why it was skipped, or why `auto` ran the CPU backend

    @property
    def passed(self) -> bool:
        return not self.skipped and self.error is None and all(c.passed for c in self.outputs)

    def as_record(self) -> BackendRecord:
        """Errors rounded to 9 digits, without the worst samples (the message names them)."""
        compared = self.error is None and not self.skipped
        max_abs_error = max((c.max_abs_error for c in self.outputs), default=0.0)
        return BackendRecord(
            backend=self.backend,
            passed=self.passed,
            atol=self.atol,
            rtol=self.rtol,
            max_abs_error=round(max_abs_error, 9) if compared else math.nan,
            outputs=tuple(
                OutputRecord(c.key, round(c.max_abs_error, 9), round(c.max_rel_error, 9), c.passed)
                for c in self.outputs
            ),
            seconds=None if self.seconds is None else round(self.seconds, 3),
            skipped=self.skipped,
            note=self.error if self.error is not None else self.note,
        )


@dataclass(frozen=True)
class Verification:
    """One signature's TensorFlow.js parity check: on each backend, each output compared over
    every sample."""

    samples: int
    inputs: str  # the `.npz` file given, or "generated"
    backends: tuple[BackendVerification, ...]
    kept: str = "The previous output is kept."  # what stays in place when it failed

    @property
    def message(self) -> str | None:
        """Why it failed, for the build's error; None when no backend that ran failed (every
        one passed, or none could run: the record says so, and the build warns)."""
        failed = [run for run in self.backends if not run.skipped and not run.passed]
        return failure_message(failed, self.samples, kept=self.kept) if failed else None

    def as_record(self) -> VerificationRecord:
        """What the state, cache entries, the asset index and reports keep of it (without the
        message, which the build's error carries)."""
        return VerificationRecord(
            self.samples, self.inputs, tuple(run.as_record() for run in self.backends)
        )


def generate_inputs(
    specs: Sequence[TensorSpec], samples: int, seed_text: str
) -> list[dict[str, Array]]:
    """`samples` input sets for `specs`, the same for the same seed text."""
    seed = int.from_bytes(hashlib.sha256(seed_text.encode()).digest()[:8], "little")
    rng = np.random.default_rng(seed)
    generated = []
    for _ in range(samples):
        sample = {}
        for spec in specs:
            shape = _concrete_shape(spec.shape)
            sample[spec.name] = _random_tensor(rng, spec.dtype, shape, spec.name)
        generated.append(sample)
    return generated


def _concrete_shape(shape: Sequence[int | None] | None) -> list[int]:
    if shape is None:
        return [1, UNKNOWN_DIM]  # unknown rank: a batch of one vector
    return [
        (1 if index == 0 else UNKNOWN_DIM) if dim is None or dim < 0 else int(dim)
        for index, dim in enumerate(shape)
    ]


def _random_tensor(rng: np.random.Generator, dtype: str, shape: list[int], name: str) -> Array:
    if dtype in ("float32", "float16", "float64", "bfloat16"):
        return rng.uniform(-1.0, 1.0, shape).astype("float32")
    if dtype in ("int32", "int64", "int16", "int8", "uint8", "uint16"):
        return rng.integers(*INT_RANGE, size=shape).astype("int32")
    if dtype == "bool":
        return rng.integers(0, 2, size=shape).astype(bool)
    if dtype == "string":
        return np.array(rng.choice(WORDS, size=shape), dtype=object)
    raise VerificationError(
        f"cannot generate values for input '{name}' of dtype {dtype}; give real inputs with "
        "`verify: {inputs: file.npz}`"
    )


def load_inputs(path: Path, specs: Sequence[TensorSpec]) -> list[dict[str, Array]]:
    """One sample from a `.npz` file keyed by input name (arrays as fed, batch included)."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError) as error:
        raise VerificationError(f"cannot read verification inputs {path}: {error}") from error
    names = [spec.name for spec in specs]
    missing = [name for name in names if name not in arrays]
    if missing:
        raise VerificationError(
            f"{path} has no array for input {', '.join(missing)} (it has: "
            f"{', '.join(sorted(arrays)) or 'none'}); key each array by its input name"
        )
    return [{name: arrays[name] for name in names}]


def compare(
    expected: Sequence[Mapping[str, Array]],
    got: Sequence[Mapping[str, Array]],
    atol: float,
    rtol: float,
) -> list[OutputComparison]:
    """Per output key, over every sample: |got - expected| <= atol + rtol * |expected|."""
    keys = sorted(expected[0])
    missing = [key for key in keys if key not in got[0]]
    if missing:
        raise VerificationError(
            f"TensorFlow.js returned no output {', '.join(missing)} (it returned: "
            f"{', '.join(sorted(got[0]))})"
        )
    comparisons = []
    for key in keys:
        per_sample = [
            _compare_one(key, want[key], have[key], atol, rtol, index)
            for index, (want, have) in enumerate(zip(expected, got, strict=True))
        ]
        # Report the sample that failed worst (or, if all passed, the largest error).
        worst = max(per_sample, key=lambda c: (not c.passed, c.max_abs_error))
        comparisons.append(
            OutputComparison(
                key,
                worst.max_abs_error,
                max(c.max_rel_error for c in per_sample),
                all(c.passed for c in per_sample),
                worst.sample,
            )
        )
    return comparisons


def _compare_one(
    key: str, want: Array, got: Array, atol: float, rtol: float, sample: int
) -> OutputComparison:
    want = np.asarray(want)
    got = np.asarray(got)
    if want.shape != got.shape:
        raise VerificationError(
            f"output '{key}' has shape {list(got.shape)} in TensorFlow.js but "
            f"{list(want.shape)} in TensorFlow"
        )
    if want.dtype.kind not in "fc":
        # ids, booleans and strings must match exactly
        if want.dtype.kind in "USO":
            same = np.array_equal(want.astype(str), got.astype(str))
        else:
            same = np.array_equal(want, got)
        mismatches = 0.0 if same else 1.0
        return OutputComparison(key, mismatches, mismatches, same, sample)
    want64 = want.astype("float64")
    got64 = got.astype("float64")
    both_nan = np.isnan(want64) & np.isnan(got64)
    same_inf = np.isinf(want64) & (want64 == got64)
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.where(both_nan | same_inf, 0.0, np.abs(got64 - want64))
        diff = np.where(np.isnan(diff), math.inf, diff)  # NaN on one side only
        ok = diff <= atol + rtol * np.abs(np.where(np.isfinite(want64), want64, 0.0))
        rel = diff / np.maximum(np.abs(want64), np.finfo("float32").tiny)
    max_abs = float(diff.max()) if diff.size else 0.0
    max_rel = float(rel.max()) if rel.size else 0.0
    return OutputComparison(key, max_abs, max_rel, bool(ok.all()), sample)


def failure_message(
    failed: Sequence[BackendVerification],
    samples: int,
    *,
    kept: str = "The previous output is kept.",
) -> str:
    """One sentence per backend that failed, what stays in place, and what usually helps."""
    sentences = []
    for run in failed:
        if run.error is not None:
            sentences.append(f"{run.error[0].upper()}{run.error[1:]}.")
            continue
        parts = [
            f"output '{c.key}' differs by up to {c.max_abs_error:.4g} (relative "
            f"{c.max_rel_error:.3g}) on sample {c.sample + 1} of {samples}"
            for c in run.outputs
            if not c.passed
        ]
        sentences.append(
            f"TensorFlow.js ({run.backend} backend) does not match TensorFlow: "
            + "; ".join(parts)
            + f" (allowed: atol {run.atol:g} + rtol {run.rtol:g} x |expected|)."
        )
    text = " ".join([*sentences, kept])
    if any(run.error is None for run in failed):
        text += (
            " Quantization and float16 overflow are the usual causes: quantize fewer weights, "
            "loosen verify.atol/rtol for this signature (or one backend's, in verify.backends), "
            "or give real inputs with verify.inputs"
        )
    return text
