"""A content-addressed cache of built signatures, shared by checkouts, machines and CI: where it
is and how a build uses it (restore a cached output into place, save a fresh one).

`resolve_config` says where the caches are and how they may be used; `_restore` puts a cached
output in place as a conversion would (checked first: a bad entry is a miss, never a failure);
`_store` offers a fresh build to the writable caches (a failing cache is only a warning). An
entry's form is `cache_entry`'s, a store's file I/O `cache_store`'s; this module decides, and
places outputs only through `outputs.place`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tfjsbuild.building.cache_entry import SIGNATURE_KEY_ENV, CacheEntry, cache_key, serves
from tfjsbuild.building.cache_store import Store
from tfjsbuild.building.outputs import place, staging_root
from tfjsbuild.building.project import Project
from tfjsbuild.building.results import SignatureResult
from tfjsbuild.building.state import SignatureRecord
from tfjsbuild.errors import UsageError
from tfjsbuild.files.artifacts import OutputCheckError, OutputFile, validate_graph_model
from tfjsbuild.manifest.types import Manifest
from tfjsbuild.planning.plan import PlanItem

CACHE_ENV = "TFJS_BUILD_CACHE"
REMOTE_CACHE_ENV = "TFJS_BUILD_REMOTE_CACHE"
MODES = ("rw", "r", "off")


@dataclass(frozen=True)
class CacheConfig:
    """Where the cache is and how it may be used, after manifest, environment and flags."""

    local: str | None
    local_mode: str
    remote: str | None
    remote_mode: str
    # TFJS_BUILD_CACHE_SIGNATURE_KEY: entries are signed with it and unsigned ones refused.
    signature_key: str | None = field(default=None, repr=False)

    def stores(self) -> list[Store]:
        found = []
        if self.local is not None and self.local_mode != "off":
            found.append(Store(self.local, self.local_mode, "local", self.signature_key))
        if self.remote is not None and self.remote_mode != "off":
            found.append(Store(self.remote, self.remote_mode, "remote", self.signature_key))
        return found


def resolve_config(
    manifest: Manifest, flag: str | None = None, environ: Mapping[str, str] = os.environ
) -> CacheConfig:
    """Manifest `cache:` < environment < `--cache` flag (`local:rw,remote:r`, `off`)."""
    settings = manifest.cache
    local = str(settings.dir or manifest.tool_dir / "cache")  # shared by the folder's manifests
    remote = settings.remote
    local_mode = remote_mode = settings.mode
    if environ.get(CACHE_ENV):
        local = environ[CACHE_ENV]
    if environ.get(REMOTE_CACHE_ENV):
        remote = environ[REMOTE_CACHE_ENV]
    if flag:
        local_mode, remote_mode = _parse_flag(flag, local_mode, remote_mode)
    signature_key = environ.get(SIGNATURE_KEY_ENV) or None
    return CacheConfig(local, local_mode, remote, remote_mode, signature_key)


def _parse_flag(flag: str, local_mode: str, remote_mode: str) -> tuple[str, str]:
    if flag == "off":
        return "off", "off"
    modes = {"local": local_mode, "remote": remote_mode}
    for part in flag.split(","):
        where, _, mode = part.strip().partition(":")
        if where not in modes or mode not in MODES:
            raise UsageError(
                f"--cache {flag}: expected comma-separated local:MODE and remote:MODE with "
                f"MODE one of {', '.join(MODES)} (e.g. local:rw,remote:r), or off"
            )
        modes[where] = mode
    return modes["local"], modes["remote"]


def first_entry(
    stores: Iterable[Store], key: str, verification: Mapping[str, Any] | None = None
) -> tuple[Store, CacheEntry] | None:
    """The first store's entry for `key` that serves `verification` (see `serves`)."""
    for store in stores:
        entry = store.get(key)
        if entry is not None and serves(entry, verification or {}):
            return store, entry
    return None


def _restore(item: PlanItem, project: Project, verify: bool) -> SignatureResult | None:
    """Put a cached build in place as a conversion would; None if the entry is unusable.

    With `verify`, only an entry carrying the verification the item wants will do.
    """
    assert item.fingerprint is not None
    start = time.perf_counter()
    key = cache_key(item.fingerprint)
    root = staging_root(project)
    staging = root / f"restore-{item.model}-{item.signature}"
    for store in project.stores:
        entry = store.get(key)
        if entry is None or not serves(entry, item.fingerprint.verify if verify else {}):
            continue
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        try:
            problem = store.fetch(entry, staging)
            if problem is None:
                return _place_restored(item, project, store, entry, staging, start)
        except (OutputCheckError, OSError) as error:
            problem = str(error)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            with contextlib.suppress(OSError):
                root.rmdir()  # only if empty: leave nothing behind
        # A corrupt or partial entry is never restored: convert instead (and overwrite it).
        warnings.warn(
            f"{store.label} cache {store.url}: entry for {item.key} is unusable ({problem}); "
            "building it instead",
            stacklevel=1,
        )
    return None


def _place_restored(
    item: PlanItem,
    project: Project,
    store: Store,
    entry: CacheEntry,
    staging: Path,
    start: float,
) -> SignatureResult:
    """Check a fetched entry, swap it into place and record it (raises if it is unusable)."""
    # Checked before it is placed: a bad model from a cache is a miss, not a failure.
    validate_graph_model(staging)
    outcome = place(
        item,
        project,
        staging,
        entry.verification,
        entry.seconds,
        verified_with=entry.verified_with,
    )
    if isinstance(outcome, SignatureResult):
        return outcome  # over budget, or the folder is not ours: a real failure
    # A remote hit also fills the local cache, so the next restore is local.
    target = project.manifest.root / item.output
    _store(item, project, target, project.state.records[item.key], exclude=store)
    seconds = time.perf_counter() - start
    return SignatureResult.sized(
        item,
        "restored",
        outcome.files,
        seconds,
        timings={"restore": seconds},
        verification=entry.verification,
        cache=store.label,
    )


def _store(
    item: PlanItem,
    project: Project,
    output: Path,
    record: SignatureRecord,
    exclude: Store | None = None,
) -> None:
    """Offer a fresh build (or verification) to the writable caches, with the verification it
    carries (None: not verified); a cache that fails is only a warning."""
    if item.fingerprint is None:
        return
    # An entry carries the verification it promises (`cache_entry._check_promise`): both or
    # neither.
    verified = record.verification is not None and bool(record.verified_with)
    entry = CacheEntry(
        key=cache_key(item.fingerprint),
        files=tuple(OutputFile(f.path, f.size, f.sha256) for f in record.files),
        inputs=record.inputs,
        outputs=record.outputs,
        verification=record.verification if verified else None,
        seconds=record.seconds,
        verified_with=record.verified_with if verified else None,
    )
    for store in project.stores:
        if store.writable and store is not exclude and store.unreachable is None:
            try:
                if entry.verification is None and store.get(entry.key) is not None:
                    continue  # an unverified build never replaces an entry that may be verified
                store.put(entry, output)
            except Exception as error:  # network, permissions, quota: the build itself is fine
                warnings.warn(
                    f"could not store {item.key} in the {store.label} cache: {error}", stacklevel=1
                )
