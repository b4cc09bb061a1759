"""The error root, its few subclasses, and the one mapping from errors to exit codes (and to
the `kind` a `--json` error report names)."""

from __future__ import annotations

import errno
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3
EXIT_INTERRUPTED = 130


@dataclass(frozen=True)
class Problem:
    """One located problem in a manifest: `FILE:LINE:COL: key.path: message`."""

    file: Path
    line: int  # 1-based
    column: int  # 1-based
    key_path: str
    message: str
    source_line: str | None = None

    def format(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}"
        head = (
            f"{where}: {self.key_path}: {self.message}"
            if self.key_path
            else f"{where}: {self.message}"
        )
        if self.source_line is None:
            return head
        gutter = f"{self.line:>5} | "
        caret = " " * (len(gutter) - 2) + "| " + " " * (self.column - 1) + "^"
        return f"{head}\n{gutter}{self.source_line.rstrip()}\n{caret}"


class TfjsBuildError(Exception):
    """Root of every error tfjs-build reports to the user without a traceback."""

    exit_code = EXIT_FAILED


class UsageError(TfjsBuildError):
    """Bad command-line arguments or a missing manifest file."""

    exit_code = EXIT_USAGE


class ManifestError(TfjsBuildError):
    """One or more located problems in a manifest; all are reported at once."""

    exit_code = EXIT_USAGE

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = sorted(problems, key=lambda p: (str(p.file), p.line, p.column, p.key_path))
        super().__init__(self.format())

    def format(self) -> str:
        count = len(self.problems)
        lines = [p.format() for p in self.problems]
        noun = "problem" if count == 1 else "problems"
        lines.append(f"{count} {noun} found; nothing was built.")
        return "\n".join(lines)


class BuildError(TfjsBuildError):
    """A build could not run or finished with failed signatures."""

    exit_code = EXIT_FAILED


class LockHeldError(BuildError):
    """Another build holds this manifest's lock."""


class SourceError(BuildError):
    """A model source as a whole failed: the user's code raised, a Keras file would not load."""


class SignatureError(BuildError):
    """One signature of a loaded source failed: no such function, or tracing it raised."""


# What the machine refused (a full disk, a read-only mount, a denied permission, a failing disk):
# not a bug in tfjs-build wherever it surfaces, so a user error (exit 1), never exit 3.
REFUSAL_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO}
)


# Something of another kind where tfjs-build reads or writes (a folder where its lock file goes,
# a file where a folder goes): the tree, not this tool, is at fault.
IN_THE_WAY_ERRNOS = frozenset(
    {errno.EISDIR, errno.ENOTDIR, errno.EEXIST, errno.ENOTEMPTY, errno.ENAMETOOLONG, errno.ELOOP}
)


def is_refusal(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno in REFUSAL_ERRNOS


def is_in_the_way(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno in IN_THE_WAY_ERRNOS


def exit_code_for(error: BaseException) -> int:
    """The one place that maps an exception to the process exit code."""
    if isinstance(error, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(error, TfjsBuildError):
        return error.exit_code
    if is_refusal(error) or is_in_the_way(error):
        return EXIT_FAILED
    return EXIT_INTERNAL


def error_kind(error: BaseException) -> str:
    """What a script may branch on: manifest, usage, lock (retry later), build, interrupted,
    or internal (a bug in tfjs-build)."""
    if isinstance(error, ManifestError):
        return "manifest"
    if isinstance(error, UsageError):
        return "usage"
    if isinstance(error, LockHeldError):
        return "lock"
    if isinstance(error, TfjsBuildError):
        return "build"
    if isinstance(error, KeyboardInterrupt):
        return "interrupted"
    return "internal"
