"""`tfjs-build watch`: build, then rebuild what changes until interrupted, one line (or one JSON
object) per cycle. The watching itself is `tfjsbuild.watch`'s."""

from __future__ import annotations

import argparse
import json
import signal
import threading
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape

from tfjsbuild.cli import options
from tfjsbuild.cli.output import Output
from tfjsbuild.errors import EXIT_INTERRUPTED, EXIT_OK, UsageError
from tfjsbuild.render.console import ConsoleReporter

if TYPE_CHECKING:
    from tfjsbuild.watch import Cycle  # imported lazily below: watchdog is not needed elsewhere


def _quiet_period() -> options.CommandParser:
    # A parent of its own so that --quiet-period keeps its place in the help.
    parser = options.parent()
    parser.add_argument(
        "--quiet-period",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="rebuild once sources have not changed for this long (default 1.0)",
    )
    return parser


def add_parser(subparsers: options.Subparsers) -> None:
    parser = subparsers.add_parser(
        "watch",
        help="build, then rebuild what changes until interrupted",
        **options.examples(
            ("tfjs-build watch", "build, then rebuild on every save until Ctrl-C"),
            ("tfjs-build watch --no-verify -q", "quicker cycles; print failures and cycles only"),
            ("tfjs-build watch --json", "one JSON object per cycle, for tools"),
        ),
        parents=[
            options.manifest_files(
                "manifest file (default: tfjs-build.yaml here); repeat for several"
            ),
            options.jobs("worker processes"),
            _quiet_period(),
            options.json_output("one JSON object per cycle"),
            options.quiet("print failures and cycle summaries only"),
            options.paranoid(),
            options.no_verify(),
            options.cache(),
        ],
    )
    parser.set_defaults(handler=watch)


def watch(args: argparse.Namespace, out: Output) -> int:
    from tfjsbuild.watch import Watcher

    quiet_period: float = args.quiet_period
    if not 0 <= quiet_period <= 3600:  # NaN too: it compares false, and never rebuilt
        raise UsageError(f"--quiet-period must be between 0 and 3600 seconds, got {quiet_period}")
    json_output: bool = args.json_output
    reporter = ConsoleReporter(
        out.err_console if json_output else out.console, quiet=args.quiet or json_output
    )
    terminated = threading.Event()

    def on_cycle(cycle: Cycle) -> None:
        if json_output:
            print(_cycle_json(cycle), file=out.json_out, flush=True)
        else:
            _print_cycle(cycle, out.console, out.err_console)

    def on_sigterm(signum: int, frame: Any) -> None:
        terminated.set()
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    watcher = Watcher(
        args.manifests,
        jobs=args.jobs,
        paranoid=args.paranoid,
        verify=args.verify,
        cache=args.cache,
        quiet_period=quiet_period,
        reporter=reporter,
        on_cycle=on_cycle,
    )
    try:
        watcher.run()
    except KeyboardInterrupt:
        out.err_console.print("Stopped watching; finished outputs and state are kept.")
        return EXIT_OK if terminated.is_set() else EXIT_INTERRUPTED
    finally:
        reporter.close()
        signal.signal(signal.SIGTERM, previous)
    return EXIT_OK


def _cycle_json(cycle: Cycle) -> str:
    report = json.loads(cycle.result.to_json()) if cycle.result is not None else None
    entry = {
        "cycle": cycle.number,
        "trigger": list(cycle.trigger),
        "manifest_error": cycle.manifest_error,
        "waiting": list(cycle.waiting),
        "error": cycle.error,
        "report": report,
    }
    return json.dumps(entry, allow_nan=False)


def _print_cycle(cycle: Cycle, console: Console, err_console: Console) -> None:
    if cycle.trigger == ("(start)",):  # the build watch starts with
        trigger = "first build"
    else:
        trigger = "changed: " + ", ".join(cycle.trigger[:3])
        trigger += f" and {len(cycle.trigger) - 3} more" if len(cycle.trigger) > 3 else ""
    if cycle.manifest_error is not None:
        err_console.print(escape(cycle.manifest_error))
        err_console.print(
            "[yellow]The manifest edit is invalid: still watching with the last good one.[/yellow]"
        )
    for line in cycle.waiting:
        console.print(f"[yellow]waiting[/yellow] for {escape(line)}")
    if cycle.error is not None:
        err_console.print(f"[red]error:[/red] {escape(cycle.error)}")
    result = cycle.result
    if result is None:
        return
    built = sum(1 for r in result.results if r.status == "built")
    failed = sum(1 for r in result.results if r.status == "failed")
    console.print(
        f"[bold]cycle {cycle.number}[/bold] ({escape(trigger)}): {built} built, {failed} failed "
        f"in {result.seconds:.1f}s; watching for changes (Ctrl-C to stop)"
    )
