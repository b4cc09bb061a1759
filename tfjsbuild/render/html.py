"""The `tfjs-build report --html` page: recorded outputs in, one self-contained HTML string out.

Nothing here writes the file (the command does, atomically), reads state, or fetches anything:
the page has inline CSS, no scripts and no links to load.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

from tfjsbuild.building.results import ReportRow
from tfjsbuild.files.artifacts import format_bytes
from tfjsbuild.render.words import quantization_text, verification_text
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


def _model_section(model: str, manifest: str, rows: Sequence[ReportRow]) -> str:
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
        for r in rows
    )
    return (
        f"<h2>{html.escape(model)}</h2>\n<p class=dim>{html.escape(manifest)}</p>\n"
        "<table><thead><tr><th>signature</th><th>size</th><th>model.json</th>"
        "<th>weights</th><th>quantization</th><th>verification</th><th>build</th>"
        f"<th>output</th></tr></thead>\n<tbody>\n{body}\n</tbody></table>"
    )


def _verdict_class(verification: VerificationRecord | None) -> str:
    if verification is None or not verification.ran:  # not verified, or nothing could run
        return "dim"
    return "ok" if verification.passed else "bad"
