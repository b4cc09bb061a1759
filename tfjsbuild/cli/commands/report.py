"""`tfjs-build report`: sizes, quantization, verification and build times of what was built, as
a table or JSON, and optionally as an HTML page."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.markup import escape

from tfjsbuild import api
from tfjsbuild.cli import options
from tfjsbuild.cli.output import Output
from tfjsbuild.errors import EXIT_OK, UsageError
from tfjsbuild.files.atomic import write_atomically
from tfjsbuild.render.console import print_report
from tfjsbuild.render.html import report_html
from tfjsbuild.render.json import report_json


def _html() -> options.CommandParser:
    # A parent of its own so that --html keeps its place in the help, before --json.
    parser = options.parent()
    parser.add_argument("--html", metavar="FILE", help="also write a self-contained HTML page")
    return parser


def add_parser(subparsers: options.Subparsers) -> None:
    parser = subparsers.add_parser(
        "report",
        help="sizes, quantization, verification and build times of what was built",
        **options.examples(
            ("tfjs-build report", "a table per model"),
            ("tfjs-build report --html report.html", "a self-contained page for a pull request"),
            ("tfjs-build report --json", "the same, for scripts"),
        ),
        parents=[options.manifest_selection(), _html(), options.json_output()],
    )
    parser.set_defaults(handler=report)


def report(args: argparse.Namespace, out: Output) -> int:
    html: str | None = args.html
    rows = api.report(args.manifests, all_dirs=args.all_dirs)
    if html is not None:
        try:
            write_atomically(Path(html), report_html(rows))
        except OSError as error:
            raise UsageError(f"cannot write --html {html}: {error.strerror or error}") from error
    if args.json_output:
        print(report_json(rows), file=out.json_out)
    else:
        print_report(out.console, rows)
        if html is not None:
            out.console.print(f"Wrote {escape(html)}")
    return EXIT_OK
