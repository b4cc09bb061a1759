"""Which caches a build uses (manifest `cache:` < environment < `--cache`), and finding an entry
in them. Looking up reads only: a plan writes nothing; a restore marks the entry used.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from tfjsbuild.errors import UsageError
from tfjsbuild.manifest.types import Manifest
from tfjsbuild.stores.cache_entry import SIGNATURE_KEY_ENV, CacheEntry, serves
from tfjsbuild.stores.cache_store import Store
from tfjsbuild.verify.request import VerificationRequest

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


class CacheHit(NamedTuple):
    """An entry a plan found, and the store it came from: the build restores this one."""

    store: Store
    entry: CacheEntry


def entries_serving(
    stores: Iterable[Store], key: str, wanted: VerificationRequest | None = None
) -> Iterator[CacheHit]:
    """Each store's entry for `key` that serves the verification `wanted` (see `serves`), in
    store order, each store looked up only when the one before it did not do."""
    for store in stores:
        entry = store.get(key)
        if entry is not None and serves(entry, wanted):
            yield CacheHit(store, entry)


def first_entry(
    stores: Iterable[Store], key: str, wanted: VerificationRequest | None = None
) -> CacheHit | None:
    """The first store's entry for `key` that serves the verification `wanted`."""
    return next(entries_serving(stores, key, wanted), None)
