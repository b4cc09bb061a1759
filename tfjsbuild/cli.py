"""Command-line parsing only: each command is one call into `tfjsbuild.commands`."""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence

from rich.console import Console

from tfjsbuild import __version__, commands
from tfjsbuild.errors import EXIT_INTERRUPTED, ManifestError, TfjsBuildError, exit_code_for

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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


def dispatch(args: argparse.Namespace, console: Console, err_console: Console) -> int:
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
            console=console,
            err_console=err_console,
        )
    if args.command == "validate":
        return commands.validate(manifests=args.manifests, all_dirs=args.all_dirs, console=console)
    if args.command == "clean":
        return commands.clean(manifests=args.manifests, all_dirs=args.all_dirs, console=console)
    if args.command == "inspect":
        return commands.inspect(
            path=args.path, paranoid=args.paranoid, json_output=args.json_output, console=console
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
    parser = build_parser()
    args = parser.parse_args(argv)
    console = Console(highlight=False, soft_wrap=True)
    err_console = Console(stderr=True, highlight=False, soft_wrap=True)
    try:
        return dispatch(args, console, err_console)
    except ManifestError as error:
        print(error.format(), file=sys.stderr)
        return exit_code_for(error)
    except TfjsBuildError as error:
        if args.debug:
            traceback.print_exc()
        print(f"tfjs-build: error: {error}", file=sys.stderr)
        return exit_code_for(error)
    except KeyboardInterrupt:
        print("tfjs-build: interrupted; finished outputs and state are kept", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:
        if args.debug:
            traceback.print_exc()
        else:
            print(
                f"tfjs-build: internal error: {type(error).__name__}: {error}\n"
                "This is a bug in tfjs-build: rerun with --debug for the traceback and report it.",
                file=sys.stderr,
            )
        return exit_code_for(error)


if __name__ == "__main__":
    sys.exit(main())
