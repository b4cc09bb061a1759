"""With `--json`, stdout carries the JSON and nothing else.

Everything else a command may write to stdout while it runs goes to stderr: a Python source's
`print`, TensorFlow's C++ logging (written to file descriptor 1 directly), and child processes
(which inherit descriptor 1). Only the stream this module hands out reaches the real stdout.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

STDOUT_FD = 1
STDERR_FD = 2


def _fileno(stream: TextIO) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both
        return None


@contextmanager
def stdout_reserved(reserve: bool = True) -> Iterator[TextIO]:
    """Point descriptor 1 and `sys.stdout` at stderr; yield a stream that reaches the real
    stdout. Both are restored on exit, however the block ends. `reserve=False` changes
    nothing and yields `sys.stdout`."""
    original = sys.stdout
    if not reserve:
        yield original
        return
    original.flush()
    saved = os.dup(STDOUT_FD)
    try:
        out: TextIO
        if _fileno(original) == STDOUT_FD:
            # The usual case: the JSON goes to the descriptor stdout was, kept open as `saved`.
            out = open(saved, "w", encoding="utf-8", buffering=1, closefd=False)  # noqa: SIM115
        else:
            # Called in-process with stdout replaced (a test's capture, a StringIO): moving
            # descriptor 1 does not touch it, so it can carry the JSON itself.
            out = original
        os.dup2(STDERR_FD, STDOUT_FD)
        sys.stdout = sys.stderr
        try:
            yield out
        finally:
            out.flush()
            sys.stdout.flush()
            sys.stdout = original
            os.dup2(saved, STDOUT_FD)
            if out is not original:
                out.close()
    finally:
        os.close(saved)
