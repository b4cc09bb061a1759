from __future__ import annotations

import json
import math
import multiprocessing
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import VERIFY_REQUEST
from tfjsbuild.errors import BuildError, LockHeldError
from tfjsbuild.files.readback import InvalidData
from tfjsbuild.stores.build_history import PreviousBuild
from tfjsbuild.stores.lock import BuildLock
from tfjsbuild.stores.records import SignatureRecord
from tfjsbuild.stores.state import BuildState, load_state, save_state

DIGEST_B, DIGEST_A = "1" * 64, "2" * 64


def test_missing_state_is_empty(tmp_path: Path) -> None:
    assert load_state(tmp_path) == (BuildState(), [])


def test_future_version_gives_a_clear_warning(tmp_path: Path) -> None:
    (tmp_path / "state.json").write_text(json.dumps({"version": 9, "signatures": {}}))
    state, warnings = load_state(tmp_path)
    assert state == BuildState()
    assert warnings == [
        f"{tmp_path / 'state.json'} has state version 9, this tfjs-build reads version 1: "
        "rebuilding everything (it will be rewritten)"
    ]


def test_state_is_sorted_json_and_rewritten_only_when_changed(tmp_path: Path) -> None:
    state = BuildState(stat_cache={"b": [1, 2, 3, DIGEST_B], "a": [4, 5, 6, DIGEST_A]})
    assert save_state(tmp_path, state) is True
    text = (tmp_path / "state.json").read_text()
    assert json.loads(text) == {
        "version": 1,
        "signatures": {},
        "stat_cache": {"a": [4, 5, 6, DIGEST_A], "b": [1, 2, 3, DIGEST_B]},
        "graph_cache": {},
    }
    assert text.index('"a"') < text.index('"b"')
    assert save_state(tmp_path, state) is False
    assert load_state(tmp_path) == (
        BuildState(stat_cache={"a": [4, 5, 6, DIGEST_A], "b": [1, 2, 3, DIGEST_B]}),
        [],
    )
    assert oct((tmp_path / "state.json").stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def test_a_record_says_what_its_verification_was_run_with() -> None:
    verified_with = dict(VERIFY_REQUEST)
    data = {
        "model": "m",
        "signature": "s",
        "output": "dist/m/s",
        "fingerprint": DIGEST_A,
        "parts": {"scheme": "2"},
        "options": {},
        "files": [],
        "inputs": [],
        "outputs": [],
        "content_hash": DIGEST_B,
        "seconds": 1.5,
        "details": {},
        "verification": {
            "passed": True,
            "samples": 3,
            "inputs": "generated",
            "max_abs_error": 0.0,
            "backends": {
                "wasm": {
                    "passed": True,
                    "atol": 1e-4,
                    "rtol": 1e-3,
                    "max_abs_error": 0.0,
                    "outputs": {},
                    "seconds": 0.5,
                    "note": None,
                }
            },
        },
        "verified_with": verified_with,
    }
    record = SignatureRecord.from_json(data, "signatures.m:s")
    assert record.verified_with is not None and record.verified_with.to_json_dict() == verified_with
    assert record.verification is not None
    assert [run.backend for run in record.verification.backends] == ["wasm"]
    assert record.to_json() == data  # as written: a loaded state is not rewritten
    # When it was built, and what the output it replaced was: read back as written too.
    previous = {"built_at": None, "bytes": 10, "max_abs_error": "NaN", "content_hash": DIGEST_A}
    newer = {**data, "built_at": "2026-11-28T09:40:13Z", "previous": previous}
    again = SignatureRecord.from_json(newer, "signatures.m:s")
    assert again.previous is not None and math.isnan(again.previous.max_abs_error or 0.0)
    assert (again.built_at, again.to_json()) == ("2026-11-28T09:40:13Z", newer)
    assert again.superseded() == PreviousBuild("2026-11-28T09:40:13Z", 0, 0.0, DIGEST_B)
    # Written before several backends could be asked for, and before WebAssembly: one backend,
    # the CPU (a build wanting `auto` verifies it again: "verification changed: backends...").
    older_verification = {
        "passed": True,
        "samples": 3,
        "inputs": "generated",
        "atol": 1e-4,
        "rtol": 1e-3,
        "max_abs_error": 0.0,
        "outputs": {},
    }
    older_request = {"samples": 3, "atol": 1e-4, "rtol": 1e-3, "inputs": None, "tfjs": "4.22.0"}
    older = SignatureRecord.from_json(
        {**data, "verification": older_verification, "verified_with": older_request}
    )
    assert older.verification is not None and older.verification.backends[0].backend == "cpu"
    assert older.verified_with is not None
    assert [b.backend for b in older.verified_with.backends] == ["cpu"]
    assert SignatureRecord.from_json({**data, "verified_with": None}).verified_with is None
    bad = {
        "5": "signatures.m:s.verified_with: expected an object, got int",
        "[]": "signatures.m:s.verified_with: expected an object, got a list",
        '{"atol": 1e999}': "signatures.m:s.verified_with.atol: expected a finite number",
        '{"atol": [1]}': (
            "signatures.m:s.verified_with.atol: expected text, a number, true, false or null, "
            "got a list"
        ),
        '{"backends": {"wasm": {"atol": [1]}}}': (
            "signatures.m:s.verified_with.backends.wasm.atol: expected text, a number, true, "
            "false or null, got a list"
        ),
        '{"backends": []}': "signatures.m:s.verified_with.backends: expected an object, got a list",
        '{"tfjs": "4\\u0000"}': "signatures.m:s.verified_with.tfjs: contains a NUL byte",
    }
    for text, message in bad.items():
        with pytest.raises(InvalidData) as raised:
            SignatureRecord.from_json({**data, "verified_with": json.loads(text)}, "signatures.m:s")
        assert str(raised.value) == message, text


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def _hold_lock(
    folder: str, held: multiprocessing.synchronize.Event, release: multiprocessing.synchronize.Event
) -> None:
    with BuildLock(Path(folder)):
        held.set()
        release.wait(30)


def test_lock_names_its_holder_and_is_free_again_after(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    held, release = context.Event(), context.Event()
    holder = context.Process(target=_hold_lock, args=(str(tmp_path), held, release))
    holder.start()
    try:
        assert held.wait(30)
        with pytest.raises(LockHeldError) as caught, BuildLock(tmp_path):
            pass
        assert f"another build holds the lock {tmp_path / 'lock'}: pid {holder.pid} since" in str(
            caught.value
        )
    finally:
        release.set()
        holder.join(30)
    with BuildLock(tmp_path):
        pass


@pytest.mark.parametrize("make", [os.mkdir, os.mkfifo])
def test_a_state_file_that_is_not_a_file_is_a_clear_error_not_a_hang(
    tmp_path: Path, make: Callable[[Path], None]
) -> None:
    make(tmp_path / "state.json")
    with pytest.raises(BuildError) as caught:
        load_state(tmp_path)
    assert str(caught.value) == (
        f"{tmp_path}/state.json is not a file: tfjs-build keeps the build state there; remove it "
        "and run again (everything is rebuilt)"
    )
