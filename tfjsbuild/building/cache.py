"""How a build uses the content-addressed cache: restore a cached output into place, save a
fresh one.

`restore` puts a cached output in place as a conversion would (checked first: a bad entry is a
miss, never a failure); `save` offers a fresh build to the writable caches (a failing cache is
only a warning). Which caches a build uses, an entry's form and a store's file I/O are
`stores/`'s (`caches`, `cache_entry`, `cache_store`); this module decides, and places outputs
only through `outputs.place`.
"""

from __future__ import annotations

import contextlib
import shutil
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

from tfjsbuild.building.outputs import place
from tfjsbuild.building.project import Project
from tfjsbuild.building.results import SignatureResult
from tfjsbuild.building.staging import staging_root
from tfjsbuild.files.artifacts import OutputCheckError, OutputFile, validate_graph_model
from tfjsbuild.planning.fingerprint import cache_key
from tfjsbuild.planning.plan import PlanItem
from tfjsbuild.stores.cache_entry import CacheEntry
from tfjsbuild.stores.cache_store import Store
from tfjsbuild.stores.caches import CacheHit, entries_serving
from tfjsbuild.stores.records import SignatureRecord


def restore(item: PlanItem, project: Project, verify: bool) -> SignatureResult | None:
    """Put a cached build in place as a conversion would; None if the entry is unusable.

    With `verify`, only an entry carrying the verification the item wants will do.
    """
    start = time.perf_counter()
    root = staging_root(project)
    staging = root / f"restore-{item.model}-{item.signature}"
    for store, entry in _cache_hits(item, project, verify):
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


def _cache_hits(item: PlanItem, project: Project, verify: bool) -> Iterator[CacheHit]:
    """The entry the plan found; should it prove unusable, the later stores' (looked up now)."""
    assert item.cache_hit is not None and item.fingerprint is not None
    yield item.cache_hit
    stores = list(project.stores)
    after = next((i + 1 for i, s in enumerate(stores) if s is item.cache_hit.store), len(stores))
    wanted = item.fingerprint.verify if verify else None
    yield from entries_serving(stores[after:], cache_key(item.fingerprint), wanted)


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
        quantization=entry.quantization_choice,
    )
    if isinstance(outcome, SignatureResult):
        return outcome  # over budget, or the folder is not ours: a real failure
    store.mark_used(entry.key)
    # A remote hit also fills the local cache, so the next restore is local.
    target = project.manifest.root / item.output
    save(item, project, target, project.state.records[item.key], exclude=store)
    seconds = time.perf_counter() - start
    return SignatureResult.sized(
        item,
        "restored",
        outcome.files,
        seconds,
        timings={"restore": seconds},
        verification=entry.verification,
        cache=store.label,
        quantization=entry.quantization_choice,
    )


def save(
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
    # neither. One where no backend could run (webgl alone, no browser) verified nothing.
    verified = (
        record.verification is not None
        and record.verification.passed
        and record.verified_with is not None
    )
    entry = CacheEntry(
        key=cache_key(item.fingerprint),
        files=tuple(OutputFile(f.path, f.size, f.sha256) for f in record.files),
        inputs=record.inputs,
        outputs=record.outputs,
        verification=record.verification if verified else None,
        seconds=record.seconds,
        verified_with=record.verified_with if verified else None,
        quantization_choice=record.quantization_choice,
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
