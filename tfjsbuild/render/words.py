"""Wording shared by the renderers: a quantization and a verification outcome as short text.

Plain functions from values to strings: nothing here prints, reads files or decides anything.
Console and HTML both use them, so the report reads the same in a terminal and in a page.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from tfjsbuild.files.artifacts import TensorSpec
from tfjsbuild.verify.record import BackendRecord, VerificationRecord, json_float


def quantization_text(quantization: Mapping[str, Sequence[str]]) -> str:
    if not quantization:
        return "none"
    return "; ".join(
        f"{dtype}: {', '.join(globs)}" for dtype, globs in sorted(quantization.items())
    )


def tensor_text(tensor: TensorSpec) -> str:
    """`name: dtype [shape]` (`?` for an unknown dimension)."""
    if tensor.shape is None:
        return f"{tensor.name}: {tensor.dtype} unknown rank"
    shape = ", ".join("?" if dim is None else str(dim) for dim in tensor.shape)
    return f"{tensor.name}: {tensor.dtype} [{shape}]"


def verification_text(verification: VerificationRecord | None, *, short: bool = False) -> str:
    """Each backend's verdict: "ok on wasm, max abs error 6e-08 (3 samples, atol 0.0001, rtol
    0.001)", or for several "ok on cpu (6e-08), ok on wasm (6e-08), FAILED on webgl: output
    'logits' differs by 0.002"; short: "ok 6e-08 (wasm)"."""
    if verification is None:
        return "not verified"
    runs = verification.backends
    if not verification.ran:
        return f"not verified ({', '.join(run.backend for run in runs)} skipped)"
    if short:
        ok = ", ".join(run.backend for run in runs if run.passed)  # some ran: see above
        skipped = "".join(f", {run.backend} skipped" for run in runs if run.skipped)
        failed = [run for run in runs if not run.skipped and not run.passed]
        if not failed:
            return f"ok {_error_text(verification.max_abs_error)} ({ok}{skipped})"
        worst = _error_text(max(_sortable(run.max_abs_error) for run in failed))
        names = ", ".join(run.backend for run in failed)
        passed = f"; ok on {ok}" if any(run.passed for run in runs) else ""
        return f"FAILED on {names} ({worst}){passed}{skipped}"
    tolerances = {(run.atol, run.rtol) for run in runs}
    inline = len(tolerances) > 1  # each backend's own, or once for all
    parts = [_backend_text(run, several=len(runs) > 1, inline=inline) for run in runs]
    text = ", ".join(parts)
    if not inline:
        ((atol, rtol),) = tolerances
        return f"{text} ({verification.samples} samples, atol {atol:g}, rtol {rtol:g})"
    return f"{text} ({verification.samples} samples)"


def _backend_text(run: BackendRecord, *, several: bool, inline: bool) -> str:
    if run.skipped:
        return f"{run.backend} skipped ({run.note or 'not run'})"
    if run.note is not None and not run.outputs:  # it could not run the model
        return f"FAILED on {run.backend}: {run.note}"
    error = _error_text(run.max_abs_error)
    fallback = " (auto: wasm cannot run it)" if run.note is not None else ""
    if run.passed:
        text = f"ok on {run.backend}{fallback}" + (
            f" ({error})" if several else f", max abs error {error}"
        )
    else:
        worst = max(
            (output for output in run.outputs if not output.passed),
            key=lambda output: _sortable(output.max_abs_error),
        )
        text = f"FAILED on {run.backend}{fallback}: output '{worst.key}' differs by {error}"
    return f"{text} [atol {run.atol:g}, rtol {run.rtol:g}]" if inline else text


def _error_text(error: float) -> str:
    # NaN and the infinities as the recorded JSON spells them ("NaN", not "nan").
    return f"{error:.2g}" if math.isfinite(error) else str(json_float(error))


def _sortable(error: float) -> float:
    return math.inf if math.isnan(error) else error
