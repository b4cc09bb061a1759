"""`tfjs-build run`: build what changed, then print the summary, the plan or the JSON report."""

from __future__ import annotations

import argparse

from tfjsbuild import api
from tfjsbuild.cli import options
from tfjsbuild.cli.output import Output, print_warnings
from tfjsbuild.errors import EXIT_FAILED, EXIT_OK
from tfjsbuild.render.console import ConsoleReporter, print_plan, print_summary


def _dry_run() -> options.CommandParser:
    # A parent of its own so that --dry-run keeps its place in the help, between shared options.
    parser = options.parent()
    parser.add_argument("--dry-run", action="store_true", help="show the plan, build nothing")
    return parser


def add_parser(subparsers: options.Subparsers) -> None:
    parser = subparsers.add_parser(
        "run",
        help="build what changed",
        **options.examples(
            ("tfjs-build run", "build what changed in ./tfjs-build.yaml, and verify it"),
            ("tfjs-build run classifier:logits", "only that signature"),
            ("tfjs-build run --all services/ -j 2", "every manifest below services/, 2 workers"),
            ("tfjs-build run --json > build.json", "one JSON report, for scripts and CI"),
        ),
        parents=[
            options.manifest_selection(),
            options.jobs("worker processes (default: per core, max 4)"),
            options.force("rebuild even what is up to date"),
            _dry_run(),
            options.json_output("print a JSON report"),
            options.quiet("print failures only"),
            options.paranoid(),
            options.no_verify(),
            options.cache(),
        ],
    )
    parser.add_argument(
        "selection", nargs="*", metavar="MODEL[:SIGNATURE]", help=options.SELECTION_HELP
    )
    parser.add_argument(
        "--executor",
        choices=("local", "ray"),
        default="local",
        help="where conversions run: worker processes here (default) or Ray tasks",
    )
    parser.add_argument(
        "--ray-address", metavar="ADDRESS", help="Ray cluster to use (default: $RAY_ADDRESS)"
    )
    failing = parser.add_mutually_exclusive_group()
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
    parser.set_defaults(fail_fast=False, handler=run)


def run(args: argparse.Namespace, out: Output) -> int:
    json_output: bool = args.json_output
    reporter = ConsoleReporter(
        out.err_console if json_output else out.console, quiet=args.quiet or json_output
    )
    try:
        result = api.build(
            args.manifests,
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
            reporter=reporter,
        )
    finally:
        reporter.close()
    print_warnings(out.err_console, result.warnings)  # stderr: with --json too
    if json_output:
        print(result.to_json(), file=out.json_out)
    elif args.dry_run:
        print_plan(out.console, [r.item for r in result.results])
    elif not args.quiet:
        print_summary(out.console, result.results, result.seconds)
    return EXIT_OK if result.ok else EXIT_FAILED
