"""Quantizing a converted output's weights after the fact, the static check of their ranges,
and `quantization: auto`'s choice among verified candidates.

tensorflowjs quantizes only where it writes weight shards (`write_weights`), from the float32
values; nothing in the graph depends on it. So a signature with quantization is converted once
at float32, its weight ranges checked, and each quantized setting written from those float32
weights into a folder of its own: the same bytes tensorflowjs would write, without converting
again per candidate. `auto`'s candidates are every weight at one dtype, or mixed (the weights
the range check names kept wider), verified smallest first by their weight bytes. Imports
tensorflowjs and numpy; verifies nothing itself (the task gives `choose` its verification).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tensorflowjs import quantization as tfjs_quantization
from tensorflowjs import read_weights, write_weights

from tfjsbuild.errors import SignatureError
from tfjsbuild.files.artifacts import check_graph_model
from tfjsbuild.manifest.types import ConverterOptions
from tfjsbuild.verify.quantization import (
    AUTO_CANDIDATES,
    BYTES_PER_ELEMENT,
    FLOAT32,
    CandidateRecord,
    QuantizationChoice,
    WeightRange,
    range_problems,
    range_warnings,
)
from tfjsbuild.worker.timing import timed
from tfjsbuild.worker.write import canonical_model_json

if TYPE_CHECKING:
    from tfjsbuild.verify.compare import Verification
    from tfjsbuild.worker.loaded import LoadedSource

WeightGroups = list[list[dict[str, Any]]]
DtypeMap = Mapping[str, "list[str] | bool"]


@dataclass(frozen=True)
class Float32Output:
    """A converted output with float32 weights: its folder, weights, and their ranges."""

    folder: Path
    groups: WeightGroups
    ranges: tuple[WeightRange, ...]

    @classmethod
    def read(cls, folder: Path) -> Float32Output:
        manifest = json.loads((folder / "model.json").read_text("utf-8"))["weightsManifest"]
        groups = read_weights.read_weights(manifest, str(folder))
        ranges = tuple(
            WeightRange(entry["name"], float(np.min(data)), float(np.max(data)), int(data.size))
            for group in groups
            for entry in group
            if (data := entry["data"]).dtype == np.float32 and data.size
        )
        return cls(folder, groups, ranges)

    def dtypes(self, dtype_map: DtypeMap) -> dict[str, str]:
        """Weight name -> the dtype `dtype_map` quantizes it to, as tensorflowjs matches globs."""
        names = [entry["name"] for group in self.groups for entry in group]
        matched = tfjs_quantization.map_layers_to_quantization_dtype(names, dict(dtype_map))
        return {name: np.dtype(dtype).name for name, dtype in matched.items()}

    def problems(self, dtype_map: DtypeMap, atol: float | None) -> dict[str, list[str]]:
        """dtype -> the weights it cannot hold (within `atol` for uint8 and uint16)."""
        return range_problems(self.ranges, self.dtypes(dtype_map), atol)

    def write_quantized(self, target: Path, dtype_map: DtypeMap, shard_size: int) -> int:
        """This output with its weights quantized by `dtype_map`, written into `target` (which
        must not exist); its weight bytes."""
        weight_files = {
            path
            for group in json.loads((self.folder / "model.json").read_text("utf-8"))[
                "weightsManifest"
            ]
            for path in group["paths"]
        }
        shutil.copytree(
            self.folder, target, ignore=lambda _, names: [n for n in names if n in weight_files]
        )
        # write_weights converts entries in place: each write gets its own copies.
        groups = [[dict(entry) for entry in group] for group in self.groups]
        manifest = write_weights.write_weights(
            groups,
            str(target),
            shard_size_bytes=shard_size,
            write_manifest=False,
            quantization_dtype_map=dict(dtype_map) or None,
        )
        model_json = target / "model.json"
        model = json.loads(model_json.read_text("utf-8"))
        model["weightsManifest"] = manifest
        model_json.write_text(json.dumps(model, allow_nan=False), "utf-8")
        canonical_model_json(target)
        return weight_bytes(target)


def weight_bytes(folder: Path) -> int:
    """The bytes of an output's weight shards (what quantization shrinks)."""
    written = check_graph_model(folder)
    return sum(f.size for f in written.files if f.path != "model.json")


def convert_quantized(
    loaded: LoadedSource,
    signature: str,
    staged: Path,
    options: ConverterOptions,
    atol: float | None,
    *,
    verifying: bool,
    timings: dict[str, float],
) -> tuple[str, ...]:
    """Convert into `staged`: with quantization, at float32 first, then the weights quantized
    from the float32 ones after their ranges are checked (`auto`: left at float32 for
    `choose`). The static check's warnings."""
    if not options.quantization and not options.auto_quantization:
        loaded.convert(signature, staged, options, timings)
        return ()
    if options.auto_quantization and not verifying:
        raise SignatureError(
            "quantization: auto chooses by verifying in TensorFlow.js, and this build does "
            "not verify; run it without --no-verify, or give dtype -> weight globs"
        )
    loaded.convert(
        signature, staged, replace(options, quantization=(), auto_quantization=False), timings
    )
    if options.auto_quantization:
        return ()  # `choose` checks the ranges as it goes
    with timed(timings, "quantize"):
        dtype_map = options.quantization_dtype_map()
        size = options.weight_shard_size_bytes
        return tuple(quantize_in_place(staged, dtype_map, size, atol))


def quantize_in_place(
    staged: Path, dtype_map: DtypeMap, shard_size: int, atol: float | None
) -> list[str]:
    """Quantize a float32 output in `staged` by `dtype_map`; the static check's findings
    (dtype -> weights it cannot hold) are returned as warnings' material, before anything is
    verified."""
    float32 = Float32Output.read(staged)
    warnings = range_warnings(float32.problems(dtype_map, atol))
    quantized = staged.with_name(staged.name + ".quantized")
    float32.write_quantized(quantized, dtype_map, shard_size)
    shutil.rmtree(staged)
    os.rename(quantized, staged)
    return warnings


def choose(
    staged: Path,
    shard_size: int,
    atol: float | None,
    verify: Callable[[Path], Verification],
) -> tuple[Verification, QuantizationChoice]:
    """`quantization: auto`: the float32 output in `staged` replaced by the smallest candidate
    that passes `verify`, smallest first: uint8, uint16, float16 for every weight, each one the
    range check rules out replaced by its mixed setting (the weights it names kept at float16,
    or float32 beyond float16), then float32. When none passes, `staged` keeps float32 and its
    failed verification is returned."""
    float32 = Float32Output.read(staged)
    float32_bytes = weight_bytes(staged)
    tried, candidates = _candidates(float32, atol)
    for index, candidate in enumerate(candidates):
        if candidate.setting == FLOAT32:
            verification = verify(staged)
            tried.append(_tried(candidate, float32_bytes, verification))
        else:
            folder = staged.with_name(f"{staged.name}.candidate")
            written = float32.write_quantized(folder, _dtype_map(candidate, float32), shard_size)
            verification = verify(folder)
            tried.append(_tried(candidate, written, verification))
            if verification.message is None:
                shutil.rmtree(staged)
                os.rename(folder, staged)
            else:
                shutil.rmtree(folder)
        if verification.message is None:
            tried += candidates[index + 1 :]  # smaller ones failed: these are not needed
            break
    chosen = next((c.setting for c in tried if c.outcome == "passed"), None)
    return verification, QuantizationChoice(chosen, float32_bytes, tuple(tried))


def _candidates(
    float32: Float32Output, atol: float | None
) -> tuple[list[CandidateRecord], list[CandidateRecord]]:
    """The uniform settings the range check rules out (skipped), and the candidates to verify,
    smallest first (by their weights' bytes; in this order where equal)."""
    skipped: list[CandidateRecord] = []
    candidates = []
    for setting in AUTO_CANDIDATES[:-1]:
        offenders = [w for w in float32.ranges if w.problem(setting, atol) is not None]
        if not offenders:
            candidates.append(CandidateRecord(setting, "not tried"))
            continue
        named = offenders[0].problem(setting, atol)
        more = f" (and {len(offenders) - 1} more)" if len(offenders) > 1 else ""
        skipped.append(CandidateRecord(setting, "skipped", note=f"{named}{more}"))
        if len(offenders) < len(float32.ranges):  # else it is the wider setting, whole
            kept = tuple(
                (
                    w.name,
                    FLOAT32 if setting == "float16" or w.problem("float16", atol) else "float16",
                )
                for w in offenders
            )
            candidates.append(CandidateRecord(setting, "not tried", kept=kept))
    candidates.append(CandidateRecord(FLOAT32, "not tried"))
    sizes = {w.name: w.size for w in float32.ranges}

    def float_bytes(candidate: CandidateRecord) -> int:
        kept = dict(candidate.kept)
        return sum(
            size * BYTES_PER_ELEMENT[kept.get(name, candidate.setting)]
            for name, size in sizes.items()
        )

    return skipped, sorted(candidates, key=float_bytes)  # stable: equal sizes keep their order


def _dtype_map(candidate: CandidateRecord, float32: Float32Output) -> dict[str, list[str] | bool]:
    """tensorflowjs's `quantization_dtype_map` for a candidate: a mixed one names every float32
    weight (its names escaped: globs), a kept one under its own dtype, or under none (float32)."""
    if not candidate.kept:
        return {candidate.setting: True}
    kept = dict(candidate.kept)
    by_dtype: dict[str, list[str] | bool] = {}
    for weight in float32.ranges:
        dtype = kept.get(weight.name, candidate.setting)
        if dtype != FLOAT32:
            names = by_dtype.setdefault(dtype, [])
            assert isinstance(names, list)
            names.append(re.sub(r"([*?[])", r"[\1]", weight.name))
    return by_dtype


def _tried(candidate: CandidateRecord, written: int, verification: Verification) -> CandidateRecord:
    failed = verification.message
    return replace(
        candidate,
        outcome="failed" if failed is not None else "passed",
        weight_bytes=written,
        max_abs_error=verification.as_record().max_abs_error,
        note=None if failed is None else failed.split(". ")[0],
    )
