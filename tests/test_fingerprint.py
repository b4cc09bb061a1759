from __future__ import annotations

import os
from pathlib import Path

from tfjsbuild.fingerprint import StatCache, source_digest, tool_versions
from tfjsbuild.manifest import SavedModelSource


def make_source(folder: Path) -> SavedModelSource:
    (folder / "variables").mkdir(parents=True)
    (folder / "saved_model.pb").write_bytes(b"graph")
    (folder / "variables/variables.data-00000-of-00001").write_bytes(b"w" * 1000)
    return SavedModelSource(folder, ("serve",))


def test_unchanged_files_are_not_read_again(tmp_path: Path) -> None:
    source = make_source(tmp_path / "m")
    first = StatCache()
    digest = source_digest(source, tmp_path, first, paranoid=True)
    assert first.hashed_bytes == 1005
    second = StatCache(first.entries())
    assert source_digest(source, tmp_path, second, paranoid=True) == digest
    assert second.hashed_bytes == 0


def test_variable_data_is_left_to_the_index_unless_paranoid(tmp_path: Path) -> None:
    """variables.index holds a crc32c per tensor: the data shards need not be read."""
    source = make_source(tmp_path / "m")
    cache = StatCache()
    digest = source_digest(source, tmp_path, cache)
    assert cache.hashed_bytes == 5  # saved_model.pb only
    weights = tmp_path / "m/variables/variables.data-00000-of-00001"
    weights.write_bytes(b"v" * 1000)
    assert source_digest(source, tmp_path, StatCache()) == digest
    assert source_digest(source, tmp_path, StatCache(), paranoid=True) != source_digest(
        source, tmp_path, StatCache(), paranoid=False
    )
    weights.write_bytes(b"v" * 999)  # a size change is seen without reading
    assert source_digest(source, tmp_path, StatCache()) != digest


def test_a_touched_but_identical_file_is_rehashed_and_matches(tmp_path: Path) -> None:
    source = make_source(tmp_path / "m")
    cache = StatCache()
    digest = source_digest(source, tmp_path, cache)
    graph = tmp_path / "m/saved_model.pb"
    os.utime(graph, ns=(1, 1))
    again = StatCache(cache.entries())
    assert source_digest(source, tmp_path, again) == digest
    assert again.hashed_bytes == 5


def test_content_and_new_files_change_the_digest(tmp_path: Path) -> None:
    source = make_source(tmp_path / "m")
    digest = source_digest(source, tmp_path, StatCache())
    (tmp_path / "m/saved_model.pb").write_bytes(b"GRAPH")
    changed = source_digest(source, tmp_path, StatCache())
    assert changed != digest
    (tmp_path / "m/assets").mkdir()
    (tmp_path / "m/assets/vocab.txt").write_text("a")
    assert source_digest(source, tmp_path, StatCache()) not in (digest, changed)


def test_only_used_entries_are_kept(tmp_path: Path) -> None:
    source = make_source(tmp_path / "m")
    cache = StatCache({"/gone/file": [1, 2, 3, "x"]})
    source_digest(source, tmp_path, cache, paranoid=True)
    assert sorted(cache.entries()) == sorted(
        str(p) for p in (tmp_path / "m").rglob("*") if p.is_file()
    )


def test_tool_versions_come_from_package_metadata() -> None:
    versions = tool_versions()
    assert versions["tensorflowjs"] == "4.22.0"
    assert versions["tensorflow"] == "2.19.0"
    assert set(versions) == {"tensorflow", "tensorflowjs", "tfjs-build"}
