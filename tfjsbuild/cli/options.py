"""The parser class of every command, and the options several commands share, each declared
once as a parent parser.

A command passes the parents it takes to `add_parser(..., parents=[...])`. argparse copies a
parent's options in the order the parents are given, ahead of the command's own options, and
the help lists them in that order: a command whose own option sits between shared ones in its
help declares it as a small parent of its own (see `commands/run.py`). Where the help of a
shared option differs between commands, the factory takes it as an argument; the flag, its
destination and its default are written here only. Nothing here reads files or calls the API.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, NoReturn, TypeAlias, TypedDict

from tfjsbuild.errors import UsageError

MANIFEST_HELP = "manifest file or folder (default: tfjs-build.yaml here); repeat for several"
PARANOID_HELP = "digest variables by their bytes instead of the checkpoint's crc32c"
CACHE_HELP = (
    "which caches to use: local:MODE,remote:MODE with MODE rw, r or off (e.g. local:rw,remote:r), "
    "or off"
)
NO_VERIFY_HELP = (
    "do not run signatures in TensorFlow.js (a later build without it verifies them as built, "
    "without converting again)"
)


class CommandLineError(UsageError):
    """A command line argparse refused; raised (not exited) so `--json` can report it too."""

    def __init__(self, prog: str, message: str) -> None:
        self.prog = prog
        super().__init__(message)


class CommandParser(argparse.ArgumentParser):
    """The top-level parser; argparse makes each command's parser of the same class."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        raise CommandLineError(self.prog, message)


if TYPE_CHECKING:
    # What `add_subparsers` returns; generic in the type stubs only.
    Subparsers: TypeAlias = argparse._SubParsersAction[CommandParser]


SELECTION_HELP = "only these models, or single signatures as model:signature (default: all)"


class Epilog(TypedDict):
    epilog: str
    formatter_class: type[argparse.HelpFormatter]


def examples(*lines: tuple[str, str]) -> Epilog:
    """A command's help epilog: the invocations people use, each with what it does."""
    width = max(len(command) for command, _ in lines)
    text = "\n".join(f"  {command.ljust(width)}  {what}" for command, what in lines)
    return {"epilog": f"examples:\n{text}", "formatter_class": argparse.RawDescriptionHelpFormatter}


def parent() -> CommandParser:
    """An empty parent parser: options only, no -h of its own."""
    return CommandParser(add_help=False)


def manifest_files(help: str = MANIFEST_HELP) -> CommandParser:
    """-f/--manifest, repeatable."""
    parser = parent()
    parser.add_argument(
        "-f",
        "--manifest",
        dest="manifests",
        action="append",
        default=[],
        metavar="FILE",
        help=help,
    )
    return parser


def manifest_selection() -> CommandParser:
    """-f/--manifest and --all: which manifests a command reads."""
    parser = CommandParser(add_help=False, parents=[manifest_files()])
    parser.add_argument(
        "--all",
        dest="all_dirs",
        action="append",
        default=[],
        metavar="DIR",
        help="every tfjs-build.yaml below DIR, built as one plan",
    )
    return parser


def jobs(help: str) -> CommandParser:
    parser = parent()
    parser.add_argument("-j", "--jobs", type=int, default=None, help=help)
    return parser


def force(help: str) -> CommandParser:
    parser = parent()
    parser.add_argument("--force", action="store_true", help=help)
    return parser


def json_output(help: str = "print JSON") -> CommandParser:
    parser = parent()
    parser.add_argument("--json", dest="json_output", action="store_true", help=help)
    return parser


def quiet(help: str) -> CommandParser:
    parser = parent()
    parser.add_argument("-q", "--quiet", action="store_true", help=help)
    return parser


def paranoid() -> CommandParser:
    parser = parent()
    parser.add_argument("--paranoid", action="store_true", help=PARANOID_HELP)
    return parser


def no_verify(help: str = NO_VERIFY_HELP) -> CommandParser:
    parser = parent()
    parser.add_argument("--no-verify", dest="verify", action="store_false", help=help)
    return parser


def cache() -> CommandParser:
    parser = parent()
    parser.add_argument("--cache", metavar="SPEC", help=CACHE_HELP)
    return parser
