"""tfjs-build's version, and the tensorflowjs version its fast conversion passes reproduce, in a
module of its own so any module may import them without the package root (which imports the
public API, and with it most of the package).

Keep it equal to `version` in pyproject.toml.
"""

from __future__ import annotations

from collections.abc import Mapping

__version__ = "0.1.0"

# The tensorflowjs whose graph optimization `worker/optimize.py` reproduces with faster passes,
# checked bit for bit (tests/test_fast_passes.py); with any other, tensorflowjs's own passes run.
FAST_PASSES_TENSORFLOWJS = "4.22.0"
# Set (to anything but "" or "0"), tensorflowjs's own passes run: to compare, or to rule ours out.
STOCK_PASSES_VARIABLE = "TFJS_BUILD_STOCK_PASSES"


def stock_passes_requested(environ: Mapping[str, str]) -> bool:
    return environ.get(STOCK_PASSES_VARIABLE, "") not in ("", "0")


def fast_passes_apply(tensorflowjs: str, environ: Mapping[str, str]) -> bool:
    """Whether conversions use the fast passes: with the tensorflowjs they reproduce, unless
    STOCK_PASSES_VARIABLE asks for tensorflowjs's own."""
    return tensorflowjs == FAST_PASSES_TENSORFLOWJS and not stock_passes_requested(environ)
