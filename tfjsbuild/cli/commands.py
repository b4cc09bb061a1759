"""One plain function per CLI command: explicit arguments in, exit code out."""

from __future__ import annotations

import json
import signal
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from rich.console import Console
from rich.markup import escape

from tfjsbuild import api
from tfjsbuild.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, SourceError, UsageError
from tfjsbuild.files.artifacts import format_bytes
from tfjsbuild.files.atomic import write_atomically
from tfjsbuild.manifest.load import (
    KERAS_H5_SUFFIXES,
    KERAS_V3_SUFFIX,
    PYTHON_TARGET,
    KerasSource,
    PythonSource,
)
from tfjsbuild.planning.fingerprint import python_source_problem
from tfjsbuild.planning.manifests import load_manifests
from tfjsbuild.render.report import (
    ConsoleReporter,
    command_json,
    print_plan,
    print_report,
    print_summary,
    report_html,
)
from tfjsbuild.sources.saved_model_files import is_saved_model

if TYPE_CHECKING:
    from tfjsbuild.watch import Cycle  # imported lazily below: watchdog is not needed elsewhere


def _warn(console: Console, warnings: Sequence[str]) -> None:
    for warning in warnings:
        console.print(f"[yellow]warning:[/yellow] {escape(warning)}")


def run(
    *,
    manifests: Sequence[str],
    all_dirs: Sequence[str],
    selection: Sequence[str],
    jobs: int | None,
    force: bool,
    dry_run: bool,
    fail_fast: bool,
    paranoid: bool,
    verify: bool,
    cache: str | None,
    executor: str,
    ray_address: str | None,
    json_output: bool,
    quiet: bool,
    console: Console,
    err_console: Console,
    json_out: TextIO | None = None,
) -> int:
    reporter = ConsoleReporter(err_console if json_output else console, quiet=quiet or json_output)
    try:
        result = api.build(
            manifests,
            all_dirs=all_dirs,
            selection=selection,
            jobs=jobs,
            force=force,
            dry_run=dry_run,
            fail_fast=fail_fast,
            paranoid=paranoid,
            verify=verify,
            cache=cache,
            executor=executor,
            ray_address=ray_address,
            reporter=reporter,
        )
    finally:
        reporter.close()
    _warn(err_console, result.warnings)  # stderr: with --json too
    if json_output:
        print(result.to_json(), file=json_out)
    elif dry_run:
        print_plan(console, [r.item for r in result.results])
    elif not quiet:
        print_summary(console, result.results, result.seconds)
    return EXIT_OK if result.ok else EXIT_FAILED


def plan(
    *,
    manifests: Sequence[str],
    all_dirs: Sequence[str],
    selection: Sequence[str],
    force: bool,
    paranoid: bool,
    cache: str | None,
    json_output: bool,
    console: Console,
    err_console: Console,
    json_out: TextIO | None = None,
    verify: bool = True,
) -> int:
    build_plan = api.plan(
        manifests,
        all_dirs=all_dirs,
        selection=selection,
        force=force,
        paranoid=paranoid,
        cache=cache,
        verify=verify,
    )
    _warn(err_console, build_plan.warnings)  # stderr: with --json too
    if json_output:
        print(build_plan.to_json(), file=json_out)
    else:
        print_plan(console, build_plan.items)
    return EXIT_FAILED if any(item.blocked for item in build_plan.items) else EXIT_OK


def validate(*, manifests: Sequence[str], all_dirs: Sequence[str], console: Console) -> int:
    loaded = load_manifests(manifests, all_dirs)
    for manifest in loaded:
        count = len(manifest.models)
        console.print(
            f"{escape(str(manifest.path))}: ok ({count} model{'s' if count != 1 else ''})"
        )
    return EXIT_OK


def clean(
    *, manifests: Sequence[str], all_dirs: Sequence[str], console: Console, err_console: Console
) -> int:
    # What clean leaves alone (not provably its own) comes back as warnings: say them plainly.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        removed = api.clean(manifests, all_dirs=all_dirs)
    _warn(err_console, [str(warning.message) for warning in caught])
    for output in removed:
        console.print(f"removed {escape(output)}")
    console.print(
        f"Removed {len(removed)} output{'s' if len(removed) != 1 else ''} and the build state."
    )
    return EXIT_OK


def inspect(
    *,
    path: str,
    paranoid: bool,
    json_output: bool,
    console: Console,
    json_out: TextIO | None = None,
) -> int:
    folder = Path(path)
    if not is_saved_model(folder):
        return _inspect_source(path, json_output=json_output, console=console, json_out=json_out)
    payload = api.inspect_saved_model(folder, paranoid=paranoid)
    if json_output:
        print(command_json(payload), file=json_out)
        return EXIT_OK
    # Everything below comes from the model file: escaped, as rich would read `[x]` as markup.
    console.print(f"SavedModel {escape(str(folder))}")
    for meta in payload["meta_graphs"]:
        console.print(f"  tags: {escape(', '.join(meta['tags'])) or '(none)'}")
        if meta["fingerprint_fallback"]:
            console.print(f"  fingerprint: whole model ({escape(meta['fingerprint_fallback'])})")
        for sig in meta["signatures"]:
            console.print(f"    signature [bold]{escape(sig['name'])}[/bold]")
            for side in ("inputs", "outputs"):
                for tensor in sig[side]:
                    console.print(f"      {side[:-1]:<6} {_tensor_text(tensor)}")
            fingerprint = sig.get("fingerprint")
            if fingerprint:
                console.print(
                    f"      fingerprint {fingerprint['digest'][:16]}  graph {fingerprint['graph'][:16]}"
                )
                for capture in fingerprint["captures"]:
                    console.print(
                        f"        {capture['kind']:<9} {escape(capture['name'])}  "
                        f"{capture['digest'][:24]}"
                    )
    return EXIT_OK


def _inspect_source(
    path: str, *, json_output: bool, console: Console, json_out: TextIO | None
) -> int:
    """A Keras file, or `module:callable` (run from the current folder, as a manifest there)."""
    file = Path(path)
    source: KerasSource | PythonSource
    if file.is_file() and file.suffix.lower() in (KERAS_V3_SUFFIX, *KERAS_H5_SUFFIXES):
        source = KerasSource(file, "graph_model")
    elif not file.exists() and PYTHON_TARGET.fullmatch(path):
        source = PythonSource(path, (), Path.cwd())
        problem = python_source_problem(source)
        if problem is not None:
            raise UsageError(problem)
    else:
        raise UsageError(
            f"{path} is not a SavedModel folder (no saved_model.pb), a .keras or .h5 file, or "
            "a Python source module:callable"
        )
    try:
        payload = api.inspect_source(source)
    except SystemExit as exit:  # the user's code called sys.exit(): inspecting it failed
        raise SourceError(
            f"inspecting {path} failed: its code called sys.exit({exit.code!r})"
        ) from None
    if json_output:
        print(command_json(payload), file=json_out)
        return EXIT_OK
    if isinstance(source, KerasSource):
        console.print(f"Keras model {escape(path)} ({payload['container']})")
    else:
        inputs = ", ".join(payload["inputs"])
        console.print(f"Python source {escape(path)} (inputs: {escape(inputs)})")
    console.print(f"  fingerprint {payload['fingerprint'][:16]}")
    for sig in payload["signatures"]:
        console.print(f"    signature [bold]{escape(sig['name'])}[/bold]")
        if "error" in sig:
            console.print(f"      [red]{escape(sig['error'])}[/red]")
            continue
        for side in ("inputs", "outputs"):
            for tensor in sig[side]:
                console.print(f"      {side[:-1]:<6} {_tensor_text(tensor)}")
    return EXIT_OK


def _tensor_text(tensor: dict[str, Any]) -> str:
    """`name: dtype [shape]`, escaped for rich (names come from the model)."""
    shape = "unknown rank" if tensor["shape"] is None else _shape(tensor["shape"])
    return escape(f"{tensor['name']}: {tensor['dtype']} {shape}")


def _shape(shape: Sequence[int | None]) -> str:
    return "[" + ", ".join("?" if dim is None else str(dim) for dim in shape) + "]"


def watch(
    *,
    manifests: Sequence[str],
    jobs: int | None,
    paranoid: bool,
    verify: bool,
    cache: str | None,
    quiet_period: float,
    json_output: bool,
    quiet: bool,
    console: Console,
    err_console: Console,
    json_out: TextIO | None = None,
) -> int:
    from tfjsbuild.watch import Watcher

    if not 0 <= quiet_period <= 3600:  # NaN too: it compares false, and never rebuilt
        raise UsageError(f"--quiet-period must be between 0 and 3600 seconds, got {quiet_period}")
    reporter = ConsoleReporter(err_console if json_output else console, quiet=quiet or json_output)
    terminated = threading.Event()

    def on_cycle(cycle: Cycle) -> None:
        if json_output:
            report = json.loads(cycle.result.to_json()) if cycle.result is not None else None
            entry = {
                "cycle": cycle.number,
                "trigger": list(cycle.trigger),
                "manifest_error": cycle.manifest_error,
                "waiting": list(cycle.waiting),
                "error": cycle.error,
                "report": report,
            }
            print(json.dumps(entry, allow_nan=False), file=json_out, flush=True)
            return
        _print_cycle(cycle, console, err_console)

    def on_sigterm(signum: int, frame: Any) -> None:
        terminated.set()
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    watcher = Watcher(
        manifests,
        jobs=jobs,
        paranoid=paranoid,
        verify=verify,
        cache=cache,
        quiet_period=quiet_period,
        reporter=reporter,
        on_cycle=on_cycle,
    )
    try:
        watcher.run()
    except KeyboardInterrupt:
        err_console.print("Stopped watching; finished outputs and state are kept.")
        return EXIT_OK if terminated.is_set() else EXIT_INTERRUPTED
    finally:
        reporter.close()
        signal.signal(signal.SIGTERM, previous)
    return EXIT_OK


def _print_cycle(cycle: Cycle, console: Console, err_console: Console) -> None:
    trigger = ", ".join(cycle.trigger[:3]) + (
        f" and {len(cycle.trigger) - 3} more" if len(cycle.trigger) > 3 else ""
    )
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


def report(
    *,
    manifests: Sequence[str],
    all_dirs: Sequence[str],
    html: str | None,
    json_output: bool,
    console: Console,
    json_out: TextIO | None = None,
) -> int:
    rows = api.report(manifests, all_dirs=all_dirs)
    if html is not None:
        try:
            write_atomically(Path(html), report_html(rows))
        except OSError as error:
            raise UsageError(f"cannot write --html {html}: {error.strerror or error}") from error
    if json_output:
        print(command_json({"signatures": [row.as_dict() for row in rows]}), file=json_out)
    else:
        print_report(console, rows)
        if html is not None:
            console.print(f"Wrote {escape(html)}")
    return EXIT_OK


def cache(
    *,
    action: str,
    manifests: Sequence[str],
    all_dirs: Sequence[str],
    cache: str | None,
    max_bytes: int | None,
    console: Console,
) -> int:
    if action == "prune":
        assert max_bytes is not None
        if max_bytes < 0:
            raise UsageError(f"--max-bytes must be at least 0, got {max_bytes}")
        for label, url, stats in api.cache_prune(
            manifests, all_dirs=all_dirs, cache=cache, max_bytes=max_bytes
        ):
            console.print(
                f"{label} cache {escape(url)}: removed {stats['removed_entries']} entries; "
                f"{stats['entries']} left, {format_bytes(stats['bytes'])}"
            )
        return EXIT_OK
    for label, url, stats in api.cache_stats(manifests, all_dirs=all_dirs, cache=cache):
        console.print(
            f"{label} cache {escape(url)}: {stats['entries']} entries, {stats['blobs']} blobs, "
            f"{format_bytes(stats['bytes'])}"
        )
    return EXIT_OK


def not_implemented(command: str, *, console: Console) -> int:
    raise UsageError(f"`tfjs-build {command}` is not implemented yet in this version")
