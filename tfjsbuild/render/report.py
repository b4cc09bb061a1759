"""Showing plans and results: text for people (rich), JSON for build scripts."""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape

from tfjsbuild.building.results import SignatureResult
from tfjsbuild.errors import (
    EXIT_FAILED,
    EXIT_OK,
    LockHeldError,
    ManifestError,
    TfjsBuildError,
    UsageError,
)
from tfjsbuild.files.artifacts import format_bytes
from tfjsbuild.planning.plan import PlanItem

if TYPE_CHECKING:
    from tfjsbuild.building.results import ReportRow

JSON_REPORT_VERSION = 1


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
        workers = "worker" if jobs == 1 else "workers"
        converts = sum(1 for item in items if item.action != "verify")
        verifies = len(items) - converts
        doing = []
        if converts:
            doing.append(f"Converting {converts} signature{'s' if converts != 1 else ''}")
        if verifies:  # built earlier, verified now as they are
            verb = "verifying" if converts else "Verifying"
            doing.append(f"{verb} {verifies} signature{'s' if verifies != 1 else ''}")
        self.console.print(f"{' and '.join(doing)} with {jobs} {workers}")
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
            self.console.print(
                f"[red]✗[/red] {escape(item.key)} failed: {escape(result.error or '')}"
            )
        elif not self.quiet:
            if result.status == "built":
                self.console.print(
                    f"[green]✓[/green] {escape(item.key)} → {escape(item.output)}  "
                    f"{result.seconds:.1f}s  {format_bytes(result.bytes)} "
                    f"(model.json {format_bytes(result.model_json_bytes)}, "
                    f"weights {format_bytes(result.weight_bytes)})  "
                    f"{_verified(result.verification)}"
                    f"[dim]({escape('; '.join(item.reasons))})[/dim]"
                )
            elif result.status == "verified":
                self.console.print(
                    f"[green]✓[/green] {escape(item.key)} → {escape(item.output)}  "
                    f"{result.seconds:.1f}s  {_verified(result.verification)}"
                    "as built, not converted again  "
                    f"[dim]({escape('; '.join(item.reasons))})[/dim]"
                )
            elif result.status == "restored":
                self.console.print(
                    f"[green]↺[/green] {escape(item.key)} → {escape(item.output)}  restored from the "
                    f"{result.cache} cache in {result.seconds:.2f}s  {format_bytes(result.bytes)}  "
                    f"{_verified(result.verification)}"
                    f"[dim]({escape('; '.join(item.reasons))})[/dim]"
                )
            elif result.status == "removed":
                self.console.print(
                    f"[yellow]-[/yellow] {escape(item.key)} removed ({escape(item.output)})"
                )
            elif result.status == "skipped":
                self.console.print(f"[yellow]·[/yellow] {escape(item.key)} skipped")
        if result.status == "removed" and result.error is not None:
            # Files not provably this tool's were left in place: said even with --quiet.
            self.console.print(f"[yellow]warning:[/yellow] {escape(result.error)}")
        if self._progress is not None and result.status in (
            "built",
            "verified",
            "failed",
            "skipped",
        ):
            self._progress.advance(self._task)
            if self._progress.finished:
                self._progress.stop()
                self._progress = None

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def _verified(verification: Mapping[str, Any] | None) -> str:
    if verification is None:
        return ""
    error = verification.get("max_abs_error", 0.0)
    return f"verified (max error {error:.1e})  " if isinstance(error, int | float) else ""


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
            console.print(f"  [dim]up-to-date[/dim]  {escape(item.key)}")
            if item.reasons:  # kept although gone from the manifest (see plan_build)
                console.print(f"      [yellow]{escape('; '.join(item.reasons))}[/yellow]")
        elif item.action == "remove":
            console.print(
                f"  [yellow]remove[/yellow]      {escape(item.key)}  ({escape(item.output)})"
            )
        elif item.action == "verify":
            console.print(
                f"  [cyan]verify[/cyan]      {escape(item.key)} → {escape(item.output)}  (as built)"
            )
            console.print(f"      because: {escape('; '.join(item.reasons))}")
        else:
            restore = f"  (restore from the {item.cached} cache)" if item.cached else ""
            console.print(
                f"  [cyan]build[/cyan]       {escape(item.key)} → "
                f"{escape(item.output or '?')}{restore}"
            )
            if item.blocked is not None:
                for line in item.blocked.splitlines():
                    console.print(f"      [red]{escape(line)}[/red]")
            else:
                console.print(f"      because: {escape('; '.join(item.reasons))}")
    counts = {
        action: sum(1 for i in items if i.action == action)
        for action in ("build", "verify", "up-to-date", "remove")
    }
    verifies = f"{counts['verify']} to verify, " if counts["verify"] else ""
    console.print(
        f"{counts['build']} to build, {verifies}{counts['up-to-date']} up to date, "
        f"{counts['remove']} to remove"
    )


def print_summary(console: Console, results: Sequence[SignatureResult], seconds: float) -> None:
    counts: dict[str, int] = {}
    for result in results:
        counts[result.status] = counts.get(result.status, 0) + 1
    order = ("built", "restored", "verified", "up-to-date", "removed", "failed", "skipped")
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
        "cache": item.cached,
    }


def plan_json(manifests: Sequence[Path], items: Sequence[PlanItem]) -> str:
    ok = not any(item.blocked for item in items)
    payload = {
        **_outcome(EXIT_OK if ok else EXIT_FAILED),
        "manifests": [str(m) for m in manifests],
        "signatures": [item_json(item) for item in items],
    }
    return _dumps(payload)


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
            model_json_bytes=result.model_json_bytes,
            weight_bytes=result.weight_bytes,
            verification=dict(result.verification) if result.verification else None,
            error=result.error,
        )
        signatures.append(entry)
    ok = all(r.status != "failed" for r in results)
    payload = {
        **_outcome(EXIT_OK if ok else EXIT_FAILED),
        "manifests": [str(m) for m in manifests],
        "dry_run": dry_run,
        "seconds": round(seconds, 3),
        "signatures": signatures,
    }
    return _dumps(payload)


def command_json(payload: Mapping[str, Any], *, exit_code: int = EXIT_OK) -> str:
    """Any other command's --json output: the same version, ok and exit_code first."""
    return _dumps({**_outcome(exit_code), **payload})


def error_json(error: BaseException, *, exit_code: int, message: str) -> str:
    """The --json output of a command that ended in an error instead of its report: the same
    version, ok and exit_code as a report, then what went wrong (the text stderr shows)."""
    problems = error.problems if isinstance(error, ManifestError) else []
    payload = {
        **_outcome(exit_code),
        "error": {
            "kind": error_kind(error),
            "message": message,
            "problems": [
                {
                    "file": str(problem.file),
                    "line": problem.line,
                    "column": problem.column,
                    "key_path": problem.key_path,
                    "message": problem.message,
                }
                for problem in problems
            ],
        },
    }
    return _dumps(payload)


def error_kind(error: BaseException) -> str:
    """What a script may branch on: manifest, usage, lock (retry later), build, interrupted,
    or internal (a bug in tfjs-build)."""
    if isinstance(error, ManifestError):
        return "manifest"
    if isinstance(error, UsageError):
        return "usage"
    if isinstance(error, LockHeldError):
        return "lock"
    if isinstance(error, TfjsBuildError):
        return "build"
    if isinstance(error, KeyboardInterrupt):
        return "interrupted"
    return "internal"


def _outcome(exit_code: int) -> dict[str, Any]:
    return {"version": JSON_REPORT_VERSION, "ok": exit_code == EXIT_OK, "exit_code": exit_code}


def _dumps(payload: Mapping[str, Any]) -> str:
    # allow_nan=False: JSON.parse rejects NaN and Infinity, so one reaching here is a bug to fix
    # where it came from (`verify.json_float` writes measured ones as strings).
    return json.dumps(payload, indent=2, allow_nan=False)


def quantization_text(quantization: Mapping[str, Sequence[str]]) -> str:
    if not quantization:
        return "none"
    return "; ".join(
        f"{dtype}: {', '.join(globs)}" for dtype, globs in sorted(quantization.items())
    )


def verification_text(verification: Mapping[str, Any] | None, *, short: bool = False) -> str:
    if verification is None:
        return "not verified"
    error = verification.get("max_abs_error", 0.0)
    shown = f"{error:.2g}" if isinstance(error, int | float) else str(error)
    verdict = "ok" if verification.get("passed") else "FAILED"
    if short:
        return f"{verdict} {shown}"
    return (
        f"{verdict}, max abs error {shown} ({verification.get('samples')} samples, "
        f"atol {verification.get('atol'):g}, rtol {verification.get('rtol'):g})"
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
    table.add_column("build", justify="right")
    for row in rows:
        table.add_row(  # a str cell is read as markup: escape what came from manifests and models
            escape(row.model),
            escape(row.signature),
            format_bytes(row.bytes),
            format_bytes(row.model_json_bytes),
            f"{format_bytes(row.weight_bytes)} / {row.shards}",
            escape(quantization_text(row.quantization)),
            escape(verification_text(row.verification, short=True)),
            f"{row.seconds:.1f}s",
        )
    console.print(table)
    total = sum(row.bytes for row in rows)
    console.print(f"{len(rows)} signatures, {format_bytes(total)} in all")


def report_html(rows: Sequence[ReportRow]) -> str:
    """A self-contained page (inline CSS, no scripts, nothing fetched) with a table per model."""
    by_model: dict[tuple[str, str], list[ReportRow]] = {}
    for row in rows:
        by_model.setdefault((str(row.manifest), row.model), []).append(row)
    sections = []
    for (manifest, model), model_rows in by_model.items():
        body = "\n".join(
            "<tr>"
            f"<td>{html.escape(r.signature)}</td>"
            f"<td class=n>{format_bytes(r.bytes)}</td>"
            f"<td class=n>{format_bytes(r.model_json_bytes)}</td>"
            f"<td class=n>{format_bytes(r.weight_bytes)} in {r.shards} shard{'s' if r.shards != 1 else ''}</td>"
            f"<td>{html.escape(quantization_text(r.quantization))}</td>"
            f"<td class={_verdict_class(r.verification)}>"
            f"{html.escape(verification_text(r.verification))}</td>"
            f"<td class=n>{r.seconds:.1f} s</td>"
            f"<td><code>{html.escape(r.output)}</code></td>"
            "</tr>"
            for r in model_rows
        )
        sections.append(
            f"<h2>{html.escape(model)}</h2>\n<p class=dim>{html.escape(manifest)}</p>\n"
            "<table><thead><tr><th>signature</th><th>size</th><th>model.json</th>"
            "<th>weights</th><th>quantization</th><th>verification</th><th>build</th>"
            f"<th>output</th></tr></thead>\n<tbody>\n{body}\n</tbody></table>"
        )
    total = sum(row.bytes for row in rows)
    failed = sum(
        1 for row in rows if row.verification is not None and not row.verification.get("passed")
    )
    unverified = sum(1 for row in rows if row.verification is None)
    summary = (
        f"{len(rows)} signatures, {format_bytes(total)} in all; "
        f"{len(rows) - failed - unverified} verified, {unverified} not verified"
    )
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>tfjs-build report</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin-bottom: 1.5em; }}
th, td {{ border-bottom: 1px solid #ddd; padding: 4px 10px; text-align: left; }}
th {{ background: #f4f4f4; }}
td.n {{ text-align: right; font-variant-numeric: tabular-nums; }}
.ok {{ color: #17692b; }} .bad {{ color: #b00020; font-weight: bold; }} .dim {{ color: #777; }}
</style>
</head>
<body>
<h1>tfjs-build report</h1>
<p>{html.escape(summary)}</p>
{chr(10).join(sections) or "<p>Nothing built yet.</p>"}
</body>
</html>
"""


def _verdict_class(verification: Mapping[str, Any] | None) -> str:
    if verification is None:
        return "dim"
    return "ok" if verification.get("passed") else "bad"
