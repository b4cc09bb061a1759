"""Text for people, through rich: build progress as it happens, the plan, the summary, the
report table and what `inspect` found.

Everything here takes typed values (plan items, results, report rows, source descriptions) and prints them to the
`Console` it is given. Nothing here reads files, writes anything but that console, or decides
what to build or whether a build passed: those decisions arrive made, in the values.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape

from tfjsbuild.building.fork_server import ServerStatus
from tfjsbuild.building.results import ReportRow, SignatureResult
from tfjsbuild.files.artifacts import TensorSpec, format_bytes
from tfjsbuild.manifest.types import state_dir_for
from tfjsbuild.planning.plan import PlanItem
from tfjsbuild.render.words import (
    duration_text,
    error_change_text,
    quantization_text,
    size_change_text,
    tensor_text,
    time_text,
    total_text,
    verification_text,
)
from tfjsbuild.sources.description import SavedModelDescription, SourceDescription
from tfjsbuild.sources.registry import kind_of
from tfjsbuild.verify.record import VerificationRecord
from tfjsbuild.verify.runtime import no_browser_reason

# The outcomes of the conversions and verifications build_started counted: each is one step of
# the progress bar.
_PROGRESS_STEPS = ("built", "verified", "failed", "skipped")


class ConsoleReporter:
    """Per-signature lines as they finish, with a progress bar on a terminal."""

    def __init__(self, console: Console, *, quiet: bool = False) -> None:
        self.console = console
        self.quiet = quiet
        self._progress: Any = None
        self._task: Any = None

    def build_started(self, items: Sequence[PlanItem], jobs: int, starting: int, how: str) -> None:
        if self.quiet:
            return
        self.console.print(_starting_line(items, jobs, starting, how))
        if self.console.is_terminal:
            self._start_progress(len(items))

    def _start_progress(self, total: int) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self._progress = Progress(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        )
        self._progress.start()
        self._task = self._progress.add_task("converting", total=total)

    def working(self, running: Mapping[str, str]) -> None:
        if self._progress is not None:
            self._progress.update(self._task, description=working_text(running))

    def notice(self, text: str) -> None:
        if not self.quiet:
            self.console.print(escape(text))

    def signature_finished(self, result: SignatureResult) -> None:
        for warning in result.warnings:  # the static check of quantized weights: even with -q
            self.console.print(
                f"[yellow]warning:[/yellow] {escape(result.item.key)}: {escape(warning)}"
            )
        line = _result_line(result)
        if line is not None and (result.status == "failed" or not self.quiet):
            self.console.print(line)
        if result.status == "removed" and result.error is not None:
            # Files not provably this tool's were left in place: said even with --quiet.
            self.console.print(f"[yellow]warning:[/yellow] {escape(result.error)}")
        if self._progress is not None and result.status in _PROGRESS_STEPS:
            self._progress.advance(self._task)
            if self._progress.finished:
                self._progress.stop()
                self._progress = None

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def working_text(running: Mapping[str, str]) -> str:
    """The progress line's words: what the first worker does, and how many more are busy."""
    if not running:
        return "converting"
    key, phase = min(running.items())
    more = f" (+{len(running) - 1} more)" if len(running) > 1 else ""
    return f"{phase} {escape(key)}{more}"


def _starting_line(items: Sequence[PlanItem], jobs: int, starting: int, how: str) -> str:
    workers = "worker" if jobs == 1 else "workers"
    converts = sum(1 for item in items if item.action != "verify")
    verifies = len(items) - converts
    doing = []
    if converts:
        doing.append(f"Converting {converts} signature{'s' if converts != 1 else ''}")
    if verifies:  # built earlier, verified now as they are
        verb = "verifying" if converts else "Verifying"
        doing.append(f"{verb} {verifies} signature{'s' if verifies != 1 else ''}")
    start = f", starting {starting} ({escape(how)})" if starting else ""
    return f"{' and '.join(doing)} with {jobs} {workers}{start}"


def _result_line(result: SignatureResult) -> str | None:
    """The line (rich markup) for one finished signature; None for an up-to-date one."""
    item = result.item
    target = f"{escape(item.key)} → {escape(item.output)}"
    reasons = f"[dim]({escape('; '.join(item.reasons))})[/dim]"
    if result.status == "failed":
        return f"[red]✗[/red] {escape(item.key)} failed: {escape(result.error or '')}"
    if result.status == "built":
        return (
            f"[green]✓[/green] {target}  "
            f"{result.seconds:.1f}s  {format_bytes(result.bytes)} "
            f"(model.json {format_bytes(result.model_json_bytes)}, "
            f"weights {format_bytes(result.weight_bytes)})  "
            f"{_verified(result.verification)}{_chosen(result)}{reasons}"
        )
    if result.status == "verified":
        return (
            f"[green]✓[/green] {target}  "
            f"{result.seconds:.1f}s  {_verified(result.verification)}"
            f"as built, not converted again  {reasons}"
        )
    if result.status == "restored":
        return (
            f"[green]↺[/green] {target}  restored from the "
            f"{result.cache} cache in {result.seconds:.2f}s  {format_bytes(result.bytes)}  "
            f"{_verified(result.verification)}{_chosen(result)}{reasons}"
        )
    if result.status == "removed":
        return f"[yellow]-[/yellow] {escape(item.key)} removed ({escape(item.output)})"
    if result.status == "skipped":
        return f"[yellow]·[/yellow] {escape(item.key)} skipped"
    return None


def _chosen(result: SignatureResult) -> str:
    """`quantization auto: uint8 (-74% weights vs float32)  ` when auto chose; else ""."""
    if result.quantization is None:
        return ""
    return f"quantization auto: {escape(result.quantization.summary())}  "


def _verified(verification: VerificationRecord | None) -> str:
    if verification is None:
        return ""
    if not verification.ran:  # every backend asked for was skipped: nothing was verified
        return f"{verification_text(verification)}  "
    skipped = [run.backend for run in verification.backends if run.skipped]
    text = f"verified on {', '.join(run.backend for run in verification.ran)}"
    if math.isfinite(verification.max_abs_error):  # only a failed check measures NaN or inf
        text += f" (max error {verification.max_abs_error:.1e})"
    return f"{text}{''.join(f', {name} skipped' for name in skipped)}  "


class SilentReporter:
    def build_started(self, items: Sequence[PlanItem], jobs: int, starting: int, how: str) -> None:
        pass

    def signature_finished(self, result: SignatureResult) -> None:
        pass

    def notice(self, text: str) -> None:
        pass

    def working(self, running: Mapping[str, str]) -> None:
        pass


def print_plan(console: Console, items: Sequence[PlanItem]) -> None:
    if not items:
        console.print("Nothing in the manifest to build.")
        return
    for item in items:
        _print_plan_item(console, item)
    counts = {
        action: sum(1 for i in items if i.action == action)
        for action in ("build", "verify", "up-to-date", "remove")
    }
    verifies = f"{counts['verify']} to verify, " if counts["verify"] else ""
    console.print(
        f"{counts['build']} to build, {verifies}{counts['up-to-date']} up to date, "
        f"{counts['remove']} to remove"
    )


def _print_plan_item(console: Console, item: PlanItem) -> None:
    if item.action == "up-to-date":
        console.print(f"  [dim]up-to-date[/dim]  {escape(item.key)}{_kept_choice(item)}")
        if item.reasons:  # kept although gone from the manifest (see plan_build)
            console.print(f"      [yellow]{escape('; '.join(item.reasons))}[/yellow]")
    elif item.action == "remove":
        console.print(f"  [yellow]remove[/yellow]      {escape(item.key)}  ({escape(item.output)})")
    elif item.action == "verify":
        console.print(
            f"  [cyan]verify[/cyan]      {escape(item.key)} → {escape(item.output)}  (as built)"
            f"{_kept_choice(item)}"
        )
        console.print(f"      because: {escape('; '.join(item.reasons))}")
    else:
        restore = f"  (restore from the {item.cached} cache)" if item.cached else ""
        console.print(
            f"  [cyan]build[/cyan]       {escape(item.key)} → {escape(item.output or '?')}{restore}"
        )
        if item.blocked is not None:
            for line in item.blocked.splitlines():
                console.print(f"      [red]{escape(line)}[/red]")
        else:
            console.print(f"      because: {escape('; '.join(item.reasons))}")


def _kept_choice(item: PlanItem) -> str:
    """`  (quantization auto: uint8 (-75% weights vs float32))` for an `auto` output kept."""
    if item.quantization is None:
        return ""
    return f"  [dim](quantization auto: {escape(item.quantization.summary())})[/dim]"


def print_summary(console: Console, results: Sequence[SignatureResult], seconds: float) -> None:
    # What the workers printed (TensorFlow's messages, tracebacks): where to look after a
    # failure a worker met (its outcome has timings; one refused before any work has none).
    failed = {r.item.manifest for r in results if r.status == "failed" and r.timings is not None}
    for log in sorted(state_dir_for(manifest) / "worker.log" for manifest in failed):
        if log.is_file():
            console.print(f"the workers' messages are in {escape(os.path.relpath(log))}")
    counts: dict[str, int] = {}
    for result in results:
        status: str = result.status
        if status == "verified" and result.verification and not result.verification.ran:
            status = "not verified"  # verified again, but every backend asked for was skipped
        counts[status] = counts.get(status, 0) + 1
    order = ["built", "restored", "verified", "not verified", "up-to-date", "removed"]
    order += ["failed", "skipped"]
    parts = [f"{counts[status]} {status}" for status in order if counts.get(status)]
    console.print(f"{', '.join(parts) or 'nothing to do'} in {seconds:.1f}s")
    skipped: dict[str, int] = {}
    for result in results:
        for run in result.verification.backends if result.verification is not None else ():
            if run.skipped:
                skipped[run.backend] = skipped.get(run.backend, 0) + 1
    for backend, count in sorted(skipped.items()):
        signatures = f"{count} signature{'s' if count > 1 else ''}"
        # Why, as this machine is now (an up-to-date record may have been skipped for another
        # reason): only webgl is ever skipped, for want of a browser.
        console.print(
            f"[yellow]warning:[/yellow] not verified on {backend} for {signatures}: "
            f"{escape(no_browser_reason())}"
        )


def print_report(console: Console, rows: Sequence[ReportRow]) -> None:
    from rich import box
    from rich.table import Table

    if not rows:
        console.print("Nothing built yet: run `tfjs-build run` first.")
        return
    if not console.is_terminal:
        # A log or a pipe has no width to fit: rich's 80-column default would fold every cell.
        console = Console(
            file=console.file, width=200, highlight=False, color_system=None, emoji=False
        )
    table = Table(box=box.SIMPLE_HEAD)
    for column in ("model", "signature", "size", "model.json", "weights/shards", "quantization"):
        numeric = column in ("size", "model.json", "weights/shards")
        table.add_column(column, justify="right" if numeric else "left")
    table.add_column("verified (max error)")
    table.add_column("since last build")
    table.add_column("build", justify="right")
    table.add_column("built")
    for row in rows:
        change = size_change_text(row.bytes, row.content_hash, row.previous)
        error_change = error_change_text(row.verification, row.previous)
        table.add_row(  # a str cell is read as markup: escape what came from manifests and models
            escape(row.model),
            escape(row.signature),
            format_bytes(row.bytes),
            format_bytes(row.model_json_bytes),
            f"{format_bytes(row.weight_bytes)} / {row.shards}",
            escape(quantization_text(row.quantization, row.quantization_choice)),
            escape(verification_text(row.verification, short=True)),
            change + (f", {error_change}" if error_change else ""),
            f"{row.seconds:.1f}s",
            time_text(row.built_at),
        )
    console.print(table)
    console.print(f"{len(rows)} signatures, {total_text(rows)} in all")


def print_saved_model(console: Console, description: SavedModelDescription) -> None:
    """`tfjs-build inspect` of a SavedModel: tag sets, signatures, tensors, graph fingerprints."""
    # Everything below comes from the model file: escaped, as rich would read `[x]` as markup.
    console.print(f"SavedModel {escape(str(description.path))}")
    for meta in description.meta_graphs:
        console.print(f"  tags: {escape(', '.join(meta.tags)) or '(none)'}")
        if meta.fingerprint_fallback:
            console.print(f"  fingerprint: whole model ({escape(meta.fingerprint_fallback)})")
        for described in meta.signatures:
            sig, graph = described.signature, described.fingerprint
            console.print(f"    signature [bold]{escape(sig.name)}[/bold]")
            _print_tensors(console, [t.spec for t in sig.inputs], "input")
            _print_tensors(console, [t.spec for t in sig.outputs], "output")
            if graph is not None:
                console.print(f"      fingerprint {graph.digest[:16]}  graph {graph.graph[:16]}")
                for capture in graph.captures:
                    console.print(
                        f"        {capture.kind:<9} {escape(capture.name)}  {capture.digest[:24]}"
                    )


def print_source(console: Console, shown: str, description: SourceDescription) -> None:
    """`tfjs-build inspect` of a Keras file or Python source the user named as `shown`."""
    source = description.source
    console.print(escape(kind_of(source).inspect_heading(shown, source)))
    console.print(f"  fingerprint {description.fingerprint[:16]}")
    for sig in description.signatures:
        console.print(f"    signature [bold]{escape(sig.name)}[/bold]")
        if sig.error is not None:
            console.print(f"      [red]{escape(sig.error)}[/red]")
            continue
        _print_tensors(console, sig.inputs, "input")
        _print_tensors(console, sig.outputs, "output")


def _print_tensors(console: Console, tensors: Sequence[TensorSpec], side: str) -> None:
    for tensor in tensors:
        console.print(f"      {side:<6} {escape(tensor_text(tensor))}")


# One cache (label, URL) and its counts, as `api.cache_stats` / `api.cache_prune` give them.
CacheCounts = tuple[str, str, dict[str, int]]


def print_cache_stats(console: Console, caches: Sequence[CacheCounts]) -> None:
    """`tfjs-build cache stats`: each cache's entries, blobs and bytes."""
    for label, url, stats in caches:
        console.print(
            f"{label} cache {escape(url)}: {stats['entries']} entries, {stats['blobs']} blobs, "
            f"{format_bytes(stats['bytes'])}"
        )


def print_servers(console: Console, servers: Sequence[ServerStatus], *, stopped: bool) -> None:
    """`tfjs-build server status|stop`: each server, its age, memory and running workers."""
    if not servers:
        console.print("no fork server is running" if not stopped else "no fork server to stop")
        return
    now = time.time()
    for server in servers:
        memory = "" if server.resident_bytes is None else f", {format_bytes(server.resident_bytes)}"
        use = "this installation's" if server.current else "another installation or environment's"
        verb = "stopping" if stopped else "running"
        console.print(
            f"server pid {server.pid} ({use}) {verb}: started {duration_text(now - server.started)} ago"
            f"{memory}, {server.workers} worker{'s' if server.workers != 1 else ''} running"
        )


def print_cache_pruned(console: Console, caches: Sequence[CacheCounts]) -> None:
    """`tfjs-build cache prune`: what each writable cache dropped, and what is left."""
    for label, url, stats in caches:
        console.print(
            f"{label} cache {escape(url)}: removed {stats['removed_entries']} entries; "
            f"{stats['entries']} left, {format_bytes(stats['bytes'])}"
        )
