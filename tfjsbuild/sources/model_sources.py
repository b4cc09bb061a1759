"""One plan's view of its model sources: signature names and per-signature fingerprints.

Each source is digested once per plan; what a kind derives from a digest (a SavedModel's
signature names and graph fingerprints) is cached in the state under that digest, so an
unchanged model is neither parsed nor walked again; only `stat` calls remain. Reads files only;
the parent writes the state.
"""

from __future__ import annotations

from collections.abc import Mapping

from tfjsbuild.manifest.types import SavedModelSource, Source
from tfjsbuild.sources.base import GraphCacheEntry, SourceEntry
from tfjsbuild.sources.digest import StatCache
from tfjsbuild.sources.registry import kind_of
from tfjsbuild.sources.saved_model import SAVED_MODEL


class ModelSources:
    """Implements `base.SourceCache` for the kinds; `used` is what goes into the next state."""

    def __init__(
        self,
        stat_cache: StatCache,
        previous: Mapping[str, GraphCacheEntry],
        *,
        paranoid: bool,
    ) -> None:
        self.stat_cache = stat_cache
        self.previous = previous
        self.paranoid = paranoid
        self.used: dict[str, GraphCacheEntry] = {}
        self._digests: dict[Source, str] = {}  # each source is walked once per plan

    def digest(self, source: Source) -> str:
        if source not in self._digests:
            self._digests[source] = kind_of(source).digest(
                source, self.stat_cache, paranoid=self.paranoid
            )
        return self._digests[source]

    def cached(self, key: str) -> GraphCacheEntry:
        if key not in self.used:
            self.used[key] = self.previous.get(key, GraphCacheEntry())
        return self.used[key]

    def remember(self, key: str, entry: GraphCacheEntry) -> None:
        self.used[key] = entry

    def signature_names(self, source: SavedModelSource) -> list[str]:
        """A `planning.targets` lister: the SavedModel's signatures, cached in the state."""
        return SAVED_MODEL.cached_signature_names(source, self)

    def fingerprints(self, source: Source) -> dict[str, SourceEntry]:
        return kind_of(source).signature_sources(source, self)
