"""The `tfjs-build report --html` page: recorded outputs in, one self-contained HTML string out.

Nothing here writes the file (the command does, atomically), reads state, or fetches anything:
the page has inline CSS, no scripts and no links to load.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

from tfjsbuild.building.results import ReportRow
from tfjsbuild.files.artifacts import TensorSpec, format_bytes
from tfjsbuild.render.words import quantization_text, tensor_text, verification_text
from tfjsbuild.verify.record import VerificationRecord


def report_html(rows: Sequence[ReportRow]) -> str:
    """A self-contained page (inline CSS, no scripts, nothing fetched) with a table per model."""
    by_model: dict[tuple[str, str], list[ReportRow]] = {}
    for row in rows:
        by_model.setdefault((str(row.manifest), row.model), []).append(row)
    sections = [
        _model_section(model, manifest, model_rows)
        for (manifest, model), model_rows in by_model.items()
    ]
    total = sum(row.bytes for row in rows)
    verified = sum(1 for row in rows if row.verification is not None and row.verification.passed)
    # Built with verification off, or every backend asked for was skipped: nothing verified.
    unverified = sum(1 for row in rows if row.verification is None or not row.verification.ran)
    summary = (
        f"{len(rows)} signatures, {format_bytes(total)} in all; "
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
td.n {{ text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }}
.io {{ font-size: 12px; color: #555; max-width: 30em; }}
svg.size {{ display: block; }}
td.ok, td.bad {{ white-space: nowrap; }}
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


def _model_section(model: str, manifest: str, rows: Sequence[ReportRow]) -> str:
    scale = max((max(r.bytes, r.max_bytes or 0) for r in rows), default=0)
    body = "\n".join(_row(r, scale) for r in rows)
    return (
        f"<h2>{html.escape(model)}</h2>\n<p class=dim>{html.escape(manifest)}</p>\n"
        "<table><thead><tr><th>signature</th><th>size</th><th></th><th>quantization</th>"
        f"<th>verification</th><th>build</th></tr></thead>\n<tbody>\n{body}\n</tbody></table>"
    )


def _row(r: ReportRow, scale: int) -> str:
    """A signature: its name, tensors and folder; its bytes and budget; how it was verified."""
    shards = f"{r.shards} shard{'s' if r.shards != 1 else ''}"
    return (
        "<tr>"
        f"<td>{html.escape(r.signature)}"
        f"<div class=io>{_tensors(r.inputs)} &rarr; {_tensors(r.outputs)}</div>"
        f"<div class=io><code>{html.escape(r.output)}</code></div></td>"
        f"<td class=n>{format_bytes(r.bytes)}<div class=io>model.json "
        f"{format_bytes(r.model_json_bytes)}, {shards}</div></td>"
        f"<td>{_size_bar(r, scale)}</td>"
        f"<td>{html.escape(quantization_text(r.quantization))}</td>"
        f"<td class={_verdict_class(r.verification)} "
        f'title="{html.escape(verification_text(r.verification))}">'
        f"{html.escape(verification_text(r.verification, short=True))}</td>"
        f"<td class=n>{r.seconds:.1f} s</td>"
        "</tr>"
    )


BAR_WIDTH = 160  # pixels for the largest signature (or budget) of a model


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
    return ", ".join(html.escape(tensor_text(spec)) for spec in specs)


def _verdict_class(verification: VerificationRecord | None) -> str:
    if verification is None or not verification.ran:  # not verified, or nothing could run
        return "dim"
    return "ok" if verification.passed else "bad"
