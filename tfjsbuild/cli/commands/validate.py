"""`tfjs-build validate`: load and check manifests, say each one is ok; builds nothing."""

from __future__ import annotations

import argparse

from rich.markup import escape

from tfjsbuild.cli import options
from tfjsbuild.cli.output import Output
from tfjsbuild.errors import EXIT_OK
from tfjsbuild.planning.manifests import load_manifests


def add_parser(subparsers: options.Subparsers) -> None:
    parser = subparsers.add_parser(
        "validate",
        help="check manifests without building",
        **options.examples(
            ("tfjs-build validate", "check ./tfjs-build.yaml: every problem, located"),
            ("tfjs-build validate --all .", "every manifest below this folder"),
        ),
        parents=[options.manifest_selection()],
    )
    parser.set_defaults(handler=validate)


def validate(args: argparse.Namespace, out: Output) -> int:
    for manifest in load_manifests(args.manifests, args.all_dirs):
        count = len(manifest.models)
        out.console.print(
            f"{escape(str(manifest.path))}: ok ({count} model{'s' if count != 1 else ''})"
        )
    return EXIT_OK
