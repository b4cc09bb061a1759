"""Every reason a plan gives for an action: the words after "because:" in `tfjs-build plan`.

Pure wording over values the planner already has (fingerprint parts, recorded parts, graph
details); nothing here reads files, and nothing here decides an action.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tfjsbuild.planning.fingerprint import SignatureFingerprint
from tfjsbuild.sources.saved_model import WHOLE_MODEL, changed_captures
from tfjsbuild.stores.records import SignatureRecord
from tfjsbuild.verify.record import VerificationRecord
from tfjsbuild.verify.request import VerificationRequest, skipped_runnable

FIRST_BUILD = "first build"
FORCED = "forced"
CANNOT_BUILD = "cannot build"
REMOVED = "removed from the manifest"
NOT_VERIFIED_YET = "not verified yet (built with --no-verify or verify.enabled false)"
AUTO_CHOOSES_AGAIN = "quantization: auto chooses again (its choice depends on the verification)"
_CAPTURE_LABELS = {
    "variable": "weights changed",
    "asset": "assets changed",
    "constant": "constants changed",
}


def kept_with_errors(model: str) -> str:
    return f"kept: model '{model}' has errors; fix them to prune"


def conversion_reasons(fingerprint: SignatureFingerprint, record: SignatureRecord) -> list[str]:
    """Why the recorded output is not what converting now would write (empty: it is)."""
    if record.fingerprint == fingerprint.digest:
        return []
    before, now = record.parts, fingerprint.parts
    if before.get("scheme") != now.scheme:
        # Other parts may mean something else in another scheme: comparing them would mislead.
        return [f"fingerprint scheme changed: {before.get('scheme', '?')} -> {now.scheme}"]
    reasons: list[str] = []
    if before.get("tools") != now.tools:
        reasons.append(f"converter upgraded: {tool_change(before.get('tools', ''), now.tools)}")
    if before.get("source") != now.source:
        reasons += source_change(
            before.get("source_kind", ""), record.details, now.source_kind, fingerprint.details
        )
    if before.get("tags") != now.tags:
        reasons.append(f"tags changed: {before.get('tags')} -> {now.tags}")
    if before.get("options") != now.options:
        changed = option_changes(
            # An older record may hold `verify` (before fingerprint scheme 2): not an option.
            {k: v for k, v in record.options.to_json_dict().items() if k != "verify"},
            fingerprint.options.as_dict(),
        )
        reasons.append(f"options changed: {', '.join(changed) or 'options'}")
    if before.get("output") != now.output:
        reasons.append(f"output moved: {before.get('output')} -> {now.output}")
    if before.get("layers_output") != now.layers_output:
        # What a layers model's files hold changed (LAYERS_OUTPUT_VERSION); 1: unversioned.
        reasons.append(
            f"layers model output version changed: {before.get('layers_output', '1')} -> "
            f"{now.layers_output}"
        )
    if before.get("weights") != now.weights:
        reasons.append(
            "share_weights turned on: its weights go to shared shards"
            if now.weights is not None
            else "share_weights turned off: its weights go back to its own folder"
        )
    if (
        None not in (before.get("quantization_auto"), now.quantization_auto)
        and before.get("quantization_auto") != now.quantization_auto
    ):
        reasons.append(AUTO_CHOOSES_AGAIN)  # `plan_build` adds what changed in the verification
    if not reasons:
        reasons.append("fingerprint changed")
    return reasons


def verification_reason(wanted: VerificationRequest | None, record: SignatureRecord) -> str | None:
    """Why the recorded verification does not answer the wanted one; None when it does.

    Nothing wanted (verification off, `--no-verify`): whatever was recorded stands.
    """
    if wanted is None:
        return None
    verification, verified_with = record.verification, record.verified_with
    # Checked as types, not trusted: a record may be made in code as well as read back. One
    # where no backend could run (webgl alone, no browser) stands while none can.
    done = isinstance(verification, VerificationRecord) and (
        verification.passed is True or not verification.ran
    )
    if not done or not isinstance(verified_with, VerificationRequest):
        return NOT_VERIFIED_YET
    if verified_with != wanted:
        changed = option_changes(verified_with.to_json_dict(), wanted.to_json_dict())
        return f"verification changed: {', '.join(changed) or 'settings'}"
    assert isinstance(verification, VerificationRecord)
    skipped = skipped_runnable(verification, wanted)
    if skipped:
        return f"not verified on {', '.join(skipped)} yet: a browser is found now"
    return None


def source_change(
    before_kind: str, before: Mapping[str, str], now_kind: str, now: Mapping[str, str]
) -> list[str]:
    """Why a signature's source digest changed, in the words of what changed."""
    if before_kind != now_kind:
        return [f"fingerprint kind changed: {before_kind or 'content'} -> {now_kind}"]
    if now_kind == WHOLE_MODEL:
        return [
            f"source changed (whole-model fingerprint: {now.get('whole model', 'unknown reason')})"
        ]
    if not now_kind.startswith("graph") or not before or not now:
        return ["source changed"]
    reasons = []
    if before.get("graph") != now.get("graph"):
        reasons.append("graph changed")
    for kind, names in sorted(changed_captures(before, now).items()):
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        reasons.append(f"{_CAPTURE_LABELS.get(kind, kind + 's changed')}: {shown}")
    return reasons or ["captured inputs changed"]


def tool_change(before: str, now: str) -> str:
    """`name old -> new` for each tool whose version differs ("name=version,..." strings)."""
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
    """Dotted key paths whose values differ, e.g. `quantization.uint8`, `backends.webgl.atol`."""
    changed = []
    for key in sorted(set(before) | set(now)):
        old, new = before.get(key), now.get(key)
        if old == new:
            continue
        nested = prefix or key in ("quantization", "backends")  # said key by key, all the way
        if isinstance(old, dict) and isinstance(new, dict) and nested:
            changed += option_changes(old, new, f"{prefix}{key}.")
        else:
            changed.append(f"{prefix}{key}")
    return changed
