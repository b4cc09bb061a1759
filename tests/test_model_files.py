"""Broken model files, as data: each corruption, what the plan makes of it, and the located
error the build gives. Model files are untrusted: a damaged one fails its own model at its
manifest line, naming the file and what to do; it never exits 3 and never stops the others.
"""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import run_cli
from tfjsbuild.manifest.load import load_manifest
from tfjsbuild.sources.digest import StatCache
from tfjsbuild.sources.model_sources import ModelSources
from tfjsbuild.sources.saved_model_files import (
    OBJECT_GRAPH_KEY,
    SavedModelError,
    find_meta_graph,
    read_bundle_index,
)
from tfjsbuild.sources.saved_model_graph import GraphFingerprintError, signature_graphs
from tfjsbuild.sources.saved_model_integrity import damage, incomplete_reason

INDEX = "variables/variables.index"
SHARD = "variables/variables.data-00000-of-00001"


def truncate(name: str) -> Callable[[Path], None]:
    def corrupt(model: Path) -> None:
        path = model / name if model.is_dir() else model
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])

    return corrupt


def flip(name: str, where: float, count: int = 16) -> Callable[[Path], None]:
    def corrupt(model: Path) -> None:
        path = model / name if model.is_dir() else model
        _flip_at(path, int(path.stat().st_size * where), count)

    return corrupt


def remove(name: str) -> Callable[[Path], None]:
    return lambda model: (model / name).unlink()


def flip_tensor(key: str) -> Callable[[Path], None]:
    """Damage the bytes of one checkpoint tensor; the index (and its crc32c) stays as it was."""

    def corrupt(model: Path) -> None:
        entry = read_bundle_index(model / INDEX)[key]
        _flip_at(model / SHARD, entry.offset + entry.size // 2, 4)

    return corrupt


def _flip_at(path: Path, offset: int, count: int) -> None:
    data = bytearray(path.read_bytes())
    for position in range(offset, min(offset + count, len(data))):
        data[position] ^= 0xFF
    path.write_bytes(bytes(data))


@dataclass(frozen=True)
class Case:
    name: str
    kind: str  # a tests/savedmodels.py maker
    corrupt: Callable[[Path], None]
    # The build's error after "could not load the <what> <path>: " (None: blocked at plan).
    error: str | None
    # What the plan makes of it: "graph" / "content" (fingerprinted as usual), "whole-model:
    # <why>" (the fallback), or "blocked: <located message>".
    plan: str
    format: str | None = None


CASES = [
    Case(
        "index_truncated",
        "multihead",
        truncate(INDEX),
        f"{INDEX} is corrupt (OpError: not an sstable (bad magic number)); re-export it",
        f"whole-model: SavedModelError: {{path}}/{INDEX} is not a checkpoint index (bad table magic)",
    ),
    Case(
        "index_flipped",
        "multihead",
        flip(INDEX, 0.5),
        f"{INDEX} is corrupt (OpError: Unable to read file ({{path}}/{INDEX}). Perhaps the file "
        "is corrupt or was produced by a newer version of TensorFlow with format changes "
        "(failed to seek to header entry): block checksum mismatch); re-export it",
        f"whole-model: SavedModelError: {{path}}/{INDEX}: unexpected protobuf wire type 7",
    ),
    Case(
        "index_missing",
        "multihead",
        remove(INDEX),
        f"{INDEX} is missing (FileNotFoundError: Unsuccessful TensorSliceReader constructor: "
        "Failed to find any matching files for {path}/variables/variables); re-export it",
        f"whole-model: FileNotFoundError: [Errno 2] No such file or directory: '{{path}}/{INDEX}'",
    ),
    Case(
        "shard_missing",
        "multihead",
        remove(SHARD),
        "every variables/variables.data-* shard is missing (OpError: {path}/"
        f"{SHARD}; No such file or directory); re-export it",
        "whole-model: SavedModelError: {path}/variables has no variables.data-* shards",
    ),
    Case(
        "shard_truncated",
        "multihead",
        truncate(SHARD),
        f"{SHARD} is truncated (IndexError: Read less bytes than requested); re-export it",
        "whole-model: SavedModelError: cannot parse the object graph in {path}/"
        f"{SHARD}: truncated protobuf varint",
    ),
    Case(
        "object_graph_damaged",
        "multihead",
        flip_tensor(OBJECT_GRAPH_KEY),
        f"{SHARD} is corrupt (OpError: TensorBundle at {{path}}/variables/variables shard 0 (",
        "whole-model: SavedModelError: cannot parse the object graph in {path}/"
        f"{SHARD}: Error parsing message with type 'tensorboard.TrackableObjectGraph'",
    ),
    Case(
        "weights_damaged",
        "multihead",
        flip_tensor("head_a/.ATTRIBUTES/VARIABLE_VALUE"),
        f"{SHARD} is corrupt (DataLossError: TensorBundle at {{path}}/variables/variables "
        "shard 0 (",
        "graph",  # the index's crc32c is unchanged: only TensorFlow's check can tell
    ),
    Case(
        "pb_truncated",
        "multihead",
        truncate("saved_model.pb"),
        None,
        "blocked: cannot parse {path}/saved_model.pb: truncated protobuf field",
    ),
    Case(
        "tf1_index_truncated",
        "tf1",
        truncate(INDEX),
        f"{INDEX} is corrupt (DataLossError: not an sstable (bad magic number)); re-export it",
        "whole-model: a TF1 SavedModel without an object graph",
    ),
    Case(
        "tf_keras_index_truncated",
        "tf_keras",
        truncate(INDEX),
        f"{INDEX} is corrupt (OpError: not an sstable (bad magic number)); re-export it",
        f"whole-model: SavedModelError: {{path}}/{INDEX} is not a checkpoint index (bad table magic)",
    ),
    Case(
        "keras_truncated",
        "keras_file",
        truncate(""),
        "it is not a readable zip archive, as .keras files are (truncated or corrupt) "
        "(ValueError: File not found: filepath={path}. Please ensure the file is an accessible "
        "`.keras` zip file.); save it again",
        "content",
    ),
    Case(
        "h5_truncated",
        "keras_h5",
        truncate(""),
        "it is not a readable HDF5 file (truncated or corrupt) (OSError: Unable to synchronously "
        "open file (truncated file: eof = ",
        "content",
    ),
    Case(
        "h5_flipped_layers",
        "keras_h5",
        flip("", 0.0, 64),
        "it is not a readable HDF5 file (truncated or corrupt); save it again",
        "content",
        format="layers_model",
    ),
]


def _manifest_text(root: Path) -> str:
    lines = ["version: 1", "models:"]
    for case in CASES:
        key = "keras" if case.kind in ("tf_keras", "keras_file", "keras_h5") else "saved_model"
        lines += [f"  {case.name}:", f"    {key}: {_model_path(root, case).name}"]
        if case.format is not None:
            lines.append(f"    format: {case.format}")
    return "\n".join(lines) + "\n"


def _model_path(root: Path, case: Case) -> Path:
    suffix = {"keras_file": ".keras", "keras_h5": ".h5"}.get(case.kind, "")
    return root / f"{case.name}{suffix}"


@pytest.fixture(scope="module")
def damaged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One project holding every damaged model (one build: workers load TensorFlow once)."""
    import savedmodels

    root = tmp_path_factory.mktemp("damaged")
    store = tmp_path_factory.mktemp("store")
    made: dict[str, Path] = {}
    for case in CASES:
        if case.kind not in made:
            target = store / f"{case.kind}{savedmodels.FILE_SUFFIXES.get(case.kind, '')}"
            made[case.kind] = getattr(savedmodels, f"save_{case.kind}")(target)
        path = _model_path(root, case)
        if made[case.kind].is_dir():
            shutil.copytree(made[case.kind], path)
        else:
            shutil.copyfile(made[case.kind], path)
        case.corrupt(path)
    (root / "tfjs-build.yaml").write_text(_manifest_text(root))
    return root


def _location(root: Path, case: Case) -> str:
    """`tfjs-build.yaml:LINE:COL: models.NAME.KEY`, as the CLI run in `root` shows it."""
    lines = (root / "tfjs-build.yaml").read_text().splitlines()
    number = lines.index(f"  {case.name}:") + 2
    key, _, _ = lines[number - 1].strip().partition(":")
    column = lines[number - 1].index(":") + 3
    return f"tfjs-build.yaml:{number}:{column}: models.{case.name}.{key}"


@pytest.mark.slow
def test_each_damaged_model_fails_at_its_manifest_line_naming_the_file(damaged: Path) -> None:
    built = run_cli("run", "--json", "--no-verify", "-j", "1", cwd=damaged)
    assert built.returncode == 1, built.stdout + built.stderr
    errors: dict[str, set[str]] = {}
    for signature in json.loads(built.stdout)["signatures"]:
        assert signature["status"] == "failed", signature
        message = signature["error"] or " ".join(signature["reasons"])
        errors.setdefault(signature["model"], set()).add(message)
    assert sorted(errors) == sorted(case.name for case in CASES)
    for case in CASES:
        path = _model_path(damaged, case)
        what = "Keras model" if path.suffix or case.kind == "tf_keras" else "SavedModel"
        if case.error is None:
            expected = case.plan.removeprefix("blocked: ").format(path=path)
        else:
            expected = f"could not load the {what} {path}: " + case.error.format(path=path)
        for message in errors[case.name]:  # every signature of the model: the same error
            head, source_line, _caret = message.split("\n")
            assert head.startswith(f"{_location(damaged, case)}: {expected}"), (case.name, head)
            assert path.name in source_line


@pytest.mark.slow
def test_the_plan_fingerprints_damaged_models_or_falls_back(damaged: Path) -> None:
    planned = run_cli("plan", "--json", cwd=damaged)
    assert planned.returncode == 1, planned.stderr  # the blocked ones; never 3
    blocked = {
        s["model"]: s["reasons"][0]
        for s in json.loads(planned.stdout)["signatures"]
        if s["fingerprint"] is None
    }
    manifest = load_manifest(damaged / "tfjs-build.yaml")
    for case, model in zip(CASES, manifest.models, strict=True):
        # One per case: entries are cached by a digest that leaves the data shards out.
        sources = ModelSources(StatCache(), {}, paranoid=False)
        path = _model_path(damaged, case)
        expected = case.plan.format(path=path)
        if expected.startswith("blocked: "):
            assert blocked.pop(case.name).startswith(
                f"{_location(damaged, case)}: {expected.removeprefix('blocked: ')}"
            )
            continue
        entries = sources.fingerprints(model.source)
        kinds = {entry.kind for entry in entries.values()}
        if expected == "graph":
            assert kinds == {"graph"}, (case.name, entries)
        elif expected == "content":
            assert kinds == {"keras-content"}, (case.name, entries)
        else:
            assert list(entries) == ["*"], (case.name, entries)
            assert entries["*"].kind == "whole-model"
            why = entries["*"].details["whole model"]
            assert why == expected.removeprefix("whole-model: "), (case.name, why)
    assert blocked == {}


def test_plan_time_readers_survive_random_damage(tmp_path: Path) -> None:
    """Any damage to a SavedModel's files is a SavedModelError / fallback, never a crash."""
    import savedmodels

    pristine = savedmodels.save_multihead(tmp_path / "pristine")
    model = tmp_path / "model"
    rng = random.Random(12)
    outcomes: set[str] = set()
    for name in ("saved_model.pb", INDEX, SHARD):
        size = (pristine / name).stat().st_size
        for trial in range(120):
            shutil.rmtree(model, ignore_errors=True)
            shutil.copytree(pristine, model)
            data = bytearray((pristine / name).read_bytes())
            if trial % 2:
                data = data[: rng.randrange(size)]
            else:
                for position in range(rng.randrange(size), size)[: rng.randrange(1, 9)]:
                    data[position] = rng.randrange(256)
            (model / name).write_bytes(bytes(data))
            for read in (
                lambda: signature_graphs(model, ("serve",), StatCache()),
                lambda: find_meta_graph(model, ("serve",)),
            ):
                try:
                    read()
                    outcomes.add("read")
                except (GraphFingerprintError, SavedModelError):
                    outcomes.add("refused")
            # Watch mode's and the worker's readers: an answer, never an exception.
            incomplete_reason(model)
            damage(model)
    assert outcomes == {"read", "refused"}


@pytest.mark.slow
def test_a_corrupt_saved_model_pb_is_a_located_source_error_in_the_worker(
    tmp_path: Path,
) -> None:
    """The plan catches a corrupt saved_model.pb first; one damaged after it, the worker."""
    import savedmodels
    from tfjsbuild.errors import SourceError
    from tfjsbuild.manifest.types import SavedModelSource
    from tfjsbuild.worker import loaders

    path = savedmodels.save_tf1(tmp_path / "model")
    truncate("saved_model.pb")(path)
    with pytest.raises(SourceError) as raised:
        loaders.load(SavedModelSource(path, ("serve",)), "digest", tmp_path / "scratch")
    assert str(raised.value) == (
        f"could not load the SavedModel {path}: saved_model.pb is corrupt (OSError: Cannot "
        f"parse file b'{path}/saved_model.pb': Error parsing message with type "
        "'tensorflow.SavedModel'.); re-export it"
    )
