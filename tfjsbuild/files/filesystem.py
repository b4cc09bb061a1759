"""What the filesystem refused, said plainly: a full disk, a read-only mount, a denied write.

CI runners fill their disks, checkouts are mounted read-only, output folders are bind mounts.
None of that is a bug in tfjs-build, so it is a `BuildError` (exit 1) that names the folder and
says what to do, never an internal error (exit 3) with a bare errno.
Nothing here writes files.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tfjsbuild.errors import REFUSAL_ERRNOS, BuildError

# Errors that describe the machine, not this tool: reported as a user error wherever they occur.
_FULL = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded"}
_DENIED = {errno.EACCES: "permission denied", errno.EPERM: "operation not permitted"}


def is_refusal(error: OSError) -> bool:
    """A full disk, a read-only mount, a denied permission or a failing disk."""
    return error.errno in REFUSAL_ERRNOS


def describe(error: OSError, folder: Path, role: str, remedy: str) -> str:
    """`<role> <folder>` and what it refused, then what to do.

    `remedy` is the advice for a read-only or denied folder (a full one: free space there).
    """
    code = error.errno
    name = errno.errorcode.get(code or 0, str(code))
    if code == errno.EROFS:
        return f"{role} {folder} is read-only (EROFS); {remedy}"
    if code in _DENIED:
        return f"{role} {folder}: {_DENIED[code]} ({name}); {remedy}"
    if code in _FULL:
        return f"{role} {folder}: {_FULL[code]} ({name}); free space there and run again"
    return f"{role} {folder}: {error.strerror or error} ({name})"


OUTPUT_REMEDY = "make it writable or set output_dir to a writable folder"


@contextmanager
def refusals_reported(
    folder: Path, role: str, remedy: str, *, doing: str = "", after: str = ""
) -> Iterator[None]:
    """Turn a refusal (see `is_refusal`) inside the block into a `BuildError` naming `folder`.

    Other OSErrors pass through unchanged: they are not known to be the machine's fault.
    `doing` prefixes the message ("cannot record the build: "), `after` ends it.
    """
    try:
        yield
    except OSError as error:
        if not is_refusal(error):
            raise
        raise BuildError(f"{doing}{describe(error, folder, role, remedy)}{after}") from error
