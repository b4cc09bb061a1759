"""Wording shared by the renderers: a quantization and a verification outcome as short text.

Plain functions from values to strings: nothing here prints, reads files or decides anything.
Console and HTML both use them, so the report reads the same in a terminal and in a page.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def quantization_text(quantization: Mapping[str, Sequence[str]]) -> str:
    if not quantization:
        return "none"
    return "; ".join(
        f"{dtype}: {', '.join(globs)}" for dtype, globs in sorted(quantization.items())
    )


def verification_text(verification: Mapping[str, Any] | None, *, short: bool = False) -> str:
    if verification is None:
        return "not verified"
    error = verification.get("max_abs_error", 0.0)
    shown = f"{error:.2g}" if isinstance(error, int | float) else str(error)
    verdict = "ok" if verification.get("passed") else "FAILED"
    if short:
        return f"{verdict} {shown}"
    return (
        f"{verdict}, max abs error {shown} ({verification.get('samples')} samples, "
        f"atol {verification.get('atol'):g}, rtol {verification.get('rtol'):g})"
    )
