"""The `tfjs-build report --html` page: recorded outputs in, one self-contained HTML string out.

Nothing here writes the file (the command does, atomically), reads state, or fetches anything:
the page has inline CSS, no scripts and no links to load.
"""

from __future__ import annotations

import html
from collections import Counter
from collections.abc import Mapping, Sequence

from tfjsbuild.building.results import ReportRow
from tfjsbuild.files.artifacts import TensorSpec, format_bytes
from tfjsbuild.render.words import (
    error_change_text,
    quantization_text,
    size_change_text,
    tensor_text,
    time_text,
    tools_text,
    total_text,
    verification_text,
)
from tfjsbuild.verify.record import VerificationRecord


def report_html(rows: Sequence[ReportRow]) -> str:
    """A self-contained page (inline CSS, no scripts, nothing fetched) with a table per model."""
    by_model: dict[tuple[str, str], list[ReportRow]] = {}
    for row in rows:
        by_model.setdefault((str(row.manifest), row.model), []).append(row)
    # The tools most signatures were built with, said once; a row says what it used besides.
    tools = Counter(tuple(row.tools.items()) for row in rows).most_common(1)
    common_tools = dict(tools[0][0]) if tools else {}
    sections = [
        _model_section(model, manifest, model_rows, common_tools)
        for (manifest, model), model_rows in by_model.items()
    ]
    verified = sum(1 for row in rows if row.verification is not None and row.verification.passed)
    # Built with verification off, or every backend asked for was skipped: nothing verified.
    unverified = sum(1 for row in rows if row.verification is None or not row.verification.ran)
    summary = (
        f"{len(rows)} signatures, {total_text(rows)} in all; "
        f"{verified} verified, {unverified} not verified"
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
.io {{ font-size: 12px; color: #555; max-width: 30em; }}
svg.size {{ display: block; margin: 2px 0 2px auto; }}
td.ok, td.bad, .num {{ white-space: nowrap; }}
.ok {{ color: #17692b; }} .bad {{ color: #b00020; font-weight: bold; }} .dim {{ color: #777; }}
</style>
</head>
<body>
<h1>tfjs-build report</h1>
<p>{html.escape(summary)}</p>
{f"<p class=dim>Built with {html.escape(tools_text(common_tools))}</p>" if common_tools else ""}
{chr(10).join(sections) or "<p>Nothing built yet.</p>"}
</body>
</html>
"""


def _model_section(
    model: str, manifest: str, rows: Sequence[ReportRow], tools: Mapping[str, str]
) -> str:
    scale = max((max(r.bytes, r.max_bytes or 0) for r in rows), default=0)
    body = "\n".join(_row(r, scale, tools) for r in rows)
    return (
        f"<h2>{html.escape(model)}</h2>\n<p class=dim>{html.escape(manifest)}</p>\n"
        "<table><thead><tr><th>signature</th><th>size</th><th>quantization</th>"
        f"<th>verification</th><th>built</th></tr></thead>\n<tbody>\n{body}\n</tbody></table>"
    )


def _row(r: ReportRow, scale: int, common_tools: Mapping[str, str]) -> str:
    """A signature: its name, tensors and folder; its bytes, budget and change since the output
    it replaced; how it was verified; when and with what it was built."""
    return (
        f"<tr>{_signature_cell(r)}{_size_cell(r, scale)}"
        f"<td>{html.escape(quantization_text(r.quantization, r.quantization_choice))}</td>"
        f"{_verification_cell(r)}{_built_cell(r, common_tools)}</tr>"
    )


def _signature_cell(r: ReportRow) -> str:
    lines = [f"{_tensors(r.inputs)} &rarr; {_tensors(r.outputs)}"] if r.inputs or r.outputs else []
    lines.append(f"<code>{html.escape(r.output)}</code>")
    return f"<td>{html.escape(r.signature)}{_lines(lines)}</td>"


def _size_cell(r: ReportRow, scale: int) -> str:
    shards = f"{r.shards} shard{'s' if r.shards != 1 else ''}"
    lines = [
        f"model.json {_num(format_bytes(r.model_json_bytes))}, {_num(shards)}",
        _num(size_change_text(r.bytes, r.content_hash, r.previous)),
    ]
    return f"<td class=n>{_num(format_bytes(r.bytes))}{_size_bar(r, scale)}{_lines(lines)}</td>"


def _verification_cell(r: ReportRow) -> str:
    change = error_change_text(r.verification, r.previous)
    return (
        f"<td class={_verdict_class(r.verification)} "
        f'title="{html.escape(verification_text(r.verification))}">'
        f"{html.escape(verification_text(r.verification, short=True))}"
        f"{_lines([_num(change)] if change else [])}</td>"
    )


def _built_cell(r: ReportRow, common_tools: Mapping[str, str]) -> str:
    """Build time, when, and the tools it used besides those the page names once."""
    lines = [_num(time_text(r.built_at))]
    besides = {name: v for name, v in r.tools.items() if common_tools.get(name) != v}
    if besides:
        lines.append(f"with {html.escape(tools_text(besides))}")
    return (
        f'<td class=n title="{html.escape(tools_text(r.tools))}">'
        f"{_num(f'{r.seconds:.1f} s')}{_lines(lines)}</td>"
    )


def _lines(lines: Sequence[str]) -> str:
    """Small grey lines under a cell's value (already HTML)."""
    return "".join(f"<div class=io>{line}</div>" for line in lines)


def _num(text: str) -> str:
    """A number with its unit, never broken across lines."""
    return f"<span class=num>{html.escape(text)}</span>"


BAR_WIDTH = 140  # pixels for the largest signature (or budget) of a model


def _size_bar(row: ReportRow, scale: int) -> str:
    """model.json and weights as a stacked bar, the size budget as a red line: inline SVG,
    nothing fetched, no script."""
    if scale <= 0:
        return ""
    json_width = BAR_WIDTH * row.model_json_bytes / scale
    weights_width = BAR_WIDTH * row.weight_bytes / scale
    title = (
        f"model.json {format_bytes(row.model_json_bytes)}, weights {format_bytes(row.weight_bytes)}"
    )
    parts = [
        f'<rect width="{json_width:.1f}" height="12" fill="#9bb0c4"/>',
        f'<rect x="{json_width:.1f}" width="{weights_width:.1f}" height="12" fill="#3f6fa0"/>',
    ]
    if row.max_bytes is not None:
        x = BAR_WIDTH * row.max_bytes / scale
        title += f"; budget (max_bytes) {format_bytes(row.max_bytes)}"
        parts.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="0" y2="16" stroke="#b00020" stroke-width="2"/>'
        )
    return (
        f'<svg class=size width="{BAR_WIDTH + 2}" height="16" role="img">'
        f"<title>{html.escape(title)}</title>{''.join(parts)}</svg>"
    )


def _tensors(specs: Sequence[TensorSpec]) -> str:
    return ", ".join(_num(tensor_text(spec)) for spec in specs)


def _verdict_class(verification: VerificationRecord | None) -> str:
    if verification is None or not verification.ran:  # not verified, or nothing could run
        return "dim"
    return "ok" if verification.passed else "bad"
