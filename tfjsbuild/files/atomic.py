"""Atomic file writes and directory swaps: a reader sees the old content or the new, never half."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from pathlib import Path

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def write_atomically(path: Path, data: str | bytes) -> None:
    """Write `data` to `path` via a temporary file in the same folder and `os.replace`.

    However it fails (a full disk at write, flush, fsync or close; an interrupt), `path` keeps
    its previous content and the temporary file is removed.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        try:
            handle = os.fdopen(fd, "wb")
        except BaseException:
            os.close(fd)
            raise
        with handle:  # closed (and its flush error raised) before the rename
            os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give the file normal permissions
            handle.write(payload)
            handle.flush()
            os.fsync(fd)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):  # never hide the real error behind this one
            Path(temporary).unlink(missing_ok=True)
        raise


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two existing paths with Linux renameat2(RENAME_EXCHANGE), if available."""
    import ctypes  # here: only a build that replaces an output needs it
    import ctypes.util

    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return False
    libc = ctypes.CDLL(libc_name, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    result = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return bool(result == 0)


def swap_directory(staged: Path, target: Path) -> None:
    """Put the folder `staged` at `target`, replacing what was there, then delete the old one.

    On Linux the swap is one atomic exchange; elsewhere the old folder is moved aside first and
    moved back if the second rename fails. A `target` that is a symbolic link is refused before
    anything moves: the swap would replace the link itself, not the folder it points to.
    Once the new folder is in place the swap has succeeded: deleting the old one is best effort
    (it sits beside `staged`, in a staging folder its caller removes).
    """
    if target.is_symlink():
        raise OSError(
            errno.ELOOP,
            "refusing to replace a symbolic link by a folder (it would not replace the folder "
            "it points to)",
            str(target),
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        os.rename(staged, target)
        return
    if _exchange(staged, target):
        shutil.rmtree(staged, ignore_errors=True)  # now holds the previous output
        return
    aside = staged.with_name(staged.name + ".old")
    os.rename(target, aside)
    try:
        os.rename(staged, target)
    except BaseException:
        os.rename(aside, target)
        raise
    shutil.rmtree(aside, ignore_errors=True)
