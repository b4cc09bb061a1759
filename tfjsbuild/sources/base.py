"""What every source kind answers for the parent: the `SourceKind` protocol and its types.

A kind (saved_model, keras, python) is one module of this package implementing `SourceKind`,
one entry in `registry.KINDS`, and one loader under `tfjsbuild/worker/`: adding a kind touches
nothing else. Every answer here comes from the source's files and the manifest: nothing in this
package imports TensorFlow, Keras or the user's code (loading a source is the worker's).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from tfjsbuild.manifest.types import SavedModelSource, Source
from tfjsbuild.sources.digest import StatCache

SourceEntry = dict[str, Any]  # {"digest", "kind", "details"}: plain, so it goes into the state
# Names a SavedModel's signatures (raising SavedModelError); the plan's caches them in the state.
SignatureLister = Callable[[SavedModelSource], list[str]]

S_contra = TypeVar("S_contra", contravariant=True)


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

    def cached(self, key: str) -> dict[str, Any]:
        """The state's entry under `key` (empty if new), carried into the next state."""
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

    def inspect_fields(self, source: S_contra) -> dict[str, Any]:
        """What `inspect` shows about the source besides its digest and signatures (JSON)."""
        ...

    def inspect_heading(self, shown: str, fields: Mapping[str, Any]) -> str:
        """`inspect`'s first line for the source the user named as `shown` (plain text)."""
        ...
