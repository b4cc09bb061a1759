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
    good = {
        "passed": True,
        "samples": 2,
        "inputs": "generated",
        "atol": 1e-4,
        "rtol": 0.0,
        "backend": "wasm",
        "max_abs_error": 1e-7,
        "outputs": {"y": {"max_abs_error": 1e-7, "max_rel_error": 0.0, "passed": True}},
    }
    checked = verification_from_json(good, "v")
    assert checked is not None and checked.to_json_dict() == good
    older = verification_from_json({k: v for k, v in good.items() if k != "backend"}, "v")
    assert older is not None and older.backend == "cpu"  # as every one was before "backend"
    with pytest.raises(InvalidData) as caught:
        verification_from_json({**good, "backend": 1}, "v")
    assert str(caught.value) == "v.backend: expected a string, got int"
    assert verification_from_json(None, "v") is None
    with pytest.raises(InvalidData) as caught:
        verification_from_json(5, "v")
    assert str(caught.value) == "v: expected an object, got int"
    with pytest.raises(InvalidData) as caught:
        verification_from_json({**good, "passed": "yes"}, "v")
    assert str(caught.value) == "v.passed: expected true or false, got a string"
