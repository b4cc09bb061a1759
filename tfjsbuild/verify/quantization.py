"""Quantization against the tolerance: the static check of weight ranges, and what
`quantization: auto` tried and chose, as recorded.

The static check needs only each weight's range (the worker reads them from the float32 weights
it wrote): a weight beyond float16's largest value becomes infinite under float16, and a weight
whose range, cut into uint8's (or uint16's) steps, rounds its values by more than the
verification's `atol` (half a step) cannot keep them within it. (A whole step, as first
proposed, ruled out uint8 for the example's `logits`, which verifies at uint8.) `QuantizationChoice` is what the state, cache entries, `--json`, the
asset index and the report keep of an `auto` choice; its JSON read back untrusted is checked
here (`choice_from_json`).

Nothing here reads files or imports numpy or TensorFlow.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tfjsbuild.files.readback import InvalidData, as_dict, as_int, as_list, as_str
from tfjsbuild.verify.record import error_from_json, json_float

FLOAT16_MAX = 65504.0
# The distinct values a weight's range is cut into (tensorflowjs's affine quantization).
UINT_STEPS = {"uint8": 255, "uint16": 65535}
FLOAT32 = "float32"  # no quantization
BYTES_PER_ELEMENT = {"uint8": 1, "uint16": 2, "float16": 2, FLOAT32: 4}
# `quantization: auto` tries these, smallest first, and keeps the first that passes.
AUTO_CANDIDATES = ("uint8", "uint16", "float16", FLOAT32)
OUTCOMES = ("passed", "failed", "skipped", "not tried")
NAMED_WEIGHTS = 3  # a warning names this many weights, the widest first


@dataclass(frozen=True)
class WeightRange:
    """One float32 weight's smallest and largest value, named as model.json names it."""

    name: str
    minimum: float
    maximum: float
    size: int = 0  # its elements: what a dtype's bytes per element are counted over

    def problem(self, dtype: str, atol: float | None) -> str | None:
        """Why `dtype` cannot hold this weight within `atol` (None: it can, or no atol)."""
        shown = f"'{self.name}' ranges over [{self.minimum:.4g}, {self.maximum:.4g}]"
        if dtype == "float16" and max(abs(self.minimum), abs(self.maximum)) > FLOAT16_MAX:
            return f"{shown}, beyond float16's largest value {FLOAT16_MAX:.0f}"
        if dtype in UINT_STEPS and atol is not None:
            # Rounded to the nearest of its steps, a value moves by up to half a step.
            rounding = (self.maximum - self.minimum) / UINT_STEPS[dtype] / 2
            if rounding > atol:
                return (
                    f"{shown}: {dtype} rounds it by up to {rounding:.2g}, more than verify.atol "
                    f"{atol:g}"
                )
        return None


def range_problems(
    ranges: Sequence[WeightRange], dtypes: Mapping[str, str], atol: float | None
) -> dict[str, list[str]]:
    """dtype -> what each weight quantized to it (`dtypes`: weight name -> dtype) cannot hold,
    the widest weight first."""
    found: dict[str, list[tuple[float, str]]] = {}
    for weight in ranges:
        dtype = dtypes.get(weight.name)
        problem = None if dtype is None else weight.problem(dtype, atol)
        if dtype is not None and problem is not None:
            found.setdefault(dtype, []).append((weight.minimum - weight.maximum, problem))
    return {dtype: [text for _, text in sorted(items)] for dtype, items in found.items()}


def range_warnings(problems: Mapping[str, Sequence[str]]) -> list[str]:
    """The static check's warnings, one per dtype, naming the weights and what to do."""
    remedies = {
        "float16": "under float16 it becomes infinite; keep it float32 (leave it out of "
        "quantization.float16) or quantize it to uint16",
        "uint8": "quantize it to uint16 or float16 (or leave it out of quantization.uint8), "
        "or raise verify.atol",
        "uint16": "quantize it to float16 (or leave it out of quantization.uint16), or raise "
        "verify.atol",
    }
    warnings = []
    for dtype, texts in sorted(problems.items()):
        named = "; ".join(texts[:NAMED_WEIGHTS])
        more = f" (and {len(texts) - NAMED_WEIGHTS} more)" if len(texts) > NAMED_WEIGHTS else ""
        plural = "weights" if len(texts) > 1 else "weight"
        warnings.append(
            f"{len(texts)} {plural} may not survive {dtype} quantization: {named}{more}; "
            f"{remedies[dtype]}"
        )
    return warnings


@dataclass(frozen=True)
class CandidateRecord:
    """One setting `auto` considered: every weight at `setting` ("float32": none), but the
    weights in `kept` (a mixed setting: those the range check ruled out, at a wider dtype)."""

    setting: str
    outcome: str  # passed, failed (verification), skipped (the static check), not tried
    weight_bytes: int | None = None  # its weight shards; None when not written
    max_abs_error: float | None = None  # over every backend that ran; None when not verified
    note: str | None = None  # why it was skipped or failed, in short
    kept: tuple[tuple[str, str], ...] = ()  # weight name -> float16 or float32

    @property
    def label(self) -> str:
        """`uint8`, or `uint8 (1 weight kept at float16)` for a mixed setting."""
        if not self.kept:
            return self.setting
        dtypes = " and ".join(sorted({dtype for _, dtype in self.kept}))
        plural = "weights" if len(self.kept) > 1 else "weight"
        return f"{self.setting} ({len(self.kept)} {plural} kept at {dtypes})"


@dataclass(frozen=True)
class QuantizationChoice:
    """What `quantization: auto` tried, in order, and which setting it kept (None: none)."""

    chosen: str | None
    float32_weight_bytes: int
    candidates: tuple[CandidateRecord, ...]

    @property
    def kept(self) -> CandidateRecord | None:
        """The candidate that passed (the first: the smallest); None when none did."""
        return next((c for c in self.candidates if c.outcome == "passed"), None)

    @property
    def weight_bytes(self) -> int | None:
        """The chosen setting's weight bytes; None when none was kept."""
        return None if self.kept is None else self.kept.weight_bytes

    def summary(self) -> str:
        """`uint8 (-74% weights vs float32)`, as the build, plan and report say it."""
        chosen = None if self.kept is None else self.kept.label
        weights = self.weight_bytes
        if chosen is None:
            return "none passed verification"
        if chosen == FLOAT32 or weights is None or not self.float32_weight_bytes:
            return f"{chosen} (no smaller setting passed the range check and verification)"
        if weights >= self.float32_weight_bytes:  # no float32 weights (a table's strings)
            return f"{chosen} (no smaller than float32: nothing to quantize)"
        saved = 1 - weights / self.float32_weight_bytes
        return f"{chosen} (-{saved:.0%} weights vs float32)"

    def to_json_dict(self) -> dict[str, Any]:
        """As the state, cache entries, --json, the report and the asset index write it."""
        return {
            "chosen": self.chosen,
            "summary": self.summary(),
            "float32_weight_bytes": self.float32_weight_bytes,
            "weight_bytes": self.weight_bytes,
            "candidates": [
                {
                    "setting": candidate.setting,
                    "outcome": candidate.outcome,
                    "weight_bytes": candidate.weight_bytes,
                    "max_abs_error": None
                    if candidate.max_abs_error is None
                    else json_float(candidate.max_abs_error),
                    "note": candidate.note,
                    "kept": dict(candidate.kept),
                }
                for candidate in self.candidates
            ],
        }


def choice_json(choice: QuantizationChoice | None) -> dict[str, Any] | None:
    return None if choice is None else choice.to_json_dict()


def choice_from_json(value: Any, where: str) -> QuantizationChoice | None:
    """A recorded choice read back (None: none recorded), checked key by key; raises
    InvalidData naming the key path. `summary` and `weight_bytes` are derived, not read."""
    if value is None:
        return None
    data = as_dict(value, where)
    chosen = data.get("chosen")
    candidates = tuple(
        _candidate_from_json(item, f"{where}.candidates[{index}]")
        for index, item in enumerate(as_list(data.get("candidates"), f"{where}.candidates"))
    )
    if chosen is not None and as_str(chosen, f"{where}.chosen") not in {
        candidate.setting for candidate in candidates if candidate.outcome == "passed"
    }:
        raise InvalidData(f"{where}.chosen", f"{chosen!r} is no candidate that passed")
    return QuantizationChoice(
        chosen,
        as_int(data.get("float32_weight_bytes"), f"{where}.float32_weight_bytes"),
        candidates,
    )


def _candidate_from_json(value: Any, where: str) -> CandidateRecord:
    data = as_dict(value, where)
    setting = as_str(data.get("setting"), f"{where}.setting")
    if setting not in AUTO_CANDIDATES:
        raise InvalidData(f"{where}.setting", f"{setting!r} is not one of {AUTO_CANDIDATES}")
    outcome = as_str(data.get("outcome"), f"{where}.outcome")
    if outcome not in OUTCOMES:
        raise InvalidData(f"{where}.outcome", f"{outcome!r} is not one of {OUTCOMES}")
    weights, error, note = data.get("weight_bytes"), data.get("max_abs_error"), data.get("note")
    kept = []
    for name, dtype in as_dict(data.get("kept", {}), f"{where}.kept").items():
        if dtype not in ("float16", FLOAT32):
            raise InvalidData(f"{where}.kept.{name}", f"{dtype!r} is not float16 or float32")
        kept.append((as_str(name, f"{where}.kept"), dtype))
    return CandidateRecord(
        setting,
        outcome,
        None if weights is None else as_int(weights, f"{where}.weight_bytes"),
        None if error is None else error_from_json(error, f"{where}.max_abs_error"),
        None if note is None else as_str(note, f"{where}.note"),
        tuple(kept),
    )
