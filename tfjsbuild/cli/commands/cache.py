"""`tfjs-build cache stats|prune`: the entries and bytes in each cache; dropping the least
recently used. The caches themselves are `tfjsbuild.stores`' (entries, stores, configuration),
reached through the API."""

from __future__ import annotations

import argparse

from tfjsbuild import api
from tfjsbuild.cli import options
from tfjsbuild.cli.output import Output
from tfjsbuild.errors import EXIT_OK, UsageError
from tfjsbuild.render.console import print_cache_pruned, print_cache_stats


def add_parser(subparsers: options.Subparsers) -> None:
    parser = subparsers.add_parser(
        "cache",
        help="the cache of built signatures: stats, prune",
        **options.examples(
            ("tfjs-build cache stats", "entries and bytes in each cache"),
            ("tfjs-build cache prune --max-bytes 10000000000", "drop the least recently used"),
        ),
    )
    actions = parser.add_subparsers(dest="cache_command", required=True, metavar="ACTION")
    stats = actions.add_parser(
        "stats",
        help="entries and bytes in each cache",
        parents=[options.manifest_selection(), options.cache()],
    )
    stats.set_defaults(handler=cache_stats)
    prune = actions.add_parser(
        "prune",
        help="drop least recently used entries",
        parents=[options.manifest_selection(), options.cache()],
    )
    prune.add_argument(
        "--max-bytes", type=int, required=True, help="shrink each writable cache to this size"
    )
    prune.set_defaults(handler=cache_prune)


def cache_stats(args: argparse.Namespace, out: Output) -> int:
    print_cache_stats(
        out.console, api.cache_stats(args.manifests, all_dirs=args.all_dirs, cache=args.cache)
    )
    return EXIT_OK


def cache_prune(args: argparse.Namespace, out: Output) -> int:
    max_bytes: int = args.max_bytes
    if max_bytes < 0:
        raise UsageError(f"--max-bytes must be at least 0, got {max_bytes}")
    pruned = api.cache_prune(
        args.manifests, all_dirs=args.all_dirs, cache=args.cache, max_bytes=max_bytes
    )
    print_cache_pruned(out.console, pruned)
    return EXIT_OK
