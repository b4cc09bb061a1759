"""Strings from manifests, models and paths are shown as written, never read as rich markup.

A signature named `x[/]y` made plan, report and inspect exit 3 (rich's MarkupError); one named
`[bold]:smile:` would silently lose its name to a style and an emoji.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import STATE, run_cli

MANIFEST = "version: 1\nmodels:\n  m:\n    saved_model: sm\n"


def _masked(text: str) -> str:
    return re.sub(r"\b[0-9a-f]{16}\b", "<hex>", text)


def test_inspect_and_plan_in_a_folder_named_like_markup(
    tmp_path: Path, model_store: Callable[..., Path]
) -> None:
    folder = tmp_path / "[bold]"
    folder.mkdir()
    shutil.copytree(model_store("markup_names"), folder / "sm")
    (folder / "tfjs-build.yaml").write_text(MANIFEST)

    done = run_cli("validate", "-f", "[bold]/tfjs-build.yaml", cwd=tmp_path)
    assert (done.returncode, done.stdout) == (0, "[bold]/tfjs-build.yaml: ok (1 model)\n")

    done = run_cli("plan", "-f", "[bold]/tfjs-build.yaml", cwd=tmp_path)
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == (
        "  build       m:[bold]:smile: → dist/m/[bold]:smile:\n"
        "      because: first build\n"
        "  build       m:x[/]y → dist/m/x[/]y\n"
        "      because: first build\n"
        "2 to build, 0 up to date, 0 to remove\n"
    )

    done = run_cli("inspect", "[bold]/sm", cwd=tmp_path)
    assert (done.returncode, done.stderr) == (0, "")
    signature = (
        "      input  x: float32 [?, 8]\n"
        "      output y[/]z: float32 [?, 8]\n"
        "      fingerprint <hex>  graph <hex>\n"
    )
    assert _masked(done.stdout) == (
        "SavedModel [bold]/sm\n"
        "  tags: serve\n"
        f"    signature [bold]:smile:\n{signature}"
        f"    signature x[/]y\n{signature}"
    )


def test_blocked_plan_and_warnings_show_paths_as_written(tmp_path: Path) -> None:
    folder = tmp_path / "[red]x"
    folder.mkdir()
    (folder / "tfjs-build.yaml").write_text(MANIFEST.replace("sm", '"[i]missing"'))
    (folder / STATE).mkdir(parents=True)
    (folder / STATE / "state.json").write_text("not json")
    done = run_cli("plan", "-f", "[red]x", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.startswith(f"warning: {folder / STATE}/state.json is unreadable (")
    assert done.stdout == (
        "  build       m:* → ?\n"
        "      [red]x/tfjs-build.yaml:4:18: models.m.saved_model: SavedModel folder "
        f"{folder}/[i]missing does not exist (paths are relative to {folder}); export the "
        "model there or fix the path\n"
        '          4 |     saved_model: "[i]missing"\n'
        "            |                  ^\n"
        "1 to build, 0 up to date, 0 to remove\n"
    )


@pytest.mark.slow
def test_run_report_and_clean_show_names_as_written(
    tmp_path: Path, project: Callable[..., Path], model_store: Callable[..., Path]
) -> None:
    # Under a folder named with glob characters too: TensorFlow reads a checkpoint path as a
    # glob, and a SavedModel under `[bold]*?/` did not load at all.
    project(
        MANIFEST.replace("saved_model: sm", "saved_model: '[bold]*?/sm'"),
        {"[bold]*?/sm": model_store("markup_names")},
    )
    done = run_cli("run", "-j", "1", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    built = [line.split("  ")[0] for line in done.stdout.splitlines() if line.startswith("✓")]
    assert built == ["✓ m:[bold]:smile: → dist/m/[bold]:smile:", "✓ m:x[/]y → dist/m/x[/]y"]
    assert (tmp_path / "dist/m/x[/]y/model.json").is_file()

    done = run_cli("report", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rows = [line.split() for line in done.stdout.splitlines()]
    assert [row[:2] for row in rows if row[:1] == ["m"]] == [
        ["m", "[bold]:smile:"],
        ["m", "x[/]y"],
    ]

    done = run_cli("clean", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == (
        "removed dist/m/[bold]:smile:\n"
        "removed dist/m/x[/]y\n"
        "Removed 2 outputs and the build state.\n"
    )
