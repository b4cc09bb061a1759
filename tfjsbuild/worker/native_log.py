"""What TensorFlow's native (C++) code logs while a step runs, and the causes it names.

Some TensorFlow errors only point at that log: grappler raises "Failed to import metagraph,
check error log for more info" and logs the reason. This module captures stderr at the file
descriptor and puts the logged causes into the error's message; and, where TensorFlow is
imported in the user's own process (`inspect`, the example's `make_models.py`), keeps those log
lines off the terminal (`native_log_kept_out`). It imports no TensorFlow.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def capture_native_log(lines: list[str]) -> Iterator[None]:
    """Collect what TensorFlow's C++ code writes to stderr meanwhile, and still pass it on.

    Some TensorFlow errors only point there: grappler raises "Failed to import metagraph,
    check error log for more info" and logs the reason. In a worker, stderr is the worker log.
    """
    with _stderr_sorted(lines, keep_out=False):
        yield


@contextmanager
def native_log_kept_out(lines: list[str]) -> Iterator[None]:
    """TensorFlow's C++ log lines written to stderr meanwhile go into `lines`, not to the
    terminal: TensorFlow 2.19 logs CUDA registrations, `cuInit` failures and grappler sessions
    there whatever TF_CPP_MIN_LOG_LEVEL says. Anything else written there is passed on."""
    with _stderr_sorted(lines, keep_out=True):
        yield


@contextmanager
def _stderr_sorted(lines: list[str], *, keep_out: bool) -> Iterator[None]:
    """Stderr captured meanwhile: its native log lines (all of it, unless `keep_out`) into
    `lines`, and all but those kept out passed on; after a failure too, when the causes logged
    are wanted."""
    captured: list[str] = []
    try:
        with _captured_stderr(captured):
            yield
    finally:
        native = [line for line in captured if not keep_out or _NATIVE_LINE.match(line)]
        passed = [line for line in captured if not keep_out or not _NATIVE_LINE.match(line)]
        lines.extend(native)
        if passed:
            sys.stderr.write("\n".join(passed) + "\n")
            sys.stderr.flush()


@contextmanager
def _captured_stderr(lines: list[str]) -> Iterator[None]:
    """What is written to file descriptor 2 meanwhile (by Python or C++), into `lines` only;
    descriptor 1 too where it is the same file (`--json` sends the user's prints to stderr, or
    a terminal), so that what is passed on keeps the order it was written in."""
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        saved = {fd: os.dup(fd) for fd in _same_as_stderr()}
    except OSError:  # no stderr to capture (a daemon closed it): nothing was logged either
        yield
        return
    try:
        with tempfile.TemporaryFile() as capture:
            for fd in saved:
                os.dup2(capture.fileno(), fd)
            try:
                yield
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                for fd, original in saved.items():
                    os.dup2(original, fd)
                capture.seek(0)
                lines.extend(capture.read().decode("utf-8", "replace").splitlines())
    finally:
        for original in saved.values():
            os.close(original)


def _same_as_stderr() -> list[int]:
    """Descriptor 2, and 1 where it is the same file."""
    try:
        same = os.path.samestat(os.fstat(1), os.fstat(2))
    except OSError:
        same = False
    return [2, 1] if same else [2]


# `I0000 00:00:1795804163.814682    6498 file.cc:675] message` (absl), `2024-01-01
# 12:00:00.000000: E path/file.cc:675] message` (TensorFlow's own), absl's notice, and
# TensorFlow's Python logger (`WARNING:tensorflow:Compiled the loaded model, but ...`).
_NATIVE_LINE = re.compile(
    r"^(?:[IWEF]\d{4} \S+\s+\d+ \S+:\d+\]|\d{4}-\d\d-\d\d \S+: [IWEF] \S+:\d+\]"
    r"|WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|(?:INFO|WARNING):tensorflow:)"
)


# `E0000 00:00:1795804163.814682    6498 file.cc:675] message` (absl) or
# `2024-01-01 12:00:00.000000: E path/file.cc:675] message` (older TensorFlow).
_NATIVE_ERROR = re.compile(r"^(?:[EF]\d{4} \S+\s+\d+ |\S+ \S+: [EF] )\S+:\d+\] (.+)$")


def with_native_cause(error: BaseException, log: list[str], *, with_type: bool = True) -> str:
    """`Type: message`, with the errors TensorFlow logged in place of "check error log"."""
    message = str(error).strip()
    causes = []
    for line in log:
        match = _NATIVE_ERROR.match(line.strip())
        if match is not None and match.group(1) not in causes:
            causes.append(match.group(1))
    # Only where TensorFlow points at the log: other errors say it all, and grappler also logs
    # errors it recovers from.
    pointer = re.compile(r",? *check (?:the )?error log for more info(?:rmation)?\.?")
    if causes and pointer.search(message):
        message = f"{pointer.sub('', message).rstrip('. ')}: {'; '.join(causes)}"
    return f"{type(error).__name__}: {message}" if with_type else message
