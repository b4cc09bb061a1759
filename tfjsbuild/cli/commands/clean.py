"""`tfjs-build clean`: remove the outputs and the state of the selected manifests."""

from __future__ import annotations

import argparse
import warnings

from rich.markup import escape

from tfjsbuild import api
from tfjsbuild.cli import options
from tfjsbuild.cli.output import Output, print_warnings
from tfjsbuild.errors import EXIT_OK


def add_parser(subparsers: options.Subparsers) -> None:
    parser = subparsers.add_parser(
        "clean",
        help="remove this manifest's outputs and state",
        **options.examples(
            ("tfjs-build clean", "remove what ./tfjs-build.yaml built, and its state"),
            ("tfjs-build clean -f web/tfjs-build.yaml", "another manifest's"),
        ),
        parents=[options.manifest_selection()],
    )
    parser.set_defaults(handler=clean)


def clean(args: argparse.Namespace, out: Output) -> int:
    # What clean leaves alone (not provably its own) comes back as warnings: say them plainly.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        removed = api.clean(args.manifests, all_dirs=args.all_dirs)
    print_warnings(out.err_console, [str(warning.message) for warning in caught])
    for output in removed:
        out.console.print(f"removed {escape(output)}")
    out.console.print(
        f"Removed {len(removed)} output{'s' if len(removed) != 1 else ''} and the build state."
    )
    return EXIT_OK
