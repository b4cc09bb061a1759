"""tfjs-build: declarative, incremental TensorFlow.js graph model builds.

Importing this package does not import TensorFlow; only conversions (in worker processes, or
`convert_concrete_function`) do.
"""

from __future__ import annotations

from tfjsbuild.api import (
    BuildPlan,
    BuildResult,
    build,
    cache_prune,
    cache_stats,
    clean,
    convert_concrete_function,
    plan,
    report,
)
from tfjsbuild.building.results import ReportRow
from tfjsbuild.version import __version__

__all__ = [
    "BuildPlan",
    "BuildResult",
    "ReportRow",
    "__version__",
    "build",
    "cache_prune",
    "cache_stats",
    "clean",
    "convert_concrete_function",
    "plan",
    "report",
]
