"""tfjs-build: declarative, incremental TensorFlow.js graph model builds.

Importing this package does not import TensorFlow; only conversions (in worker processes, or
`convert_concrete_function`) do.
"""

from __future__ import annotations

__version__ = "0.1.0"

from tfjsbuild.api import (
    BuildPlan,
    BuildResult,
    ReportRow,
    build,
    cache_prune,
    cache_stats,
    clean,
    convert_concrete_function,
    plan,
    report,
)

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
