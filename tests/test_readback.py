from __future__ import annotations

import math
from pathlib import Path

import pytest

from tfjsbuild.files import readback
from tfjsbuild.files.readback import InvalidData
from tfjsbuild.verify.record import verification_from_json


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "f: is empty"),
        ("/etc/passwd", "f: '/etc/passwd' is not a relative POSIX path"),
        ("a\\b", "f: 'a\\\\b' is not a relative POSIX path"),
        ("C:x", "f: 'C:x' is not a relative POSIX path"),
        ("../x", "f: '../x' is not a normalised path inside its folder"),
        ("a/../../x", "f: 'a/../../x' is not a normalised path inside its folder"),
        ("a//b", "f: 'a//b' is not a normalised path inside its folder"),
        ("./a", "f: './a' is not a normalised path inside its folder"),
        ("a\0b", "f: contains a NUL byte"),
        (5, "f: expected a string, got int"),
        (None, "f: expected a string, got null"),
    ],
)
def test_unsafe_relative_paths_are_refused(value: object, message: str) -> None:
    with pytest.raises(InvalidData) as caught:
        readback.safe_relative_path(value, "f")
    assert str(caught.value) == message


def test_safe_relative_paths_pass() -> None:
    assert readback.safe_relative_path("group1-shard1of1.bin", "f") == "group1-shard1of1.bin"
    assert readback.safe_relative_path("a/b/model.json", "f") == "a/b/model.json"


def test_no_path_through_a_symlink(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert readback.resolve_inside(tmp_path, "real/x", "f") == tmp_path / "real" / "x"
    with pytest.raises(InvalidData, match="is a symbolic link"):
        readback.resolve_inside(tmp_path, "link/x", "f")
    (tmp_path / "real" / "file").symlink_to("/etc/hostname")
    with pytest.raises(InvalidData, match="is a symbolic link"):
        readback.resolve_inside(tmp_path, "real/file", "f")


def test_numbers_are_typed_finite_and_in_range() -> None:
    assert readback.as_int(3, "n") == 3
    for bad, message in [
        (True, "n: expected a whole number, got a boolean"),
        (1.5, "n: expected a whole number, got float"),
        (-1, "n: expected at least 0, got -1"),
    ]:
        with pytest.raises(InvalidData) as caught:
            readback.as_int(bad, "n")
        assert str(caught.value) == message
    with pytest.raises(InvalidData, match="finite"):
        readback.as_float(math.inf, "x")
    with pytest.raises(InvalidData, match="finite"):
        readback.as_float(10**400, "x")
    # As written: read back and encoded again, a number keeps its bytes (500, not 500.0).
    assert [(n, type(n)) for n in (readback.as_float(500, "x"), readback.as_float(0.5, "x"))] == [
        (500, int),
        (0.5, float),
    ]
    assert readback.as_error_value("Infinity", "x") == "Infinity"


def test_verification_records() -> None:
    wasm = {
        "passed": True,
        "atol": 1e-4,
        "rtol": 0.0,
        "max_abs_error": 1e-7,
        "outputs": {"y": {"max_abs_error": 1e-7, "max_rel_error": 0.0, "passed": True}},
        "seconds": 0.25,
        "note": None,
    }
    webgl = {**wasm, "passed": False, "max_abs_error": "NaN", "outputs": {}, "seconds": None}
    webgl |= {"note": "skipped: no Chromium found", "skipped": True}
    good = {
        "passed": True,
        "samples": 2,
        "inputs": "generated",
        "max_abs_error": 1e-7,
        "backends": {"wasm": wasm, "webgl": webgl},
    }
    checked = verification_from_json(good, "v")
    assert checked is not None and checked.to_json_dict() == good
    assert [(run.backend, run.skipped) for run in checked.backends] == [
        ("wasm", False),
        ("webgl", True),
    ]
    # Written before several backends: tolerances, errors and `backend` at the top.
    one = {k: v for k, v in wasm.items() if k not in ("seconds", "note")}
    one |= {"samples": 2, "inputs": "generated"}
    older = verification_from_json({**one, "backend": "wasm"}, "v")
    assert older is not None and older.to_json_dict() == {
        **good,
        "backends": {"wasm": {**wasm, "seconds": None}},
    }
    oldest = verification_from_json(one, "v")
    assert oldest is not None and [run.backend for run in oldest.backends] == ["cpu"]
    wrong = {
        "v.backends: names no backend": {**good, "backends": {}},
        "v.backends: expected an object, got int": {**good, "backends": 1},
        "v.backends.wasm.seconds: expected a number, got a string": {
            **good,
            "backends": {"wasm": {**wasm, "seconds": "1"}},
        },
        "v.backends.wasm.passed: expected true or false, got a string": {
            **good,
            "backends": {"wasm": {**wasm, "passed": "yes"}},
        },
        "v.backends.wasm.note: expected a string, got int": {
            **good,
            "backends": {"wasm": {**wasm, "note": 5}},
        },
        "v.backend: expected a string, got int": {**one, "backend": 1},
        "v: expected an object, got int": 5,
    }
    for message, bad in wrong.items():
        with pytest.raises(InvalidData) as caught:
            verification_from_json(bad, "v")
        assert str(caught.value) == message
    assert verification_from_json(None, "v") is None
