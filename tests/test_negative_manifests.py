"""Every bad manifest in tests/negative/manifests gets exactly its expected, located error."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import run_cli

CASES = Path(__file__).parent / "negative" / "manifests"
NAMES = sorted(path.stem for path in CASES.glob("*.yaml"))


def expected_outcome(name: str) -> tuple[int, str]:
    first, _, text = (CASES / f"{name}.expected").read_text("utf-8").partition("\n")
    assert first.startswith("exit: "), f"{name}.expected must start with 'exit: N'"
    return int(first.removeprefix("exit: ")), text


def test_every_case_has_an_expected_outcome() -> None:
    assert NAMES
    assert sorted(p.stem for p in CASES.glob("*.expected")) == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_bad_manifest(name: str, tmp_path: Path) -> None:
    manifest = tmp_path / f"{name}.yaml"
    shutil.copyfile(CASES / f"{name}.yaml", manifest)
    exit_code, text = expected_outcome(name)
    result = run_cli("validate", "-f", manifest.name, cwd=tmp_path, timeout=60)
    assert result.returncode != 3, result.stderr
    assert (result.returncode, result.stderr) == (
        exit_code,
        text.replace("{file}", manifest.name),
    )
