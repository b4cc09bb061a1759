"""`tfjs-build plan`: what a run would build and why, as text or JSON; builds nothing."""

from __future__ import annotations

import argparse

from tfjsbuild import api
from tfjsbuild.cli import options
from tfjsbuild.cli.output import Output, print_warnings
from tfjsbuild.errors import EXIT_FAILED, EXIT_OK
from tfjsbuild.render.console import print_plan


def add_parser(subparsers: options.Subparsers) -> None:
    parser = subparsers.add_parser(
        "plan",
        help="show what would be built and why",
        **options.examples(
            ("tfjs-build plan", "what `run` would build, restore or verify, and why"),
            ("tfjs-build plan classifier", "the same for one model"),
            ("tfjs-build plan --json", "for scripts: one JSON object"),
        ),
        parents=[
            options.manifest_selection(),
            options.force("plan as if everything changed"),
            options.json_output(),
            options.paranoid(),
            options.cache(),
            options.no_verify("what `run --no-verify` would do"),
        ],
    )
    parser.add_argument(
        "selection", nargs="*", metavar="MODEL[:SIGNATURE]", help=options.SELECTION_HELP
    )
    parser.set_defaults(handler=plan)


def plan(args: argparse.Namespace, out: Output) -> int:
    build_plan = api.plan(
        args.manifests,
        all_dirs=args.all_dirs,
        selection=args.selection,
        force=args.force,
        paranoid=args.paranoid,
        cache=args.cache,
        verify=args.verify,
    )
    print_warnings(out.err_console, build_plan.warnings)  # stderr: with --json too
    if args.json_output:
        print(build_plan.to_json(), file=out.json_out)
    else:
        print_plan(out.console, build_plan.items)
    return EXIT_FAILED if any(item.blocked for item in build_plan.items) else EXIT_OK
