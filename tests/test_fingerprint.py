from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import run_cli
from tfjsbuild.manifest.types import PythonSource, SavedModelSource
from tfjsbuild.planning.fingerprint import tool_versions
from tfjsbuild.sources.digest import StatCache
from tfjsbuild.sources.python import python_input_files, python_source_problem
from tfjsbuild.sources.registry import source_digest


def make_source(folder: Path) -> SavedModelSource:
    (folder / "variables").mkdir(parents=True)
    (folder / "saved_model.pb").write_bytes(b"graph")
    (folder / "variables/variables.data-00000-of-00001").write_bytes(b"w" * 1000)
    return SavedModelSource(folder, ("serve",))


def test_unchanged_files_are_not_read_again(tmp_path: Path) -> None:
    source = make_source(tmp_path / "m")
    first = StatCache()
    digest = source_digest(source, first, paranoid=True)
    assert first.hashed_bytes == 1005
    second = StatCache(first.entries())
    assert source_digest(source, second, paranoid=True) == digest
    assert second.hashed_bytes == 0


def test_variable_data_is_left_to_the_index_unless_paranoid(tmp_path: Path) -> None:
    """variables.index holds a crc32c per tensor: the data shards need not be read."""
    source = make_source(tmp_path / "m")
    cache = StatCache()
    digest = source_digest(source, cache)
    assert cache.hashed_bytes == 5  # saved_model.pb only
    weights = tmp_path / "m/variables/variables.data-00000-of-00001"
    weights.write_bytes(b"v" * 1000)
    assert source_digest(source, StatCache()) == digest
    assert source_digest(source, StatCache(), paranoid=True) != source_digest(
        source, StatCache(), paranoid=False
    )
    weights.write_bytes(b"v" * 999)  # a size change is seen without reading
    assert source_digest(source, StatCache()) != digest


def test_a_touched_but_identical_file_is_rehashed_and_matches(tmp_path: Path) -> None:
    source = make_source(tmp_path / "m")
    cache = StatCache()
    digest = source_digest(source, cache)
    graph = tmp_path / "m/saved_model.pb"
    os.utime(graph, ns=(1, 1))
    again = StatCache(cache.entries())
    assert source_digest(source, again) == digest
    assert again.hashed_bytes == 5


def test_content_and_new_files_change_the_digest(tmp_path: Path) -> None:
    source = make_source(tmp_path / "m")
    digest = source_digest(source, StatCache())
    (tmp_path / "m/saved_model.pb").write_bytes(b"GRAPH")
    changed = source_digest(source, StatCache())
    assert changed != digest
    (tmp_path / "m/assets").mkdir()
    (tmp_path / "m/assets/vocab.txt").write_text("a")
    assert source_digest(source, StatCache()) not in (digest, changed)


def test_only_used_entries_are_kept(tmp_path: Path) -> None:
    source = make_source(tmp_path / "m")
    cache = StatCache({"/gone/file": [1, 2, 3, "x"]})
    source_digest(source, cache, paranoid=True)
    assert sorted(cache.entries()) == sorted(
        str(p) for p in (tmp_path / "m").rglob("*") if p.is_file()
    )


def test_tool_versions_come_from_package_metadata() -> None:
    versions = tool_versions()
    assert versions["tensorflowjs"] == "4.22.0"
    assert versions["tensorflow"] == "2.19.0"
    assert set(versions) == {"tensorflow", "tensorflowjs", "tfjs-build"}


def make_python_source(root: Path, inputs: tuple[str, ...] = ()) -> PythonSource:
    (root / "models" / "nested").mkdir(parents=True)
    (root / "models" / "__init__.py").write_text("")
    (root / "models" / "net.py").write_text("def build(): ...\n")
    (root / "models" / "nested" / "layers.py").write_text("")
    (root / "data.json").write_text("{}")
    return PythonSource("models.net:build", inputs, root)


def test_a_python_source_defaults_to_its_module_file(tmp_path: Path) -> None:
    source = make_python_source(tmp_path)
    assert python_input_files(source) == [tmp_path / "models" / "net.py"]
    assert python_source_problem(source) is None
    digest = source_digest(source, StatCache())
    (tmp_path / "data.json").write_text('{"changed": true}')
    assert source_digest(source, StatCache()) == digest
    (tmp_path / "models" / "net.py").write_text("def build(): return 1\n")
    assert source_digest(source, StatCache()) != digest
    # The callable's name is part of it: another function of the same file is another model.
    other = PythonSource("models.net:other", (), tmp_path)
    assert source_digest(other, StatCache()) != source_digest(source, StatCache())


def test_a_python_source_follows_its_inputs_globs(tmp_path: Path) -> None:
    source = make_python_source(tmp_path, ("models/**/*.py", "data.json"))
    assert python_input_files(source) == [
        tmp_path / "data.json",
        tmp_path / "models" / "__init__.py",
        tmp_path / "models" / "nested" / "layers.py",
        tmp_path / "models" / "net.py",
    ]
    digest = source_digest(source, StatCache())
    (tmp_path / "models" / "nested" / "layers.py").write_text("X = 1\n")
    assert source_digest(source, StatCache()) != digest


def test_python_source_problems_say_what_to_do(tmp_path: Path) -> None:
    missing = PythonSource("pkg.model:build", (), tmp_path)
    assert python_source_problem(missing) == (
        f"module 'pkg.model' is not in {tmp_path} (looked for pkg/model.py and "
        "pkg/model/__init__.py); put it there, or list the files the model is built from in "
        "`inputs:`"
    )
    unmatched = PythonSource("pkg.model:build", ("src/*.py",), tmp_path)
    assert (
        python_source_problem(unmatched)
        == f"inputs pattern 'src/*.py' matches no files in {tmp_path}"
    )


def test_keras_and_python_fingerprints_include_the_keras_versions() -> None:
    assert "keras" not in tool_versions("saved_model")
    assert {"keras", "tf-keras"} <= set(tool_versions("keras"))
    assert {"keras", "tf-keras"} <= set(tool_versions("python"))


@pytest.mark.parametrize("odd", ["dangling link", "fifo"])
def test_a_model_folder_file_that_cannot_be_hashed_is_a_located_plan_error(
    odd: str, project: Callable[..., Path], model_store: Callable[..., Path]
) -> None:
    """Not a crash (a dangling link) or a hang (a fifo): the model's error, at its line."""
    manifest = project(
        "version: 1\nmodels:\n  m:\n    saved_model: m\n", {"m": model_store("constants")}
    )
    odd_file = manifest.parent / "m/assets/odd"
    odd_file.parent.mkdir(exist_ok=True)
    if odd == "fifo":
        os.mkfifo(odd_file)
        why = "is not a regular file (a fifo, socket or device); a model folder holds only files: remove it"
    else:
        odd_file.symlink_to(manifest.parent / "nowhere")
        why = "is a broken symbolic link; remove it or restore what it points to"
    done = run_cli("plan", cwd=manifest.parent, timeout=60)
    assert done.returncode == 1
    assert done.stdout == (
        "  build       m:* → ?\n"
        f"      tfjs-build.yaml:4:18: models.m.saved_model: {odd_file} {why}\n"
        "          4 |     saved_model: m\n"
        "            | " + " " * 17 + "^\n"
        "1 to build, 0 up to date, 0 to remove\n"
    )
