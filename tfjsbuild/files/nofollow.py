"""Files below a folder, reached without following a symbolic link at any step below it.

A local cache folder is shared and may be tampered with: a link planted at `blobs/ab`, at a
blob or at an entry must never make a read come from, or a write land in, another folder. Each
step below the folder is opened with O_NOFOLLOW relative to the step before (openat), so no
link swapped in between a check and a use can redirect it, and files are written under a
temporary name and renamed into place (a rename replaces a name, it never writes through it).
The folder itself may be a link: it comes from the manifest or the environment, which the user
wrote (a cache on another disk is often linked in).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO planted where a file should be must not hang the build.
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class UnsafePath(OSError):
    """A symbolic link, or something else than a file or folder, where this tool reads or writes."""


def read_file(root: Path, relative: str, limit: int | None = None) -> bytes:
    """The bytes of `root/relative` (at most `limit`); FileNotFoundError if it is not there."""
    *folders, name = relative.split("/")
    with _folder(root, folders, create=False) as fd:
        try:
            file_fd = os.open(name, _READ, dir_fd=fd)
        except OSError as error:
            _refuse(error, fd, name, root, relative)
            raise
        with os.fdopen(file_fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(file_fd).st_mode):
                raise UnsafePath(f"{root / relative} is not a regular file")
            if limit is None:
                return handle.read()
            # In blocks: read(limit) would allocate `limit` bytes up front, and a limit comes
            # from a size an entry declares.
            chunks = []
            while limit > 0 and (chunk := handle.read(min(limit, 1 << 20))):
                chunks.append(chunk)
                limit -= len(chunk)
            return b"".join(chunks)


def file_size(root: Path, relative: str) -> int:
    """The size of the regular file `root/relative`; FileNotFoundError if it is not there."""
    *folders, name = relative.split("/")
    with _folder(root, folders, create=False) as fd:
        return _regular(os.stat(name, dir_fd=fd, follow_symlinks=False), root, relative).st_size


def write_file(root: Path, relative: str, data: bytes) -> None:
    """Create or replace `root/relative` atomically, creating its folders (never through a link)."""
    *folders, name = relative.split("/")
    with _folder(root, folders, create=True) as fd:
        temporary = f".tmp-{os.urandom(8).hex()}"
        file_fd = os.open(temporary, _CREATE, 0o666, dir_fd=fd)
        try:
            with os.fdopen(file_fd, "wb") as handle:
                handle.write(data)
            with contextlib.suppress(FileNotFoundError):
                _regular(os.stat(name, dir_fd=fd, follow_symlinks=False), root, relative)
            os.replace(temporary, name, src_dir_fd=fd, dst_dir_fd=fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary, dir_fd=fd)
            raise


def remove_file(root: Path, relative: str) -> None:
    """Delete the regular file `root/relative`, if it is there."""
    *folders, name = relative.split("/")
    with contextlib.suppress(FileNotFoundError), _folder(root, folders, create=False) as fd:
        _regular(os.stat(name, dir_fd=fd, follow_symlinks=False), root, relative)
        os.unlink(name, dir_fd=fd)


def touch(root: Path, relative: str) -> None:
    """Set the modification time of `root/relative` to now (a link's own time, never its target's)."""
    *folders, name = relative.split("/")
    with _folder(root, folders, create=False) as fd:
        os.utime(name, dir_fd=fd, follow_symlinks=False)


def list_files(root: Path, folder: str) -> tuple[list[tuple[str, int, float]], list[str]]:
    """(relative path, size, modification time) of the regular files in `root/folder` and its
    subfolders one level down, and the relative paths of the links and special files skipped
    there (never followed, never listed)."""
    found: list[tuple[str, int, float]] = []
    skipped: list[str] = []

    def scan(fd: int, relative: str, depth: int) -> None:
        with os.scandir(fd) as items:
            for item in sorted(items, key=lambda e: e.name):
                path = f"{relative}/{item.name}"
                if item.is_file(follow_symlinks=False):
                    info = item.stat(follow_symlinks=False)
                    found.append((path, info.st_size, info.st_mtime))
                elif item.is_dir(follow_symlinks=False) and depth > 0:
                    try:
                        with _folder(root, path.split("/"), create=False) as sub_fd:
                            scan(sub_fd, path, depth - 1)
                    except (UnsafePath, FileNotFoundError):  # swapped or removed since listed
                        skipped.append(path)
                elif not item.is_dir(follow_symlinks=False):
                    skipped.append(path)

    try:
        with _folder(root, [folder], create=False) as fd:
            scan(fd, folder, 1)
    except FileNotFoundError:
        pass
    return found, skipped


@contextmanager
def _folder(root: Path, parts: Sequence[str], *, create: bool) -> Iterator[int]:
    """A file descriptor of `root/parts...`, each part opened without following a link."""
    if create:
        root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for index, part in enumerate(parts):
            try:
                next_fd = os.open(part, _DIRECTORY, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, dir_fd=fd)
                next_fd = os.open(part, _DIRECTORY, dir_fd=fd)
            except OSError as error:
                _refuse(error, fd, part, root, "/".join(parts[: index + 1]))
                raise
            os.close(fd)
            fd = next_fd
        yield fd
    finally:
        os.close(fd)


def _refuse(error: OSError, fd: int, name: str, root: Path, relative: str) -> None:
    """Raise UnsafePath when `name` (in the folder `fd`) could not be opened because it is a link
    or the wrong kind of file; other errors are the caller's to re-raise."""
    if error.errno not in (errno.ELOOP, errno.ENOTDIR, errno.ENXIO):
        return
    try:
        mode = os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode
    except OSError:
        return
    if stat.S_ISLNK(mode):
        raise UnsafePath(f"{root / relative} is a symbolic link") from error
    raise UnsafePath(f"{root / relative} is not a regular file or folder") from error


def _regular(info: os.stat_result, root: Path, relative: str) -> os.stat_result:
    if stat.S_ISLNK(info.st_mode):
        raise UnsafePath(f"{root / relative} is a symbolic link")
    if not stat.S_ISREG(info.st_mode):
        raise UnsafePath(f"{root / relative} is not a regular file")
    return info
