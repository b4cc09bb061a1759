"""One manifest being built: its parsed manifest, the state the parent keeps writing, its caches.

A plain holder shared by the build loop (`execute`), the outputs it places (`outputs`) and the
cache it restores from and stores into (`cache`). It runs nothing and reads no files; `save`
writes the state (the parent alone does).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tfjsbuild.manifest.types import Manifest
from tfjsbuild.planning.plan import PlanItem
from tfjsbuild.stores.cache_store import Store
from tfjsbuild.stores.records import SignatureRecord
from tfjsbuild.stores.state import BuildState, save_state


@dataclass
class Project:
    """One manifest being built: its parsed manifest and the state the parent keeps writing."""

    manifest: Manifest
    state: BuildState
    stores: Sequence[Store] = ()  # the caches to restore from and store into

    def record(self, item: PlanItem) -> SignatureRecord | None:
        return self.state.records.get(item.key)

    def save(self) -> None:
        save_state(self.manifest.state_dir, self.state)
