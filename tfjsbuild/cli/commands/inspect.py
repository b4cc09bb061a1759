"""`tfjs-build inspect PATH`: the signatures of a SavedModel, a Keras file or a Python source
(`module:callable`), with their fingerprints, as text or JSON. Which kind PATH is decides which
API call reads it; nothing here loads a model."""

from __future__ import annotations

import argparse
from pathlib import Path

from tfjsbuild import api
from tfjsbuild.cli import options
from tfjsbuild.cli.output import Output
from tfjsbuild.errors import EXIT_OK, SourceError
from tfjsbuild.render.console import print_saved_model, print_source
from tfjsbuild.render.json import saved_model_json, source_json
from tfjsbuild.sources.description import inspected_source
from tfjsbuild.sources.saved_model_files import is_saved_model


def add_parser(subparsers: options.Subparsers) -> None:
    parser = subparsers.add_parser(
        "inspect",
        help="list the signatures of a SavedModel, a Keras file or a Python source "
        "(module:callable), with their fingerprints",
        **options.examples(
            ("tfjs-build inspect models/classifier", "a SavedModel folder's signatures"),
            ("tfjs-build inspect models/net.keras", "what a build converts from a Keras file"),
            ("tfjs-build inspect mymodels:build", "a Python source, run from this folder"),
        ),
        parents=[options.paranoid(), options.json_output()],
    )
    parser.add_argument("path", metavar="PATH")
    parser.set_defaults(handler=inspect)


def inspect(args: argparse.Namespace, out: Output) -> int:
    path: str = args.path
    folder = Path(path)
    if not is_saved_model(folder):
        return _inspect_source(path, json_output=args.json_output, out=out)
    description = api.inspect_saved_model(folder, paranoid=args.paranoid)
    if args.json_output:
        print(saved_model_json(description), file=out.json_out)
    else:
        print_saved_model(out.console, description)
    return EXIT_OK


def _inspect_source(path: str, *, json_output: bool, out: Output) -> int:
    """A Keras file, or `module:callable` (run from the current folder, as a manifest there)."""
    source = inspected_source(path)
    try:
        description = api.inspect_source(source)
    except SystemExit as exit:  # the user's code called sys.exit(): inspecting it failed
        raise SourceError(
            f"inspecting {path} failed: its code called sys.exit({exit.code!r})"
        ) from None
    if json_output:
        print(source_json(description), file=out.json_out)
    else:
        print_source(out.console, path, description)
    return EXIT_OK
