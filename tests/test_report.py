"""`tfjs-build report`: the table, `--json` and the HTML page a team opens in a pull request,
checked as built by real builds and laid out by real Chromium."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import jsonschema
import pytest

import tfjsbuild
from browser import run_page
from conftest import run_cli
from tfjsbuild.files.artifacts import format_bytes

SCHEMA = json.loads(
    (Path(__file__).parents[1] / "schemas" / "build-report.schema.json").read_text()
)
MANIFEST = """\
version: 1
models:
  multi:
    saved_model: multi
    signatures:
      features: {}
      classify: {quantization: {float16: ['*']}, verify: {atol: 0.01}, max_bytes: 100000}
  double:
    python: double:build
    signatures: [serving_default]
"""

DOUBLE = """\
import tensorflow as tf
def build():
    spec = tf.TensorSpec([None, 3], tf.float32, name='x')
    return {'serving_default': tf.function(lambda x: {'y': x * 2.0}, input_signature=[spec])}
"""

# Lays the report out in a 1000 px wide frame and says what overflows or wraps.
LAYOUT_PAGE = """<!doctype html>
<meta charset="utf-8">
<iframe style="width: 1000px; height: 800px; border: 0"></iframe>
<script>
const frame = document.querySelector("iframe");
frame.onload = async () => {
  const page = frame.contentDocument;
  const body = JSON.stringify({
    viewport: page.documentElement.clientWidth,
    scroll_width: page.documentElement.scrollWidth,
    numbers: page.querySelectorAll(".num").length,
    wrapped: [...page.querySelectorAll(".num")]
      .filter((element) => element.getClientRects().length > 1)
      .map((element) => element.textContent),
    bars: [...page.querySelectorAll("svg.size")].map((bar) => bar.getBoundingClientRect().width),
  });
  await fetch("/result", {method: "POST", body});
};
frame.src = "report.html";
</script>
"""


@pytest.mark.slow
def test_report_tables_and_a_self_contained_html_page(
    project: Callable[..., Path], model_store: Callable[..., Path], tmp_path: Path
) -> None:
    manifest = project(MANIFEST, {"multi": model_store("multihead")})
    root = manifest.parent
    (root / "double.py").write_text(DOUBLE)
    assert tfjsbuild.build([manifest], jobs=2).ok
    first = _rows(root)
    assert [r["previous"] for r in first.values()] == [None, None, None]
    # classify at float32 now: rebuilt, twice the weight bytes, a smaller error than float16's.
    manifest.write_text(MANIFEST.replace("quantization: {float16: ['*']}, ", ""))
    assert tfjsbuild.build([manifest], jobs=2).ok

    done = run_cli("report", "--json", "--html", "report.html", cwd=root)
    assert done.returncode == 0, done.stderr
    rows = _rows(root, done.stdout)
    assert list(rows) == ["multi:classify", "multi:features", "double:serving_default"]
    classify, features = rows["multi:classify"], rows["multi:features"]
    assert classify["quantization"] == {}
    assert classify["bytes"] == classify["model_json_bytes"] + classify["weight_bytes"]
    assert classify["weight_bytes"] == (8 * 16 + 16 * 4) * 4  # float32 weights
    assert classify["verification"]["passed"] is True
    assert (classify["max_bytes"], features["max_bytes"]) == (100000, None)
    assert [t["name"] for t in classify["outputs"]] == ["logits", "probs"]
    # What the output replaced: the float16 build's size, error and time, from the state.
    before = first["multi:classify"]
    assert classify["previous"] == {
        "built_at": before["built_at"],
        "bytes": before["bytes"],
        "max_abs_error": before["verification"]["max_abs_error"],
        "content_hash": before["content_hash"],
    }
    assert classify["previous"]["max_abs_error"] > classify["verification"]["max_abs_error"]
    assert features == first["multi:features"]  # up to date: not rebuilt, nothing replaced
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", classify["built_at"])
    index = json.loads((root / "dist/tfjs-build.json").read_text())
    assert classify["content_hash"] == index["models"]["multi"]["classify"]["hash"]
    converter = {"tensorflow", "tensorflowjs", "tfjs-build"}
    assert set(classify["tools"]) == converter | {"@tensorflow/tfjs"}
    assert set(rows["double:serving_default"]["tools"]) > converter | {"keras"}

    page = (root / "report.html").read_text()
    assert page.startswith("<!doctype html>")
    # Each signature with its tensors, a size bar (model.json and weights stacked), the
    # budget drawn where one is set, the change since the output it replaced, and the
    # verification (its whole text on hover); when and with what it was built.
    inputs = ", ".join(f"<span class=num>{t['name']}: {t['dtype']} [" for t in classify["inputs"])
    assert f"<td>classify<div class=io>{inputs}" in page
    assert "logits: float32 [?, 4]</span>, <span class=num>probs: float32 [?, 4]</span>" in page
    assert page.count("<svg class=size") == 3 and page.count('stroke="#b00020"') == 1
    assert "budget (max_bytes) 97.7 KB" in page
    grown = format_bytes(classify["bytes"] - before["bytes"])
    assert f"+{grown} (+" in page and page.count("first build") == 2
    assert "error 0.0" in page and " -&gt; " in page
    assert 'title="ok on wasm, max abs error' in page
    assert "Built with tensorflow 2.19.0, tensorflowjs " in page
    assert "with keras " in page  # the Python source's tools, besides those named once
    assert f"{classify['built_at'][:10]} {classify['built_at'][11:16]} UTC" in page
    assert "http" not in page and "<script" not in page and "<link" not in page

    # As Chromium lays it out at 1,000 px: no horizontal scrolling, no number broken.
    site = tmp_path / "site"
    site.mkdir()
    (site / "report.html").write_text(page)
    (site / "layout.html").write_text(LAYOUT_PAGE)
    layout = run_page(site, "layout.html", tmp_path / "profile")
    assert layout["viewport"] == 1000 and layout["scroll_width"] <= 1000, layout
    assert layout["numbers"] > 20 and layout["wrapped"] == []
    assert len(layout["bars"]) == 3 and all(width > 100 for width in layout["bars"])

    text = run_cli("report", cwd=root).stdout
    assert "since last build" in text and "3 signatures" in text
    assert re.search(rf"classify .* \+{grown} \(\+[\d.]+%\), error ", text)


def _rows(root: Path, report: str | None = None) -> dict[str, dict]:
    """`report --json`'s signatures by model:signature, checked against the schema."""
    if report is None:
        report = run_cli("report", "--json", cwd=root, check=True).stdout
    parsed = json.loads(report)
    jsonschema.validate(parsed, SCHEMA)
    rows = parsed["signatures"]
    return {f"{r['model']}:{r['signature']}": r for r in rows}
