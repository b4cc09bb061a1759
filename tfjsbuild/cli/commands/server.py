"""`tfjs-build server status|stop`: the fork servers that keep TensorFlow imported between
builds, so that a build's workers start forked instead of importing it. Whether a build uses
one, and how one is started, is `tfjsbuild.building.fork_server`'s; reached through the API."""

from __future__ import annotations

import argparse

from tfjsbuild import api
from tfjsbuild.cli import options
from tfjsbuild.cli.output import Output
from tfjsbuild.errors import EXIT_OK
from tfjsbuild.render.console import print_servers


def add_parser(subparsers: options.Subparsers) -> None:
    parser = subparsers.add_parser(
        "server",
        help="the fork servers keeping TensorFlow imported between builds: status, stop",
        **options.examples(
            ("tfjs-build server status", "the servers running, their memory and workers"),
            ("tfjs-build server stop", "stop them (the next build starts one again)"),
        ),
    )
    actions = parser.add_subparsers(dest="server_command", required=True, metavar="ACTION")
    status = actions.add_parser("status", help="the servers running, their memory and workers")
    status.set_defaults(handler=server_status)
    stop = actions.add_parser("stop", help="stop them; builds running keep their workers")
    stop.set_defaults(handler=server_stop)


def server_status(args: argparse.Namespace, out: Output) -> int:
    print_servers(out.console, api.servers(), stopped=False)
    return EXIT_OK


def server_stop(args: argparse.Namespace, out: Output) -> int:
    print_servers(out.console, api.stop_servers(), stopped=True)
    return EXIT_OK
