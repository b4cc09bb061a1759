"""Gather what the pure plan needs, per manifest, and hand it to `plan_build`.

The planner reads: manifests' states, model sources (through the stat cache), outputs in place
and cache entries (one small file per store). It writes nothing: not the state (a build saves
the `ManifestPlan.state` it returns), not the cache (a lookup touches no entry), no output.
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from tfjsbuild.errors import ManifestError, UsageError
from tfjsbuild.manifest.types import MANIFEST_NAME, Manifest
from tfjsbuild.planning.fingerprint import (
    SignatureFingerprint,
    cache_key,
    fingerprint_signature,
    tool_versions,
)
from tfjsbuild.planning.manifests import output_dir_problem
from tfjsbuild.planning.plan import PlanItem, blocked_item, plan_build, select
from tfjsbuild.planning.targets import Target, resolve_targets
from tfjsbuild.sources.digest import StatCache
from tfjsbuild.sources.model_sources import ModelSources
from tfjsbuild.sources.registry import kind_of
from tfjsbuild.stores.cache_store import Store
from tfjsbuild.stores.caches import first_entry, resolve_config
from tfjsbuild.stores.index_owner import index_owner_problem
from tfjsbuild.stores.records import output_change
from tfjsbuild.stores.state import BuildState, load_state
from tfjsbuild.verify.request import BackendRequest, VerificationRequest
from tfjsbuild.verify.runtime import find_browser, no_browser_reason, tfjs_version


@dataclass
class ManifestPlan:
    """One manifest's plan, with the state it was planned from (a build updates and saves it)
    and the cache stores its items were looked up in."""

    manifest: Manifest
    state: BuildState
    items: list[PlanItem]
    warnings: list[str] = field(default_factory=list)
    stores: list[Store] = field(default_factory=list)


def load_manifest_state(
    manifest: Manifest, consequence: str = "it will be rebuilt"
) -> tuple[BuildState, list[str]]:
    """The manifest's own state, records checked against its output_dir.

    The default manifest adopts the state of the layout before states were per manifest
    (`.tfjs-build/state.json`), so upgrading does not rebuild everything. That file was shared by
    every manifest of the folder: only records of models this manifest declares are taken, so
    none of another manifest's outputs is ever pruned.
    """
    adopt = manifest.tool_dir if manifest.path.name == MANIFEST_NAME else None
    state, problems = load_state(
        manifest.state_dir,
        root=manifest.root,
        output_dir=manifest.output_dir,
        adopt=adopt,
        consequence=consequence,
    )
    if state.adopted_from is not None:
        declared = {model.name for model in manifest.models}
        state.records = {k: r for k, r in state.records.items() if r.model in declared}
    return state, problems


def plan_manifests(
    loaded: Sequence[Manifest],
    *,
    selection: Sequence[str] = (),
    force: bool = False,
    paranoid: bool = False,
    cache: str | None = None,
    verify: bool = True,
) -> list[ManifestPlan]:
    """Each manifest's plan, narrowed to `selection` (a selection prunes nothing)."""
    plans = [
        plan_manifest(
            m, force=force, prune=not selection, paranoid=paranoid, cache=cache, verify=verify
        )
        for m in loaded
    ]
    _select(plans, selection)
    return plans


def plan_manifest(
    manifest: Manifest,
    *,
    force: bool,
    prune: bool,
    paranoid: bool,
    cache: str | None = None,
    verify: bool = True,
) -> ManifestPlan:
    """Resolve, fingerprint and check one manifest's signatures, then plan them (`plan_build`)."""
    owner_problem = index_owner_problem(manifest)
    if owner_problem is not None:
        raise ManifestError([output_dir_problem(manifest, owner_problem)])
    state, state_warnings = load_manifest_state(manifest)
    stat_cache = StatCache(state.stat_cache)
    sources = ModelSources(stat_cache, state.graph_cache, paranoid=paranoid)
    resolution = resolve_targets(manifest, sources.signature_names)
    fingerprints = _fingerprints(manifest, resolution.targets, sources, stat_cache)
    changes = {
        key: output_change(manifest.root, record, manifest.output_dir)
        for key, record in state.records.items()
        if key in fingerprints and record.fingerprint == fingerprints[key].digest
    }
    items = plan_build(
        manifest.path,
        resolution.targets,
        fingerprints,
        changes,
        state.records,
        blocked=[blocked_item(blocked) for blocked in resolution.blocked],
        force=force,
        prune=prune,
        verify=verify,
    )
    if verify:
        items = [_browser_required(item) for item in items]
    else:
        items = [_auto_needs_verification(item) for item in items]
    state.stat_cache = stat_cache.entries()
    state.graph_cache = sources.used
    config = resolve_config(manifest, cache)
    # Stores are opened only when something is to be built or verified (a verified output is
    # offered to the cache with its verification): a no-op plan stays cheap.
    needed = any(item.action in ("build", "verify") and item.blocked is None for item in items)
    stores = config.stores() if needed else []
    items = [_with_cache(item, stores, force, verify) for item in items]
    return ManifestPlan(manifest, state, items, state_warnings, stores)


def _fingerprints(
    manifest: Manifest, targets: Sequence[Target], sources: ModelSources, stat_cache: StatCache
) -> dict[str, SignatureFingerprint]:
    """Each target's fingerprint, by its key."""
    fingerprints = {}
    tools = {kind: tool_versions(kind) for kind in {t.source.kind for t in targets}}
    for target in targets:
        by_signature = sources.fingerprints(target.source)
        entry = by_signature.get(target.signature) or by_signature["*"]
        source = target.source
        fingerprints[target.key] = fingerprint_signature(
            source=entry.digest,
            source_kind=entry.kind,
            signature=target.signature,
            tags=kind_of(source).tags(source),
            options=target.options,
            output=target.output,
            tools=tools[source.kind],
            details=entry.details,
            format=kind_of(source).output_format(source),
            verify=_verification_inputs(target, manifest.root, stat_cache),
            model=sources.digest(source),
            share_weights=target.share_weights,
        )
    return fingerprints


def _browser_required(item: PlanItem) -> PlanItem:
    """An item to build or verify whose WebGL check is required where no browser is found:
    blocked now, saying what to do, rather than failing after its conversion."""
    wanted = None if item.fingerprint is None else item.fingerprint.verify
    if item.action == "up-to-date" or item.blocked is not None or wanted is None or wanted.browser:
        return item
    if not any(backend.backend == "webgl" and backend.required for backend in wanted.backends):
        return item
    return replace(
        item,
        blocked=f"WebGL is required (verify.backends.webgl.required), but {no_browser_reason()}; "
        "or make WebGL optional (`webgl: {required: false}` skips it where there is none)",
    )


def _auto_needs_verification(item: PlanItem) -> PlanItem:
    """With --no-verify, a `quantization: auto` signature to build cannot choose: blocked now,
    saying what to do (an up-to-date one stays as it is)."""
    if item.action != "build" or item.blocked is not None or item.target is None:
        return item
    if not item.target.options.auto_quantization:
        return item
    return replace(
        item,
        blocked="quantization: auto chooses the smallest quantization that passes verification, "
        "and --no-verify turns verification off; run without --no-verify, or give dtype -> "
        "weight globs",
    )


def _with_cache(item: PlanItem, stores: Sequence[Store], force: bool, verify: bool) -> PlanItem:
    """Mark a build the cache can restore (a cheap lookup of one small file per store): an
    entry with the verification this run wants, or any entry when it verifies nothing. The
    item keeps the entry found, so the build restores that one without looking it up again."""
    if item.action != "build" or item.blocked is not None or item.fingerprint is None or force:
        return item
    wanted = item.fingerprint.verify if verify else None
    found = first_entry(stores, cache_key(item.fingerprint), wanted)
    return item if found is None else replace(item, cache_hit=found)


def _verification_inputs(
    target: Target, root: Path, stat_cache: StatCache
) -> VerificationRequest | None:
    """What a signature's verification depends on: settings, sample inputs, the TF.js runtime;
    None when it is not verified."""
    settings = target.checks.verify
    if not settings.enabled:
        return None
    backends = tuple(
        BackendRequest(
            check.name,
            settings.atol if check.atol is None else check.atol,
            settings.rtol if check.rtol is None else check.rtol,
            check.required,
        )
        for check in settings.backends
    )
    webgl = any(check.name == "webgl" for check in settings.backends)
    return VerificationRequest(
        samples=settings.samples,
        inputs=None if settings.inputs is None else posixpath.relpath(settings.inputs, root),
        tfjs=tfjs_version(),
        inputs_sha256=None if settings.inputs is None else stat_cache.digest(settings.inputs),
        backends=backends,
        browser=find_browser() is not None if webgl else True,
    )


def _select(plans: Sequence[ManifestPlan], selection: Sequence[str]) -> None:
    """Narrow each plan to the selected models and signatures; an unknown name is an error."""
    if not selection:
        return
    items = [item for plan in plans for item in plan.items if item.action != "remove"]
    known = {item.model for item in items} | {item.key for item in items}
    unknown = [name for name in selection if name not in known]
    if unknown:
        available = ", ".join(sorted(known)) or "none"
        raise UsageError(
            f"unknown model or signature: {', '.join(unknown)} (available: {available})"
        )
    for plan in plans:
        plan.items = select(plan.items, selection)
