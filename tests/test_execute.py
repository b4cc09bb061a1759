"""Interrupted builds: killed or Ctrl-C'd mid-way, the previous outputs and state survive."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import tfjsbuild
from conftest import default_sigint
from tfjsbuild.stores.lock import BuildLock
from tfjsbuild.stores.state import load_state

pytestmark = pytest.mark.slow

DEEP = "version: 1\nmodels:\n  deep:\n    saved_model: deep\n    signatures: [first, second]\n"


def files(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def start_build(manifest: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tfjsbuild", "run", "-j", "1", "-f", str(manifest)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's Ctrl-C would reach
        preexec_fn=default_sigint,
    )


def wait_until_recorded(
    manifest: Path, key: str, fingerprint_not: str | None, timeout: float = 180
) -> None:
    """Poll the state file until `key` is recorded with a new fingerprint (the first swap)."""
    state_file = manifest.parent / ".tfjs-build/manifests/tfjs-build.yaml/state.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            record = json.loads(state_file.read_text())["signatures"].get(key)
        except (OSError, ValueError):
            record = None
        if record is not None and record["fingerprint"] != fingerprint_not:
            return
        time.sleep(0.02)
    pytest.fail(f"{key} was not built within {timeout}s")


@pytest.fixture
def rebuilt_deep(
    project: Callable[..., Path], model_store: Callable[..., Path]
) -> tuple[Path, dict[str, str]]:
    """A deep model built once, then re-exported with new weights: both signatures must rebuild."""
    manifest = project(DEEP, {"deep": model_store("deep")})
    assert tfjsbuild.build([manifest], jobs=1).ok
    state, _ = load_state(manifest.parent / ".tfjs-build/manifests/tfjs-build.yaml")
    old = {key: record.fingerprint for key, record in state.records.items()}
    project(DEEP, {"deep": model_store("deep", seed=99)})
    reasons = {item.reasons for item in tfjsbuild.plan([manifest]).items}
    assert len(reasons) == 1 and next(iter(reasons))[0].startswith("weights changed: layers/")
    return manifest, old


@pytest.mark.parametrize("how", ["SIGKILL", "SIGINT"])
def test_interrupted_build_keeps_finished_work_and_previous_outputs(
    rebuilt_deep: tuple[Path, dict[str, str]], how: str
) -> None:
    manifest, old = rebuilt_deep
    root = manifest.parent
    second_before = files(root / "dist/deep/second")

    build = start_build(manifest)
    wait_until_recorded(manifest, "deep:first", fingerprint_not=old["deep:first"])
    os.killpg(build.pid, getattr(signal, how))
    _, stderr = build.communicate(timeout=60)

    if how == "SIGINT":
        assert build.returncode == 130, stderr
        assert "interrupted; finished outputs and state are kept" in stderr
        assert "Traceback" not in stderr
        # A clean stop leaves no staging folder behind.
        assert not (root / ".tfjs-build/manifests/tfjs-build.yaml/staging").exists()
    else:
        assert build.returncode == -signal.SIGKILL
        subprocess.run(["pkill", "-KILL", "-g", str(build.pid)], check=False)  # orphaned workers

    # `second` was being converted: its previous output and state are exactly as they were.
    assert files(root / "dist/deep/second") == second_before
    state, warnings = load_state(root / ".tfjs-build/manifests/tfjs-build.yaml")
    assert warnings == []
    assert state.records["deep:second"].fingerprint == old["deep:second"]
    assert state.records["deep:first"].fingerprint != old["deep:first"]
    with BuildLock(
        root / ".tfjs-build/manifests/tfjs-build.yaml"
    ):  # the lock was released (by the kernel after SIGKILL)
        pass

    if how == "SIGKILL":  # nothing could clean up; a no-op run does
        assert (root / ".tfjs-build/manifests/tfjs-build.yaml/staging").exists()
        tfjsbuild.build([manifest], selection=["deep:first"])
        assert not (root / ".tfjs-build/manifests/tfjs-build.yaml/staging").exists()

    # The next run picks up where the interrupted one stopped.
    plan = {item.key: item.reasons for item in tfjsbuild.plan([manifest]).items}
    assert plan["deep:first"] == ()
    assert plan["deep:second"][0].startswith("weights changed: layers/")
    result = tfjsbuild.build([manifest], jobs=1)
    assert {r.item.key: r.status for r in result.results} == {
        "deep:first": "up-to-date",
        "deep:second": "built",
    }
    assert not (root / ".tfjs-build/manifests/tfjs-build.yaml/staging").exists()
    assert files(root / "dist/deep/second") != second_before


def test_replacing_an_existing_foreign_folder_is_refused(
    project: Callable[..., Path], model_store: Callable[..., Path]
) -> None:
    manifest = project(DEEP.replace("[first, second]", "[first]"), {"deep": model_store("deep")})
    foreign = manifest.parent / "dist/deep/first"
    foreign.mkdir(parents=True)
    (foreign / "notes.txt").write_text("not a model")
    result = tfjsbuild.build([manifest], jobs=1)
    assert result.failed[0].error == (
        f"output folder {foreign} exists, holds files tfjs-build did not write and no model.json; "
        "move them away or choose another output"
    )
    assert (foreign / "notes.txt").read_text() == "not a model"
    # A folder holding an earlier conversion (e.g. from tensorflowjs_converter) is replaced.
    shutil.rmtree(foreign)
    foreign.mkdir()
    (foreign / "model.json").write_text("{}")
    (foreign / "group1-shard1of9.bin").write_bytes(b"old")
    assert tfjsbuild.build([manifest], jobs=1).ok
    assert "group1-shard1of9.bin" not in files(foreign)
