"""Every source kind by name: the one place that lists them.

A manifest's source dataclass carries its kind's name (`source.kind`); `kind_of` is how the
rest of the package asks a source anything, instead of branching on its type.
"""

from __future__ import annotations

from typing import Any

from tfjsbuild.manifest.types import Source
from tfjsbuild.sources.base import SourceKind
from tfjsbuild.sources.digest import StatCache
from tfjsbuild.sources.keras import KERAS
from tfjsbuild.sources.python import PYTHON
from tfjsbuild.sources.saved_model import SAVED_MODEL

KINDS: dict[str, SourceKind[Any]] = {kind.name: kind for kind in (SAVED_MODEL, KERAS, PYTHON)}


def kind_of(source: Source) -> SourceKind[Any]:
    return KINDS[source.kind]


def source_digest(source: Source, stat_cache: StatCache, *, paranoid: bool = False) -> str:
    """Content digest of a model source: every file it is made of, by relative path and content."""
    return kind_of(source).digest(source, stat_cache, paranoid=paranoid)
