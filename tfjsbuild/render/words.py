"""Wording shared by the renderers: a quantization and a verification outcome as short text.

Plain functions from values to strings: nothing here prints, reads files or decides anything.
Console and HTML both use them, so the report reads the same in a terminal and in a page.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from tfjsbuild.verify.record import VerificationRecord, json_float


def quantization_text(quantization: Mapping[str, Sequence[str]]) -> str:
    if not quantization:
        return "none"
    return "; ".join(
        f"{dtype}: {', '.join(globs)}" for dtype, globs in sorted(quantization.items())
    )


def verification_text(verification: VerificationRecord | None, *, short: bool = False) -> str:
    if verification is None:
        return "not verified"
    error = verification.max_abs_error
    # NaN and the infinities as the recorded JSON spells them ("NaN", not "nan").
    shown = f"{error:.2g}" if math.isfinite(error) else str(json_float(error))
    verdict = "ok" if verification.passed else "FAILED"
    if short:
        return f"{verdict} {shown} ({verification.backend})"
    return (
        f"{verdict} on {verification.backend}, max abs error {shown} ({verification.samples} "
        f"samples, atol {verification.atol:g}, rtol {verification.rtol:g})"
    )
