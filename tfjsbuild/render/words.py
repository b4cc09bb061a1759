"""Wording shared by the renderers: quantization, tensors, verification and change as short text.

Plain functions from values to strings: nothing here prints, reads files or decides anything.
Console and HTML both use them, so the report reads the same in a terminal and in a page.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from tfjsbuild.building.results import ReportRow, distinct_bytes
from tfjsbuild.files.artifacts import TensorSpec, format_bytes
from tfjsbuild.stores.build_history import PreviousBuild, error_of
from tfjsbuild.verify.quantization import QuantizationChoice
from tfjsbuild.verify.record import BackendRecord, VerificationRecord, json_float


def quantization_text(
    quantization: Mapping[str, Sequence[str]], choice: QuantizationChoice | None = None
) -> str:
    """`uint8: *`, or what `quantization: auto` chose: `auto: uint8 (-74% weights vs float32)`."""
    if choice is not None:
        return f"auto: {choice.summary()}"
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


def size_change_text(size: int, content_hash: str, previous: PreviousBuild | None) -> str:
    """Size since the output this one replaced: "+1.2 KB (+3.4%)", "same bytes", "first build"."""
    if previous is None:
        return "first build"
    if content_hash == previous.content_hash:
        return "same bytes"
    delta = size - previous.bytes
    if delta == 0:
        return "same size"
    sign = "+" if delta > 0 else "-"
    percent = f" ({sign}{abs(delta) / previous.bytes:.1%})" if previous.bytes else ""
    return f"{sign}{format_bytes(abs(delta))}{percent}"


def error_change_text(
    verification: VerificationRecord | None, previous: PreviousBuild | None
) -> str | None:
    """The verification error since the output this one replaced ("error 6e-08 -> 2e-05"); None
    when neither was verified or the error did not change."""
    if previous is None:
        return None
    before, now = previous.max_abs_error, error_of(verification)
    if before is None and now is None:
        return None
    if before is not None and now is not None and _error_text(before) == _error_text(now):
        return None
    was = "not verified" if before is None else _error_text(before)
    return f"error {was} -> {'not verified' if now is None else _error_text(now)}"


def tools_text(tools: Mapping[str, str]) -> str:
    """Each tool and its version ("tensorflow 2.19.0, tensorflowjs 4.22.0"), in the order given."""
    return ", ".join(f"{name} {version}" for name, version in tools.items())


def duration_text(seconds: float) -> str:
    """`45 s`, `12 min`, `3.5 h`: how long ago, or for how long."""
    if seconds < 120:
        return f"{max(0.0, seconds):.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def time_text(built_at: str | None) -> str:
    """A recorded UTC time to the minute ("2026-11-28 09:40 UTC"); "unknown" in older states."""
    return "unknown" if built_at is None else f"{built_at[:10]} {built_at[11:16]} UTC"


def total_text(rows: Sequence[ReportRow]) -> str:
    """All the rows' bytes, shared weight shards counted once: `1.2 MB (3.4 MB unshared)`."""
    total = distinct_bytes(rows)
    each = sum(row.bytes for row in rows)
    return format_bytes(total) + (f" ({format_bytes(each)} unshared)" if each != total else "")
