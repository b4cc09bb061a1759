"""Showing plans and results: text for people (rich), JSON for build scripts."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from tfjsbuild.execute import SignatureResult
from tfjsbuild.plan import PlanItem

JSON_REPORT_VERSION = 1


def human_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


class ConsoleReporter:
    """Per-signature lines as they finish, with a progress bar on a terminal."""

    def __init__(self, console: Console, *, quiet: bool = False) -> None:
        self.console = console
        self.quiet = quiet
        self._progress: Any = None
        self._task: Any = None

    def build_started(self, items: Sequence[PlanItem], jobs: int) -> None:
        if self.quiet:
            return
        noun = "signature" if len(items) == 1 else "signatures"
        workers = "worker" if jobs == 1 else "workers"
        self.console.print(f"Converting {len(items)} {noun} with {jobs} {workers}")
        if self.console.is_terminal:
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
            self._task = self._progress.add_task("converting", total=len(items))

    def signature_finished(self, result: SignatureResult) -> None:
        item = result.item
        if result.status == "failed":
            self.console.print(f"[red]✗[/red] {item.key} failed: {escape(result.error or '')}")
        elif not self.quiet:
            if result.status == "built":
                self.console.print(
                    f"[green]✓[/green] {item.key} → {item.output}  "
                    f"{result.seconds:.1f}s  {human_bytes(result.bytes)}  "
                    f"[dim]({escape('; '.join(item.reasons))})[/dim]"
                )
            elif result.status == "removed":
                self.console.print(f"[yellow]-[/yellow] {item.key} removed ({item.output})")
            elif result.status == "skipped":
                self.console.print(f"[yellow]·[/yellow] {item.key} skipped")
        if self._progress is not None and result.status in ("built", "failed", "skipped"):
            self._progress.advance(self._task)
            if self._progress.finished:
                self._progress.stop()
                self._progress = None

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


class SilentReporter:
    def build_started(self, items: Sequence[PlanItem], jobs: int) -> None:
        pass

    def signature_finished(self, result: SignatureResult) -> None:
        pass


def print_plan(console: Console, items: Sequence[PlanItem]) -> None:
    if not items:
        console.print("Nothing in the manifest to build.")
        return
    for item in items:
        if item.action == "up-to-date":
            console.print(f"  [dim]up-to-date[/dim]  {item.key}")
        elif item.action == "remove":
            console.print(f"  [yellow]remove[/yellow]      {item.key}  ({item.output})")
        else:
            console.print(f"  [cyan]build[/cyan]       {item.key} → {item.output or '?'}")
            if item.blocked is not None:
                for line in item.blocked.splitlines():
                    console.print(f"      [red]{escape(line)}[/red]")
            else:
                console.print(f"      because: {escape('; '.join(item.reasons))}")
    counts = {
        action: sum(1 for i in items if i.action == action)
        for action in ("build", "up-to-date", "remove")
    }
    console.print(
        f"{counts['build']} to build, {counts['up-to-date']} up to date, {counts['remove']} to remove"
    )


def print_summary(console: Console, results: Sequence[SignatureResult], seconds: float) -> None:
    counts: dict[str, int] = {}
    for result in results:
        counts[result.status] = counts.get(result.status, 0) + 1
    order = ("built", "up-to-date", "removed", "failed", "skipped")
    parts = [f"{counts[status]} {status}" for status in order if counts.get(status)]
    console.print(f"{', '.join(parts) or 'nothing to do'} in {seconds:.1f}s")


def item_json(item: PlanItem) -> dict[str, Any]:
    return {
        "manifest": str(item.manifest),
        "model": item.model,
        "signature": item.signature,
        "output": item.output,
        "action": item.action,
        "reasons": list(item.reasons) if item.blocked is None else [item.blocked],
        "fingerprint": item.fingerprint.digest if item.fingerprint is not None else None,
    }


def plan_json(manifests: Sequence[Path], items: Sequence[PlanItem]) -> str:
    payload = {
        "version": JSON_REPORT_VERSION,
        "manifests": [str(m) for m in manifests],
        "signatures": [item_json(item) for item in items],
    }
    return json.dumps(payload, indent=2)


def results_json(
    manifests: Sequence[Path], results: Sequence[SignatureResult], *, seconds: float, dry_run: bool
) -> str:
    signatures = []
    for result in results:
        entry = item_json(result.item)
        entry.update(
            status=result.status,
            seconds=round(result.seconds, 3),
            bytes=result.bytes,
            error=result.error,
        )
        signatures.append(entry)
    payload = {
        "version": JSON_REPORT_VERSION,
        "manifests": [str(m) for m in manifests],
        "dry_run": dry_run,
        "ok": all(r.status != "failed" for r in results),
        "seconds": round(seconds, 3),
        "signatures": signatures,
    }
    return json.dumps(payload, indent=2)
