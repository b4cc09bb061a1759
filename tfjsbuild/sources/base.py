"""What every source kind answers for the parent: the `SourceKind` protocol and its types.

A kind (saved_model, keras, python) is one module of this package implementing `SourceKind`,
one entry in `registry.KINDS`, and one loader under `tfjsbuild/worker/`: adding a kind touches
nothing else. Every answer here comes from the source's files and the manifest: nothing in this
package imports TensorFlow, Keras or the user's code (loading a source is the worker's).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from tfjsbuild.files.json_types import JsonObject
from tfjsbuild.files.readback import InvalidData, as_dict, as_list, as_str, as_str_dict
from tfjsbuild.manifest.types import SavedModelSource, Source
from tfjsbuild.sources.digest import StatCache

# Names a SavedModel's signatures (raising SavedModelError); the plan's caches them in the state.
SignatureLister = Callable[[SavedModelSource], list[str]]

S_contra = TypeVar("S_contra", contravariant=True)


@dataclass(frozen=True)
class SourceEntry:
    """What one signature's output depends on in its source, as the plan and the state keep it."""

    digest: str
    # Which fingerprint took it: graph, graph-paranoid, whole-model, keras-content, ...
    kind: str
    # Not hashed, only compared to explain a change: the graph's and each capture's digest
    # ("graph", "<kind> <name>"), or why a whole-model fingerprint was taken.
    details: dict[str, str] = field(default_factory=dict)

    def to_json_dict(self) -> JsonObject:
        """As the state file's graph cache writes it."""
        return {"digest": self.digest, "kind": self.kind, "details": dict(self.details)}

    @classmethod
    def from_json_dict(cls, value: Any, where: str) -> SourceEntry:
        """An entry read back from the state (untrusted), checked; raises InvalidData."""
        entry = as_dict(value, where)
        return cls(
            digest=as_str(entry.get("digest"), "digest"),
            kind=as_str(entry.get("kind"), "kind"),
            details=as_str_dict(entry.get("details", {}), "details"),
        )


@dataclass(frozen=True)
class GraphCacheEntry:
    """What the state keeps of one SavedModel under its content digest (`saved_model.py`): its
    signature names and each signature's graph fingerprint, each None until first asked for."""

    names: tuple[str, ...] | None = None
    sources: Mapping[str, SourceEntry] | None = None  # "*": the whole model stands for all

    def to_json_dict(self) -> JsonObject:
        """As the state file writes it: {"names": [...], "sources": {name: entry}}, each key
        only once known."""
        data: JsonObject = {}
        if self.names is not None:
            data["names"] = list(self.names)
        if self.sources is not None:
            data["sources"] = {name: e.to_json_dict() for name, e in self.sources.items()}
        return data

    @classmethod
    def from_json_dict(cls, value: Any) -> GraphCacheEntry:
        """An entry read back from the state (untrusted), checked; raises InvalidData."""
        entry = as_dict(value, "")
        names = None
        if "names" in entry:
            names = tuple(as_str(name, "names") for name in as_list(entry["names"], "names"))
        if "sources" not in entry:
            return cls(names)
        sources = {
            name: SourceEntry.from_json_dict(item, name)
            for name, item in as_dict(entry["sources"], "sources").items()
        }
        # Every signature listed must have a fingerprint (or the whole model stands for all).
        if names is None:
            raise InvalidData("names", "missing")
        if "*" not in sources and not set(names) <= set(sources):
            raise InvalidData("sources", "a listed signature has no fingerprint")
        return cls(names, sources)


@dataclass(frozen=True)
class WatchPaths:
    """What `watch` must watch for a source: files or folders, and globs under a folder."""

    paths: tuple[Path, ...] = ()
    globs: tuple[tuple[Path, str], ...] = ()  # (folder the pattern is relative to, pattern)


class SourceCache(Protocol):
    """One plan's view of its sources (`model_sources.ModelSources`): each source is digested
    once, and what a kind derives from a digest is kept in the state under a key of its own."""

    stat_cache: StatCache
    paranoid: bool

    def digest(self, source: Source) -> str: ...

    def cached(self, key: str) -> GraphCacheEntry:
        """The state's entry under `key` (empty if new), carried into the next state."""
        ...

    def remember(self, key: str, entry: GraphCacheEntry) -> None:
        """Carry `entry` into the next state under `key`, in place of what `cached` gave."""
        ...


class SourceKind(Protocol[S_contra]):
    """One kind of model source, as the parent sees it before and after building."""

    name: str  # the manifest's key for it: saved_model, keras, python
    # Distributions besides TensorFlow, tensorflowjs and tfjs-build that shape its output.
    tool_distributions: tuple[str, ...]

    def origin(self, source: S_contra) -> str:
        """What messages call the source: its path, or `module:callable`."""
        ...

    def problem(self, source: S_contra, root: Path) -> str | None:
        """Why the source cannot be built, found before building (`root`: the manifest's folder)."""
        ...

    def signature_names(self, source: S_contra, lister: SignatureLister) -> list[str] | None:
        """The signatures the source exports; None when only the manifest can name them."""
        ...

    def digest(self, source: S_contra, stat_cache: StatCache, *, paranoid: bool) -> str:
        """The content digest of the source's files."""
        ...

    def signature_sources(self, source: S_contra, cache: SourceCache) -> dict[str, SourceEntry]:
        """Signature name -> what its output depends on; "*" when only the whole source can say."""
        ...

    def tags(self, source: S_contra) -> tuple[str, ...]:
        """The MetaGraph tags that go into a signature's fingerprint."""
        ...

    def output_format(self, source: S_contra) -> str:
        """graph_model or layers_model."""
        ...

    def watch_paths(self, source: S_contra) -> WatchPaths: ...

    def incomplete(self, source: S_contra) -> str | None:
        """Why the source looks half-written (worth waiting for), or None."""
        ...

    def user_frame(self, source: S_contra, frames: Iterable[tuple[str, int]]) -> str:
        """` (at models/net.py:12)`: the first of `frames` (innermost first) in the source's own
        code; "" for a kind that runs no user code, or when there is none."""
        ...

    def inspect_json(self, source: S_contra) -> JsonObject:
        """What `inspect --json` shows about the source besides its digest and signatures."""
        ...

    def inspect_heading(self, shown: str, source: S_contra) -> str:
        """`inspect`'s first line for the source the user named as `shown` (plain text)."""
        ...
