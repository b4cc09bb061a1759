"""Command-line parsing only: each command is one call into `tfjsbuild.cli.commands`."""

from __future__ import annotations

import argparse
import errno
import sys
import traceback
import warnings
from collections.abc import Sequence
from typing import NoReturn, TextIO

from rich.console import Console

from tfjsbuild.cli import commands
from tfjsbuild.cli.streams import stdout_reserved
from tfjsbuild.errors import (
    ManifestError,
    TfjsBuildError,
    UsageError,
    exit_code_for,
    is_in_the_way,
    is_refusal,
)
from tfjsbuild.render.json import error_json
from tfjsbuild.version import __version__

PARANOID_HELP = "digest variables by their bytes instead of the checkpoint's crc32c"


def _manifest_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-f",
        "--manifest",
        dest="manifests",
        action="append",
        default=[],
        metavar="FILE",
        help="manifest file or folder (default: tfjs-build.yaml here); repeat for several",
    )
    parser.add_argument(
        "--all",
        dest="all_dirs",
        action="append",
        default=[],
        metavar="DIR",
        help="every tfjs-build.yaml below DIR, built as one plan",
    )


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


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        raise CommandLineError(self.prog, message)


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
    parser = _ArgumentParser(
        prog="tfjs-build",
        description="Declarative, incremental TensorFlow.js graph model builds.",
    )
    parser.add_argument("--version", action="version", version=f"tfjs-build {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="build what changed")
    run.add_argument("selection", nargs="*", metavar="MODEL[:SIGNATURE]")
    _manifest_options(run)
    run.add_argument(
        "-j", "--jobs", type=int, default=None, help="worker processes (default: per core, max 4)"
    )
    run.add_argument("--force", action="store_true", help="rebuild even what is up to date")
    run.add_argument("--dry-run", action="store_true", help="show the plan, build nothing")
    run.add_argument("--json", dest="json_output", action="store_true", help="print a JSON report")
    run.add_argument("-q", "--quiet", action="store_true", help="print failures only")
    run.add_argument("--paranoid", action="store_true", help=PARANOID_HELP)
    run.add_argument("--no-verify", dest="verify", action="store_false", help=NO_VERIFY_HELP)
    run.add_argument("--cache", metavar="SPEC", help=CACHE_HELP)
    run.add_argument(
        "--executor",
        choices=("local", "ray"),
        default="local",
        help="where conversions run: worker processes here (default) or Ray tasks",
    )
    run.add_argument(
        "--ray-address", metavar="ADDRESS", help="Ray cluster to use (default: $RAY_ADDRESS)"
    )
    failing = run.add_mutually_exclusive_group()
    failing.add_argument(
        "--keep-going",
        dest="fail_fast",
        action="store_false",
        help="build the rest after a failure (default)",
    )
    failing.add_argument(
        "--fail-fast", dest="fail_fast", action="store_true", help="stop at the first failure"
    )
    # Both flags share a dest; without this the first one's default (True) would win.
    run.set_defaults(fail_fast=False)

    plan = sub.add_parser("plan", help="show what would be built and why")
    plan.add_argument("selection", nargs="*", metavar="MODEL[:SIGNATURE]")
    _manifest_options(plan)
    plan.add_argument("--force", action="store_true", help="plan as if everything changed")
    plan.add_argument("--json", dest="json_output", action="store_true", help="print JSON")
    plan.add_argument("--paranoid", action="store_true", help=PARANOID_HELP)
    plan.add_argument("--cache", metavar="SPEC", help=CACHE_HELP)
    plan.add_argument(
        "--no-verify", dest="verify", action="store_false", help="what `run --no-verify` would do"
    )

    validate = sub.add_parser("validate", help="check manifests without building")
    _manifest_options(validate)

    watch = sub.add_parser("watch", help="build, then rebuild what changes until interrupted")
    watch.add_argument(
        "-f",
        "--manifest",
        dest="manifests",
        action="append",
        default=[],
        metavar="FILE",
        help="manifest file (default: tfjs-build.yaml here); repeat for several",
    )
    watch.add_argument("-j", "--jobs", type=int, default=None, help="worker processes")
    watch.add_argument(
        "--quiet-period",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="rebuild once sources have not changed for this long (default 1.0)",
    )
    watch.add_argument(
        "--json", dest="json_output", action="store_true", help="one JSON object per cycle"
    )
    watch.add_argument(
        "-q", "--quiet", action="store_true", help="print failures and cycle summaries only"
    )
    watch.add_argument("--paranoid", action="store_true", help=PARANOID_HELP)
    watch.add_argument("--no-verify", dest="verify", action="store_false", help=NO_VERIFY_HELP)
    watch.add_argument("--cache", metavar="SPEC", help=CACHE_HELP)

    clean = sub.add_parser("clean", help="remove this manifest's outputs and state")
    _manifest_options(clean)

    inspect = sub.add_parser(
        "inspect",
        help="list the signatures of a SavedModel, a Keras file or a Python source "
        "(module:callable), with their fingerprints",
    )
    inspect.add_argument("path", metavar="PATH")
    inspect.add_argument("--paranoid", action="store_true", help=PARANOID_HELP)
    inspect.add_argument("--json", dest="json_output", action="store_true", help="print JSON")

    report = sub.add_parser(
        "report", help="sizes, quantization, verification and build times of what was built"
    )
    _manifest_options(report)
    report.add_argument("--html", metavar="FILE", help="also write a self-contained HTML page")
    report.add_argument("--json", dest="json_output", action="store_true", help="print JSON")

    cache = sub.add_parser("cache", help="the cache of built signatures: stats, prune")
    cache_sub = cache.add_subparsers(dest="cache_command", required=True, metavar="ACTION")
    stats = cache_sub.add_parser("stats", help="entries and bytes in each cache")
    _manifest_options(stats)
    stats.add_argument("--cache", metavar="SPEC", help=CACHE_HELP)
    prune = cache_sub.add_parser("prune", help="drop least recently used entries")
    _manifest_options(prune)
    prune.add_argument("--cache", metavar="SPEC", help=CACHE_HELP)
    prune.add_argument(
        "--max-bytes", type=int, required=True, help="shrink each writable cache to this size"
    )
    return parser


def dispatch(
    args: argparse.Namespace,
    console: Console,
    err_console: Console,
    json_out: TextIO | None = None,
) -> int:
    if args.command == "run":
        return commands.run(
            manifests=args.manifests,
            all_dirs=args.all_dirs,
            selection=args.selection,
            jobs=args.jobs,
            force=args.force,
            dry_run=args.dry_run,
            fail_fast=args.fail_fast,
            paranoid=args.paranoid,
            verify=args.verify,
            cache=args.cache,
            executor=args.executor,
            ray_address=args.ray_address,
            json_output=args.json_output,
            json_out=json_out,
            quiet=args.quiet,
            console=console,
            err_console=err_console,
        )
    if args.command == "plan":
        return commands.plan(
            manifests=args.manifests,
            all_dirs=args.all_dirs,
            selection=args.selection,
            force=args.force,
            paranoid=args.paranoid,
            cache=args.cache,
            verify=args.verify,
            json_output=args.json_output,
            json_out=json_out,
            console=console,
            err_console=err_console,
        )
    if args.command == "validate":
        return commands.validate(manifests=args.manifests, all_dirs=args.all_dirs, console=console)
    if args.command == "clean":
        return commands.clean(
            manifests=args.manifests,
            all_dirs=args.all_dirs,
            console=console,
            err_console=err_console,
        )
    if args.command == "inspect":
        return commands.inspect(
            path=args.path,
            paranoid=args.paranoid,
            json_output=args.json_output,
            json_out=json_out,
            console=console,
        )
    if args.command == "watch":
        return commands.watch(
            manifests=args.manifests,
            jobs=args.jobs,
            paranoid=args.paranoid,
            verify=args.verify,
            cache=args.cache,
            quiet_period=args.quiet_period,
            json_output=args.json_output,
            json_out=json_out,
            quiet=args.quiet,
            console=console,
            err_console=err_console,
        )
    if args.command == "report":
        return commands.report(
            manifests=args.manifests,
            all_dirs=args.all_dirs,
            html=args.html,
            json_output=args.json_output,
            json_out=json_out,
            console=console,
        )
    if args.command == "cache":
        return commands.cache(
            action=args.cache_command,
            manifests=args.manifests,
            all_dirs=args.all_dirs,
            cache=args.cache,
            max_bytes=getattr(args, "max_bytes", None),
            console=console,
        )
    return commands.not_implemented(args.command, console=console)


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
            return dispatch(args, console, err_console, json_out)
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
