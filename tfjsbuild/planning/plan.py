"""Pure planning: (targets, fingerprints, output checks, state) -> plan items with reasons.

Nothing here reads files or imports TensorFlow; the inputs are gathered by `planner.py`, and
the words of every reason are `reasons.py`'s.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tfjsbuild.planning.fingerprint import SignatureFingerprint
from tfjsbuild.planning.reasons import (
    CANNOT_BUILD,
    FIRST_BUILD,
    FORCED,
    NOT_VERIFIED_YET,
    REMOVED,
    conversion_reasons,
    kept_with_errors,
    verification_reason,
)
from tfjsbuild.planning.targets import BlockedTarget, Target
from tfjsbuild.stores.caches import CacheHit
from tfjsbuild.stores.records import SignatureRecord
from tfjsbuild.verify.quantization import QuantizationChoice
from tfjsbuild.verify.request import VerificationRequest

# verify: the recorded output is what this build would convert, but it has not been verified
# with the verification this run asks for: run it in TF.js as it is, without converting again.
Action = Literal["build", "verify", "up-to-date", "remove"]


@dataclass(frozen=True)
class PlanItem:
    """One signature's action and the reasons for it, with what the build needs to do it."""

    manifest: Path
    model: str
    signature: str
    output: str
    action: Action
    reasons: tuple[str, ...]
    fingerprint: SignatureFingerprint | None = None
    target: Target | None = None
    # Known before converting that this signature cannot build (e.g. not in the SavedModel).
    blocked: str | None = None
    # The cache holds this build: the entry the plan found is restored instead of converting.
    cache_hit: CacheHit | None = None
    # What `quantization: auto` chose for the recorded output that stays (up to date, verify).
    quantization: QuantizationChoice | None = None

    @property
    def key(self) -> str:
        return f"{self.model}:{self.signature}"

    @property
    def cached(self) -> str | None:
        """The cache this build is restored from ("local" or "remote"); None: it converts."""
        return None if self.cache_hit is None else self.cache_hit.store.label


def blocked_item(blocked: BlockedTarget) -> PlanItem:
    """The plan's item for a target that cannot build: a failure the build reports as such."""
    return PlanItem(
        manifest=blocked.manifest,
        model=blocked.model,
        signature=blocked.signature,
        output="",
        action="build",
        reasons=(CANNOT_BUILD,),
        blocked=blocked.message,
    )


def plan_build(
    manifest: Path,
    targets: Sequence[Target],
    fingerprints: Mapping[str, SignatureFingerprint],
    output_changes: Mapping[str, str | None],
    records: Mapping[str, SignatureRecord],
    *,
    blocked: Sequence[PlanItem] = (),
    force: bool = False,
    prune: bool = True,
    verify: bool = True,
) -> list[PlanItem]:
    """Decide, per signature, build / verify / up-to-date / remove, and say why.

    `verify=False` (`--no-verify`): the recorded verification, whatever it is, does not matter.
    A model with any plan-time error (a blocked item) prunes nothing: a misspelt signature or a
    missing source must not delete what is deployed. Its recorded outputs are kept, and say so.
    """
    items: list[PlanItem] = list(blocked)
    for target in targets:
        fingerprint = fingerprints[target.key]
        action, reasons = _decide(
            fingerprint,
            records.get(target.key),
            output_changes.get(target.key),
            fingerprint.verify if verify else None,
        )
        if force:
            action, reasons = "build", [*reasons, FORCED]
        record = records.get(target.key)
        kept = record.quantization_choice if record is not None and action != "build" else None
        items.append(
            PlanItem(
                manifest=manifest,
                model=target.model,
                signature=target.signature,
                output=target.output,
                action=action,
                reasons=tuple(reasons),
                fingerprint=fingerprint,
                target=target,
                quantization=kept,
            )
        )
    if prune:
        wanted = {target.key for target in targets} | {item.key for item in blocked}
        items += _removals(manifest, records, wanted, {item.model for item in blocked})
    return items


def _removals(
    manifest: Path,
    records: Mapping[str, SignatureRecord],
    wanted: Collection[str],
    with_errors: Collection[str],
) -> list[PlanItem]:
    """Recorded signatures the manifest no longer asks for; kept while their model has errors."""
    items = []
    for key, record in sorted(records.items()):
        if key in wanted:
            continue
        kept = record.model in with_errors
        items.append(
            PlanItem(
                manifest=manifest,
                model=record.model,
                signature=record.signature,
                output=record.output,
                action="up-to-date" if kept else "remove",
                reasons=(kept_with_errors(record.model) if kept else REMOVED,),
            )
        )
    return items


def _decide(
    fingerprint: SignatureFingerprint,
    record: SignatureRecord | None,
    output_change: str | None,
    verification: VerificationRequest | None,
) -> tuple[Action, list[str]]:
    """Convert when the output's inputs changed; else verify when the recorded check does not
    answer the one wanted (`verification`, None when none is)."""
    if record is None:
        return "build", [FIRST_BUILD]
    reasons = conversion_reasons(fingerprint, record)
    if output_change is not None:
        reasons.append(output_change)  # it is not the output that was recorded: convert again
    verify_reason = verification_reason(verification, record)
    if reasons:
        if verify_reason is not None and verify_reason != NOT_VERIFIED_YET:
            reasons.append(verify_reason)  # the rebuild verifies with the new settings too
        return "build", reasons
    if verify_reason is not None:
        return "verify", [verify_reason]
    return "up-to-date", []


def select(items: Sequence[PlanItem], selection: Collection[str]) -> list[PlanItem]:
    """Keep the items named by `MODEL` or `MODEL:SIGNATURE` selectors (removals are dropped)."""
    if not selection:
        return list(items)
    return [
        item
        for item in items
        if item.action != "remove" and (item.model in selection or item.key in selection)
    ]
