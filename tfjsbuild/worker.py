"""What runs in a worker process: one signature conversion per task, the model loaded once.

This module itself imports no TensorFlow; `run_task` imports `tfjsbuild.convert` on first use,
inside the worker. Workers return outcomes and never touch the state file.
"""

from __future__ import annotations

import os
import signal
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from tfjsbuild.errors import TfjsBuildError
from tfjsbuild.manifest import ConverterOptions


@dataclass(frozen=True)
class ConversionTask:
    key: str
    source_path: str
    tags: tuple[str, ...]
    signature: str
    options: ConverterOptions
    staging_dir: str
    # Identifies the source's content: a worker reuses its loaded model while this matches.
    cache_key: str


@dataclass(frozen=True)
class ConversionOutcome:
    key: str
    error: str | None
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)


def init_worker(log_path: str | None) -> None:
    """Quiet TensorFlow, leave Ctrl-C to the parent, and send the worker's chatter to a log."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if log_path is not None:
        log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.close(log_fd)


def run_task(task: ConversionTask) -> ConversionOutcome:
    start = time.perf_counter()
    timings: dict[str, float] = {}
    try:
        from tfjsbuild import convert

        load_start = time.perf_counter()
        loaded = convert.load_saved_model(Path(task.source_path), task.tags, task.cache_key)
        if time.perf_counter() - load_start > 0.001:
            timings["load"] = time.perf_counter() - load_start
        convert.convert_signature(
            loaded, task.signature, Path(task.staging_dir), task.options, timings
        )
    except TfjsBuildError as error:
        return ConversionOutcome(task.key, str(error), time.perf_counter() - start, timings)
    except Exception as error:
        # The converter's own error, with the innermost frame so a bug report can use it.
        frame = traceback.extract_tb(error.__traceback__)[-1]
        where = f" (at {Path(frame.filename).name}:{frame.lineno})"
        message = f"{type(error).__name__}: {error}{where}"
        return ConversionOutcome(task.key, message, time.perf_counter() - start, timings)
    return ConversionOutcome(task.key, None, time.perf_counter() - start, timings)
