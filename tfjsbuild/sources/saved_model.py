"""The `saved_model:` kind: a SavedModel folder, fingerprinted signature by signature.

Its signatures are listed and its graphs fingerprinted from the files (`saved_model_files.py`,
`saved_model_graph.py`), never by loading it: nothing here imports TensorFlow.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path

from tfjsbuild.files.json_types import JsonObject
from tfjsbuild.manifest.types import SavedModelSource
from tfjsbuild.sources.base import SignatureLister, SourceCache, SourceEntry, WatchPaths
from tfjsbuild.sources.digest import StatCache, path_digest
from tfjsbuild.sources.saved_model_files import find_meta_graph
from tfjsbuild.sources.saved_model_graph import GraphFingerprintError, signature_graphs
from tfjsbuild.sources.saved_model_integrity import incomplete_reason

# Left out of a content digest unless `paranoid`: `variables.index` holds a crc32c of every
# tensor, so any change to the data changes the index too.
DATA_SHARDS = "variables/variables.data-"


def list_signatures(source: SavedModelSource) -> list[str]:
    return find_meta_graph(source.path, source.tags).signature_names()


WHOLE_MODEL = "whole-model"


def saved_model_sources(
    path: Path,
    tags: tuple[str, ...],
    model_digest: str,
    stat_cache: StatCache,
    *,
    paranoid: bool,
) -> dict[str, SourceEntry]:
    """Signature name -> what its output depends on; "*" when only the whole model can say.

    What the graph fingerprint cannot read (a TF1 SavedModel without an object graph, a captured
    object of an unknown kind, an unparseable file) falls back to the whole model's content
    digest, and the reason travels with it into the plan.
    """
    try:
        graphs = signature_graphs(path, tags, stat_cache, paranoid=paranoid)
    except GraphFingerprintError as error:
        return {"*": SourceEntry(model_digest, WHOLE_MODEL, {"whole model": str(error)})}
    kind = "graph-paranoid" if paranoid else "graph"
    return {
        name: SourceEntry(
            graph.digest,
            kind,
            {"graph": graph.graph, **{f"{c.kind} {c.name}": c.digest for c in graph.captures}},
        )
        for name, graph in graphs.items()
    }


def changed_captures(before: Mapping[str, str], now: Mapping[str, str]) -> dict[str, list[str]]:
    """Capture kind -> names of `now`'s captures whose digest `before` does not hold.

    `before` and `now` are two graph fingerprints' details ("graph", "<kind> <name>" -> digest).
    """
    old_digests: dict[str, set[str]] = {}
    for key, digest in before.items():
        old_digests.setdefault(key.split(" ", 1)[0], set()).add(digest)
    changed: dict[str, list[str]] = {}
    for key, digest in now.items():
        if key == "graph":
            continue
        kind, _, name = key.partition(" ")
        # By digest, not name: Keras renames variables between exports of the same model.
        if digest not in old_digests.get(kind, set()):
            changed.setdefault(kind, []).append(name)
    return changed


class SavedModelKind:
    name = "saved_model"
    tool_distributions: tuple[str, ...] = ()

    def origin(self, source: SavedModelSource) -> str:
        return str(source.path)

    def problem(self, source: SavedModelSource, root: Path) -> str | None:
        if not source.path.exists():
            return (
                f"SavedModel folder {source.path} does not exist (paths are relative to "
                f"{root}); export the model there or fix the path"
            )
        return None

    def signature_names(self, source: SavedModelSource, lister: SignatureLister) -> list[str]:
        return lister(source)

    def digest(self, source: SavedModelSource, stat_cache: StatCache, *, paranoid: bool) -> str:
        """Every file, by relative path and content (data shards by size unless `paranoid`)."""
        return path_digest(source.path, stat_cache, None if paranoid else DATA_SHARDS)

    def graph_cache_key(self, source: SavedModelSource, cache: SourceCache) -> tuple[str, str]:
        """The source's digest, and the key of the state's entry for it: names and fingerprints
        are cached under the content digest, so an unchanged model is neither parsed nor walked
        again."""
        digest = cache.digest(source)
        key = f"{digest}:{','.join(source.tags)}:{'paranoid' if cache.paranoid else 'crc32c'}"
        return digest, key

    def cached_signature_names(self, source: SavedModelSource, cache: SourceCache) -> list[str]:
        _, key = self.graph_cache_key(source, cache)
        entry = cache.cached(key)
        if entry.names is None:
            entry = replace(entry, names=tuple(list_signatures(source)))
            cache.remember(key, entry)
        assert entry.names is not None
        return list(entry.names)

    def signature_sources(
        self, source: SavedModelSource, cache: SourceCache
    ) -> dict[str, SourceEntry]:
        digest, key = self.graph_cache_key(source, cache)
        entry = cache.cached(key)
        if entry.sources is None:
            entry = replace(
                entry,
                sources=saved_model_sources(
                    source.path, source.tags, digest, cache.stat_cache, paranoid=cache.paranoid
                ),
            )
            cache.remember(key, entry)
        assert entry.sources is not None
        return dict(entry.sources)

    def tags(self, source: SavedModelSource) -> tuple[str, ...]:
        return source.tags

    def output_format(self, source: SavedModelSource) -> str:
        return "graph_model"

    def watch_paths(self, source: SavedModelSource) -> WatchPaths:
        return WatchPaths(paths=(source.path,))

    def incomplete(self, source: SavedModelSource) -> str | None:
        return incomplete_reason(source.path)

    def user_frame(self, source: SavedModelSource, frames: Iterable[tuple[str, int]]) -> str:
        return ""  # a SavedModel runs no user code

    def inspect_json(self, source: SavedModelSource) -> JsonObject:
        return {"path": str(source.path), "tags": list(source.tags)}

    def inspect_heading(self, shown: str, source: SavedModelSource) -> str:
        return f"SavedModel {shown}"


SAVED_MODEL = SavedModelKind()
