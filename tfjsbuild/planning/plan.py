"""Pure planning: (targets, fingerprints, output checks, state) -> plan items with reasons.

Nothing here reads files or imports TensorFlow; the inputs are gathered by `api.py`.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tfjsbuild.building.state import SignatureRecord
from tfjsbuild.manifest.types import Checks, ConverterOptions, Location, Source
from tfjsbuild.planning.fingerprint import SignatureFingerprint
from tfjsbuild.sources.saved_model import explain_source_change

# verify: the recorded output is what this build would convert, but it has not been verified
# with the verification this run asks for: run it in TF.js as it is, without converting again.
Action = Literal["build", "verify", "up-to-date", "remove"]
NOT_VERIFIED_YET = "not verified yet (built with --no-verify or verify.enabled false)"


@dataclass(frozen=True)
class Target:
    """One (model, signature) the manifest asks for, resolved against its source."""

    manifest: Path
    model: str
    signature: str
    source: Source
    options: ConverterOptions
    output: str  # relative to the manifest's folder, POSIX separators
    # Where the manifest names the source and the signature, for errors found while converting.
    source_location: Location | None = None
    location: Location | None = None
    checks: Checks = field(default_factory=Checks)

    @property
    def key(self) -> str:
        return f"{self.model}:{self.signature}"


@dataclass(frozen=True)
class PlanItem:
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
    # "local" or "remote": the cache holds this build; it is restored instead of converted.
    cached: str | None = None

    @property
    def key(self) -> str:
        return f"{self.model}:{self.signature}"


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
    wanted = {target.key for target in targets} | {item.key for item in blocked}
    with_errors = {item.model for item in blocked}
    for target in targets:
        fingerprint = fingerprints[target.key]
        action, reasons = _decide(
            fingerprint,
            records.get(target.key),
            output_changes.get(target.key),
            fingerprint.verify if verify else {},
        )
        if force:
            action, reasons = "build", [*reasons, "forced"]
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
            )
        )
    if prune:
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
                    reasons=(
                        f"kept: model '{record.model}' has errors; fix them to prune"
                        if kept
                        else "removed from the manifest",
                    ),
                )
            )
    return items


def _decide(
    fingerprint: SignatureFingerprint,
    record: SignatureRecord | None,
    output_change: str | None,
    verification: Mapping[str, Any],
) -> tuple[Action, list[str]]:
    """Convert when the output's inputs changed; else verify when the recorded check does not
    answer the one wanted (`verification`, empty when none is)."""
    if record is None:
        return "build", ["first build"]
    reasons = _conversion_reasons(fingerprint, record)
    if output_change is not None:
        reasons.append(output_change)  # it is not the output that was recorded: convert again
    verify_reason = _verification_reason(verification, record)
    if reasons:
        if verify_reason is not None and verify_reason != NOT_VERIFIED_YET:
            reasons.append(verify_reason)  # the rebuild verifies with the new settings too
        return "build", reasons
    if verify_reason is not None:
        return "verify", [verify_reason]
    return "up-to-date", []


def _conversion_reasons(fingerprint: SignatureFingerprint, record: SignatureRecord) -> list[str]:
    """Why the recorded output is not what converting now would write (empty: it is)."""
    if record.fingerprint == fingerprint.digest:
        return []
    before, now = record.parts, fingerprint.parts
    if before.get("scheme") != now["scheme"]:
        # Other parts may mean something else in another scheme: comparing them would mislead.
        return [f"fingerprint scheme changed: {before.get('scheme', '?')} -> {now['scheme']}"]
    reasons: list[str] = []
    if before.get("tools") != now["tools"]:
        reasons.append(f"converter upgraded: {_tool_change(before.get('tools', ''), now['tools'])}")
    if before.get("source") != now["source"]:
        reasons += explain_source_change(
            before.get("source_kind", ""),
            record.details,
            now["source_kind"],
            dict(fingerprint.details),
        )
    if before.get("tags") != now["tags"]:
        reasons.append(f"tags changed: {before.get('tags')} -> {now['tags']}")
    if before.get("options") != now["options"]:
        changed = option_changes(
            {k: v for k, v in record.options.items() if k != "verify"},
            {k: v for k, v in fingerprint.options.items() if k != "verify"},
        )
        reasons.append(f"options changed: {', '.join(changed) or 'options'}")
    if before.get("output") != now["output"]:
        reasons.append(f"output moved: {before.get('output')} -> {now['output']}")
    if not reasons:
        reasons.append("fingerprint changed")
    return reasons


def _verification_reason(wanted: Mapping[str, Any], record: SignatureRecord) -> str | None:
    """Why the recorded verification does not answer the wanted one; None when it does.

    Nothing wanted (verification off, `--no-verify`): whatever was recorded stands.
    """
    if not wanted:
        return None
    verification, verified_with = record.verification, record.verified_with
    passed = isinstance(verification, dict) and verification.get("passed") is True
    if not passed or not isinstance(verified_with, dict):
        return NOT_VERIFIED_YET
    if dict(verified_with) == dict(wanted):
        return None
    return f"verification changed: {', '.join(option_changes(verified_with, wanted)) or 'settings'}"


def _tool_change(before: str, now: str) -> str:
    old = dict(part.split("=", 1) for part in before.split(",") if "=" in part)
    new = dict(part.split("=", 1) for part in now.split(",") if "=" in part)
    return ", ".join(
        f"{name} {old.get(name, '?')} -> {new.get(name, '?')}"
        for name in sorted(set(old) | set(new))
        if old.get(name) != new.get(name)
    )


def option_changes(
    before: Mapping[str, Any], now: Mapping[str, Any], prefix: str = ""
) -> list[str]:
    """Dotted key paths whose values differ, e.g. `quantization.uint8`."""
    changed = []
    for key in sorted(set(before) | set(now)):
        old, new = before.get(key), now.get(key)
        if old == new:
            continue
        if isinstance(old, dict) and isinstance(new, dict) and key == "quantization":
            changed += option_changes(old, new, f"{prefix}{key}.")
        else:
            changed.append(f"{prefix}{key}")
    return changed


def select(items: Sequence[PlanItem], selection: Collection[str]) -> list[PlanItem]:
    """Keep the items named by `MODEL` or `MODEL:SIGNATURE` selectors (removals are dropped)."""
    if not selection:
        return list(items)
    return [
        item
        for item in items
        if item.action != "remove" and (item.model in selection or item.key in selection)
    ]
