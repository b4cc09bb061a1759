"""The command line's entry point: build the parser from the command modules, call the handler
the arguments chose, and map whatever it raises to an exit code and a message (text, and JSON
with --json). What each command does is in `tfjsbuild.cli.commands.<command>`; nothing here
knows a command's options, and nothing here builds."""

from __future__ import annotations

import argparse
import errno
import sys
import traceback
import warnings
from collections.abc import Callable, Sequence
from typing import TextIO

from rich.console import Console

from tfjsbuild.cli.commands import (
    cache,
    clean,
    inspect,
    plan,
    report,
    run,
    server,
    validate,
    watch,
)
from tfjsbuild.cli.options import CommandLineError, CommandParser
from tfjsbuild.cli.output import Output
from tfjsbuild.cli.streams import stdout_reserved
from tfjsbuild.errors import (
    ManifestError,
    TfjsBuildError,
    exit_code_for,
    is_in_the_way,
    is_refusal,
)
from tfjsbuild.render.json import error_json
from tfjsbuild.version import __version__

# Each command module adds its own parser, in this order in the help.
COMMANDS = (
    run.add_parser,
    plan.add_parser,
    validate.add_parser,
    watch.add_parser,
    clean.add_parser,
    inspect.add_parser,
    report.add_parser,
    cache.add_parser,
    server.add_parser,
)

Handler = Callable[[argparse.Namespace, Output], int]


def _asks_for_json(argv: Sequence[str]) -> bool:
    """Whether a command line that did not parse asked for --json (as argparse would read it,
    abbreviations included), so its usage error is reported as JSON too."""
    for arg in argv:
        if arg == "--":
            return False
        if arg.startswith("--js") and "--json".startswith(arg):
            return True
    return False


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="tfjs-build",
        description="Declarative, incremental TensorFlow.js graph model builds.",
    )
    parser.add_argument("--version", action="version", version=f"tfjs-build {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_parser in COMMANDS:
        add_parser(subparsers)
    return parser


def dispatch(args: argparse.Namespace, out: Output) -> int:
    """Call the handler the command's parser chose (`set_defaults(handler=...)`)."""
    handler: Handler = args.handler
    return handler(args, out)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser().parse_args(arguments)
    except CommandLineError as error:
        print(f"{error.prog}: error: {error}", file=sys.stderr)
        if _asks_for_json(arguments):
            print(error_json(error, exit_code=exit_code_for(error), message=str(error)))
        return exit_code_for(error)
    json_output = bool(getattr(args, "json_output", False))
    # No emoji codes: a signature named `:smile:` is shown as written.
    console = Console(highlight=False, soft_wrap=True, emoji=False)
    err_console = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)
    # With --json nothing but the one JSON object reaches stdout, whatever user code prints.
    with stdout_reserved(json_output) as json_out, warnings.catch_warnings():
        # Warnings (an unusable cache entry, a dropped state record) read as the tool's own
        # words, not as Python's `file.py:123: UserWarning:` with a source line.
        warnings.showwarning = _show_warning
        try:
            return dispatch(args, Output(console, err_console, json_out))
        except (Exception, KeyboardInterrupt) as error:
            code, message = _report_error(error, debug=args.debug)
            if json_output:
                print(error_json(error, exit_code=code, message=message), file=json_out)
            return code


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    print(f"warning: {message}", file=sys.stderr)


def _report_error(error: BaseException, *, debug: bool) -> tuple[int, str]:
    """Print an error to stderr as text; return its exit code and its message for --json."""
    code = exit_code_for(error)
    if isinstance(error, ManifestError):
        message = error.format()
        print(message, file=sys.stderr)
    elif isinstance(error, TfjsBuildError):
        if debug:
            traceback.print_exc()
        message = str(error)
        print(f"tfjs-build: error: {message}", file=sys.stderr)
    elif isinstance(error, KeyboardInterrupt):
        message = "interrupted; finished outputs and state are kept"
        print(f"tfjs-build: {message}", file=sys.stderr)
    elif isinstance(error, OSError) and (is_in_the_way(error) or is_refusal(error)):
        # The machine's doing, not a bug, and no command worded it (see `filesystem.py`).
        if debug:
            traceback.print_exc()
        name = errno.errorcode.get(error.errno or 0, "")
        where = f"{error.filename}: " if error.filename is not None else ""
        advice = (
            "what is there is not what tfjs-build expects: move it away, then run again"
            if is_in_the_way(error)
            else "the filesystem refused: free space there or make it writable, then run again"
        )
        message = f"{where}{error.strerror} ({name}); {advice}"
        print(f"tfjs-build: error: {message}", file=sys.stderr)
    else:
        message = (
            f"{type(error).__name__}: {error}\n"
            "This is a bug in tfjs-build: rerun as `tfjs-build --debug COMMAND ...` for the "
            "traceback and report it."
        )
        if debug:
            traceback.print_exc()
        else:
            print(f"tfjs-build: internal error: {message}", file=sys.stderr)
    return code, message


if __name__ == "__main__":
    sys.exit(main())
