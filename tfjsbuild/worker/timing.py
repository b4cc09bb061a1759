"""Where a conversion's time goes: `with timed(timings, "freeze"):` adds the block's seconds."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def timed(timings: dict[str, float] | None, phase: str) -> Iterator[None]:
    """Add the block's wall time to `timings[phase]` (nothing when `timings` is None)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        if timings is not None:
            timings[phase] = timings.get(phase, 0.0) + time.perf_counter() - start
