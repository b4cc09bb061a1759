"""The build lock: one build per manifest at a time; the kernel releases it if the holder dies.

The lock file (`<state folder>/lock`) is an flock; it also says who holds it, for the build
that has to wait. Nothing here reads or writes the state itself (`state`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path
from types import TracebackType

from tfjsbuild.errors import LockHeldError
from tfjsbuild.files.filesystem import refusals_reported
from tfjsbuild.stores.state import STATE_REMEDY

LOCK_FILE = "lock"


class BuildLock:
    """An exclusive lock per manifest; the kernel releases it if the holder dies."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / LOCK_FILE
        self._fd: int | None = None

    def __enter__(self) -> BuildLock:
        folder = self.path.parent
        with refusals_reported(
            folder, "state folder", STATE_REMEDY, doing=f"cannot create the lock {self.path}: "
        ):
            folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode("utf-8", "replace").strip() or "unknown"
            os.close(fd)
            raise LockHeldError(
                f"another build holds the lock {self.path}: {holder}. Wait for it to finish "
                "or stop it, then run again"
            ) from None
        os.ftruncate(fd, 0)
        # Who holds the lock is only shown to a waiting build; a full disk must not stop this one
        # (the lock is the flock, held already).
        with contextlib.suppress(OSError):
            os.pwrite(
                fd, f"pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}".encode(), 0
            )
        self._fd = fd
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
