from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tfjsbuild.files.artifacts import OutputCheckError, TensorSpec, check_graph_model
from tfjsbuild.files.atomic import swap_directory, write_atomically


def write_model(folder: Path, shard_bytes: int = 16) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    model = {
        "modelTopology": {},
        "weightsManifest": [
            {
                "paths": ["group1-shard1of1.bin"],
                "weights": [{"name": "w", "shape": [2, 2], "dtype": "float32"}],
            }
        ],
        "signature": {
            "inputs": {
                "x": {
                    "name": "x:0",
                    "dtype": "DT_FLOAT",
                    "tensorShape": {"dim": [{"size": "-1"}, {"size": "2"}]},
                }
            },
            "outputs": {},
        },
    }
    (folder / "model.json").write_text(json.dumps(model))
    (folder / "group1-shard1of1.bin").write_bytes(b"\0" * shard_bytes)


def test_a_complete_model_is_described(tmp_path: Path) -> None:
    write_model(tmp_path)
    described = check_graph_model(tmp_path)
    assert [f.path for f in described.files] == ["model.json", "group1-shard1of1.bin"]
    assert described.inputs == (TensorSpec("x", "float32", (None, 2)),)
    assert described.bytes == sum(p.stat().st_size for p in tmp_path.iterdir())


def test_nothing_written_fails_loudly(tmp_path: Path) -> None:
    with pytest.raises(OutputCheckError, match=f"the converter wrote no model.json in {tmp_path}"):
        check_graph_model(tmp_path)


def test_missing_or_short_shards_fail(tmp_path: Path) -> None:
    write_model(tmp_path, shard_bytes=12)
    with pytest.raises(
        OutputCheckError, match=re.escape("hold 12 bytes but model.json's weight specs need 16")
    ):
        check_graph_model(tmp_path)
    (tmp_path / "group1-shard1of1.bin").unlink()
    with pytest.raises(
        OutputCheckError,
        match=re.escape("lists weight shards that were not written: group1-shard1of1.bin"),
    ):
        check_graph_model(tmp_path)


def test_swap_replaces_a_folder_whole(tmp_path: Path) -> None:
    target, staged = tmp_path / "out", tmp_path / "staged"
    write_model(target)
    (target / "group1-shard9of9.bin").write_bytes(b"stale")
    write_model(staged, shard_bytes=16)
    swap_directory(staged, target)
    assert sorted(p.name for p in target.iterdir()) == ["group1-shard1of1.bin", "model.json"]
    assert not staged.exists()


def test_write_atomically_leaves_no_temporary_files(tmp_path: Path) -> None:
    write_atomically(tmp_path / "a/state.json", "one")
    write_atomically(tmp_path / "a/state.json", "two")
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["state.json"]
    assert (tmp_path / "a/state.json").read_text() == "two"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"weightsManifest": [{"paths": ["../outside.bin"], "weights": []}]},
            "{json}: weightsManifest[0].paths[0]: '../outside.bin' is not a normalised path "
            "inside its folder",
        ),
        (
            {"weightsManifest": [{"paths": ["/etc/hostname"], "weights": []}]},
            "{json}: weightsManifest[0].paths[0]: '/etc/hostname' is not a relative POSIX path",
        ),
        (
            {"weightsManifest": [{"paths": ["a\0b"], "weights": []}]},
            "{json}: weightsManifest[0].paths[0]: contains a NUL byte",
        ),
        (
            {"weightsManifest": [{"paths": ["model.json"], "weights": []}]},
            "{json}: weightsManifest[0].paths[0]: 'model.json' is model.json itself",
        ),
        ({"weightsManifest": 5}, "{json}: weightsManifest is not a list"),
        (
            {"weightsManifest": [{"paths": "x.bin"}]},
            "{json}: weightsManifest[0].paths is not a list",
        ),
        (
            {
                "weightsManifest": [
                    {"paths": ["group1-shard1of1.bin"], "weights": [{"shape": ["two", 2]}]}
                ]
            },
            "{json} has weight specs or a signature TensorFlow.js does not write (ValueError: "
            "invalid literal for int() with base 10: 'two')",
        ),
        (
            {"signature": {"inputs": ["x"]}},
            "{json} has weight specs or a signature TensorFlow.js does not write (TypeError: "
            "list indices must be integers or slices, not str)",
        ),
    ],
)
def test_a_hostile_model_json_is_a_located_error(
    tmp_path: Path, change: dict[str, object], message: str
) -> None:
    write_model(tmp_path)
    model = json.loads((tmp_path / "model.json").read_text())
    (tmp_path / "model.json").write_text(json.dumps({**model, **change}))
    with pytest.raises(OutputCheckError) as caught:
        check_graph_model(tmp_path)
    assert str(caught.value) == message.replace("{json}", str(tmp_path / "model.json"))


def test_an_output_never_holds_or_reads_through_a_link(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.bin").write_bytes(b"\0" * 16)
    model = tmp_path / "model"
    write_model(model)
    (model / "group1-shard1of1.bin").unlink()
    (model / "group1-shard1of1.bin").symlink_to(outside / "secret.bin")
    with pytest.raises(OutputCheckError) as caught:
        check_graph_model(model)
    shard = model / "group1-shard1of1.bin"
    assert str(caught.value) == (
        f"{model / 'model.json'} lists a weight shard through a symbolic link: "
        f"group1-shard1of1.bin: {shard} is a symbolic link"
    )
    shard.unlink()
    shard.write_bytes(b"\0" * 16)
    (model / "extra").symlink_to(outside / "secret.bin")
    with pytest.raises(OutputCheckError, match=re.escape(f"{model / 'extra'} is a symbolic link")):
        check_graph_model(model)
    (model / "extra").unlink()
    (model / "model.json").rename(outside / "model.json")
    (model / "model.json").symlink_to(outside / "model.json")
    with pytest.raises(OutputCheckError, match=re.escape("model.json is a symbolic link")):
        check_graph_model(model)
