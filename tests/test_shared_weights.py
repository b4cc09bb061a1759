"""`share_weights`: equal weights stored once across signatures and models, as content-addressed
shards in output_dir/tfjs-build-weights/; real conversions, TF.js in Node.js and in Chromium."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest

import tfjsbuild
import tfjsbuild.building.shared_weights as building_shared
from browser import run_page
from conftest import REPO, STATE, TFJS_RUNTIME, export_fresh, run_cli, run_tfjs
from savedmodels import run_signature
from tfjsbuild.files.artifacts import format_bytes
from tfjsbuild.files.shared_weights import SHARED_WEIGHTS_DIR, Weight, lay_out, read_model
from tfjsbuild.stores.records import output_change
from tfjsbuild.stores.state import load_state

MANIFEST = """
version: 1
defaults:
  share_weights: {share}
models:
  m:
    saved_model: m
    signatures: [features, classify, regress]
  r:
    saved_model: r
  t:
    saved_model: t
"""
KINDS = {"m": "multihead", "r": "renamed", "t": "table"}  # each model's savedmodels.save_*
ONES = {"x": np.ones([2, 8], "float32")}
INPUTS = {
    "m:features": ONES,
    "m:classify": ONES,
    "m:regress": ONES,
    "r:embed": ONES,
    "t:encode": {"words": np.array([b"dog", b"cow"])},
    "t:score": ONES,
}


@pytest.fixture(scope="session")
def built_shared(
    tmp_path_factory: pytest.TempPathFactory, model_store: Callable[..., Path]
) -> Path:
    """A built project: multihead m (a backbone, two heads), r (m's backbone bytes under other
    names), t (a lookup table: string weights), all with `share_weights: true`."""
    root = tmp_path_factory.mktemp("shared") / "proj"
    root.mkdir()
    for name, kind in KINDS.items():
        shutil.copytree(model_store(kind), root / name)
    (root / "tfjs-build.yaml").write_text(MANIFEST.format(share="true"))
    built = tfjsbuild.build([root / "tfjs-build.yaml"], jobs=1)
    assert built.ok, [r.error for r in built.failed]
    return root


@pytest.fixture
def shared(built_shared: Path, tmp_path: Path) -> Path:
    """A copy of the built project of its own (files' times kept: it is up to date)."""
    root = tmp_path / "proj"
    shutil.copytree(built_shared, root, symlinks=True)
    return root


def statuses_of(done: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """Each signature's status in `run --json` output, by key."""
    report = json.loads(done.stdout)
    return {f"{r['model']}:{r['signature']}": r["status"] for r in report["signatures"]}


def weights_by_name(folder: Path, output_dir: Path) -> dict[str, bytes]:
    return {w.spec["name"]: w.data for w in read_model(folder, output_dir).weights}


def shards(root: Path) -> dict[str, bytes]:
    folder = root / "dist" / SHARED_WEIGHTS_DIR
    return {p.name: p.read_bytes() for p in folder.iterdir()} if folder.exists() else {}


def test_equal_weights_are_stored_once_and_load_as_before(
    shared: Path, tmp_path: Path, model_store: Callable[..., Path]
) -> None:
    """Against the same build without sharing: every signature holds the same weights (by
    name, byte for byte), runs in TF.js (Node.js, reading the shared files) as TensorFlow does,
    and the bytes on disk are each distinct weight once."""
    alone = tmp_path / "alone"
    shutil.copytree(shared, alone, ignore=shutil.ignore_patterns("dist", ".tfjs-build"))
    (alone / "tfjs-build.yaml").write_text(MANIFEST.format(share="false"))
    assert tfjsbuild.build([alone / "tfjs-build.yaml"], jobs=1).ok

    state, warnings = load_state(shared / STATE)
    assert warnings == [] and sorted(state.records) == sorted(INPUTS)
    distinct: dict[bytes, None] = {}
    for key, record in state.records.items():
        folder = shared / record.output
        assert [f.name for f in folder.iterdir()] == ["model.json"], key
        assert [f.path for f in record.files] == ["model.json"] and record.shared_files, key
        mine = weights_by_name(folder, shared / "dist")
        assert mine == weights_by_name(alone / record.output, alone / "dist"), key
        distinct.update(dict.fromkeys(mine.values()))
        assert output_change(shared, record, shared / "dist") is None
        got = run_tfjs(folder, INPUTS[key])
        model, signature = key.split(":")
        expected = run_signature(
            model_store(KINDS[model]),
            signature,
            INPUTS[key],
        )
        assert sorted(got) == sorted(expected), key
        for name, value in expected.items():
            np.testing.assert_allclose(got[name], value, rtol=1e-5, atol=1e-6, err_msg=key)
    # m's backbone is r's projection: one copy. Heads A and B (same names, other bytes): two.
    m_weights = weights_by_name(shared / "dist/m/classify", shared / "dist")
    r_weights = weights_by_name(shared / "dist/r/embed", shared / "dist")
    assert (
        m_weights["StatefulPartitionedCall/MatMul/ReadVariableOp"]
        == (r_weights["StatefulPartitionedCall/project/ReadVariableOp"])
    )
    on_disk = b"".join(shards(shared).values())
    assert len(on_disk) == sum(len(data) for data in distinct)
    assert sorted(state.shared_weights) == sorted(
        f"{SHARED_WEIGHTS_DIR}/{n}" for n in shards(shared)
    )
    # The weight bytes a browser loading every signature fetches: m's backbone, in four
    # signatures unshared, once.
    alone_state = load_state(alone / STATE)[0]
    unshared = sum(
        f.size for r in alone_state.records.values() for f in r.files if f.path != "model.json"
    )
    assert len(on_disk) <= unshared - 3 * 512


def test_the_index_lists_each_signatures_files_and_chromium_fetches_each_shard_once(
    shared: Path, tmp_path: Path, model_store: Callable[..., Path]
) -> None:
    """The generated loader in headless Chromium over HTTP loads every float signature: each
    shared shard is requested once, without `?v=` (its name is its content); each model.json
    with its hash; every output is TensorFlow's."""
    index = json.loads((shared / "dist/tfjs-build.json").read_text())
    schema = json.loads((REPO / "schemas/asset-index.schema.json").read_text())
    jsonschema.Draft202012Validator(schema).validate(index)
    classify = index["models"]["m"]["classify"]
    assert classify["files"][0] == "m/classify/model.json"
    assert all(f.startswith(f"{SHARED_WEIGHTS_DIR}/") for f in classify["files"][1:])
    assert classify["bytes"] == sum((shared / "dist" / f).stat().st_size for f in classify["files"])

    site = shared / "dist"
    shutil.copyfile(
        TFJS_RUNTIME / "node_modules/@tensorflow/tfjs/dist/tf.fesm.min.js", site / "tf.js"
    )
    wanted = [k for k in INPUTS if k != "t:encode"]
    (site / "page.html").write_text(PAGE.replace("WANTED", json.dumps(wanted)))
    requests: list[str] = []
    reported = run_page(
        site,
        "page.html",
        tmp_path / "profile",
        requests=requests,
        immutable=f"/{SHARED_WEIGHTS_DIR}/",
    )
    assert "error" not in reported, reported["error"]

    fetched = [r for r in requests if f"/{SHARED_WEIGHTS_DIR}/" in r]
    assert sorted(fetched) == sorted(set(fetched)), fetched  # each shard once
    needed = {
        f"/{f}"
        for key in wanted
        for f in index["models"][key.split(":")[0]][key.split(":")[1]]["files"][1:]
    }
    assert set(fetched) == needed
    assert not any("?" in r for r in fetched)
    for key in wanted:
        model, signature = key.split(":")
        version = index["models"][model][signature]["hash"][:16]
        assert f"/{model}/{signature}/model.json?v={version}" in requests
        expected = run_signature(model_store(KINDS[model]), signature, ONES)
        assert sorted(reported[key]) == sorted(expected), key
        for name, value in expected.items():
            got = np.array(reported[key][name], "float32").reshape(value.shape)
            np.testing.assert_allclose(got, value, rtol=1e-4, atol=1e-5, err_msg=key)


PAGE = """<!doctype html>
<script type="importmap">{ "imports": { "@tensorflow/tfjs": "/tf.js" } }</script>
<script type="module">
  import * as tf from "@tensorflow/tfjs";
  import { loadModel } from "/tfjs-build.js";
  const report = (body) => fetch("/result", { method: "POST", body: JSON.stringify(body) });
  try {
    await tf.setBackend("cpu");
    const results = {};
    await Promise.all(WANTED.map(async (key) => {
      const [model, signature] = key.split(":");
      const loaded = await loadModel(tf, model, signature);
      const outputs = await loaded.run({ x: tf.ones([2, 8]) });
      results[key] = Object.fromEntries(
        Object.entries(outputs).map(([name, t]) => [name, Array.from(t.dataSync())]));
    }));
    await report(results);
  } catch (error) {
    await report({ error: String(error && error.stack || error) });
  }
</script>
"""


def test_a_retrained_head_rebuilds_one_signature_and_keeps_the_backbone_file(shared: Path) -> None:
    """Only `regress` is converted again; the backbone's shard is the same file (not rewritten),
    head B's old shard is gone, and nothing tfjs-build wrote is left over."""
    before = {p.name: p.stat() for p in (shared / "dist" / SHARED_WEIGHTS_DIR).iterdir()}
    old_state = load_state(shared / STATE)[0]
    shutil.rmtree(shared / "m")
    export_fresh("multihead", shared / "m", head_b_seed=9)

    done = run_cli("run", "--json", cwd=shared)

    assert done.returncode == 0, done.stderr
    statuses = statuses_of(done)
    assert statuses["m:regress"] == "built"
    assert [k for k, s in statuses.items() if s != "up-to-date"] == ["m:regress"]
    state = load_state(shared / STATE)[0]
    after = {p.name: p.stat() for p in (shared / "dist" / SHARED_WEIGHTS_DIR).iterdir()}
    backbone = {f.path for f in state.records["m:features"].shared_files}
    assert backbone == {f.path for f in old_state.records["m:features"].shared_files}
    for path in backbone:
        name = path.rsplit("/", 1)[1]
        assert after[name].st_ino == before[name].st_ino
        assert after[name].st_mtime_ns == before[name].st_mtime_ns
    old_head_b = {f.path for f in old_state.records["m:regress"].shared_files} - backbone
    new_head_b = {f.path for f in state.records["m:regress"].shared_files} - backbone
    assert old_head_b and new_head_b and not old_head_b & new_head_b
    assert not any((shared / "dist" / path).exists() for path in old_head_b)
    listed = {f.path for r in state.records.values() for f in r.shared_files}
    assert set(state.shared_weights) == listed == {f"{SHARED_WEIGHTS_DIR}/{n}" for n in after}
    np.testing.assert_allclose(
        run_tfjs(shared / "dist/m/regress", ONES)["value"],
        run_signature(shared / "m", "regress", ONES)["value"],
        rtol=1e-5,
    )


def test_turning_sharing_off_and_on_restores_from_the_cache_and_clean_keeps_foreign_files(
    shared: Path,
) -> None:
    manifest = shared / "tfjs-build.yaml"
    manifest.write_text(MANIFEST.format(share="false"))
    off = run_cli("run", cwd=shared)
    assert off.returncode == 0, off.stderr
    assert "share_weights turned off: its weights go back to its own folder" in off.stdout
    assert "restored from the local cache" in off.stdout
    assert not (shared / "dist" / SHARED_WEIGHTS_DIR).exists()
    state = load_state(shared / STATE)[0]
    assert state.shared_weights == {} and not any(r.shared_files for r in state.records.values())
    assert any(p.suffix == ".bin" for p in (shared / "dist/m/classify").iterdir())

    manifest.write_text(MANIFEST.format(share="true"))
    on = run_cli("run", cwd=shared)
    assert on.returncode == 0, on.stderr
    assert "share_weights turned on: its weights go to shared shards" in on.stdout
    state = load_state(shared / STATE)[0]
    assert all(r.shared_files for r in state.records.values())
    assert run_cli("plan", cwd=shared).stdout.count("up-to-date") == len(INPUTS)

    folder = shared / "dist" / SHARED_WEIGHTS_DIR
    (folder / "notes.txt").write_text("the user's")
    changed = sorted(folder.glob("*.bin"))[0]
    changed.write_bytes(b"edited by hand")
    cleaned = run_cli("clean", cwd=shared)
    assert cleaned.returncode == 0, cleaned.stderr
    assert f"{changed} was changed since tfjs-build wrote it: left as it is" in cleaned.stderr
    assert sorted(p.name for p in folder.iterdir()) == sorted([changed.name, "notes.txt"])
    assert not (shared / "dist/m").exists()


def test_verifying_a_shared_output_in_place_then_building_it_again(shared: Path) -> None:
    """A changed tolerance verifies the outputs in place (TF.js reads a copy with its own
    shards). The cache keeps the entries as converted, with the verification they had: once
    output_dir is gone the outputs are converted again, and shared again."""
    manifest = shared / "tfjs-build.yaml"
    manifest.write_text(
        MANIFEST.format(share="true").replace("defaults:", "defaults:\n  verify: {atol: 0.001}")
    )
    verified = run_cli("run", "--json", cwd=shared)
    assert verified.returncode == 0, verified.stderr
    statuses = statuses_of(verified)
    assert set(statuses.values()) == {"verified"}
    assert (
        output_change(shared, load_state(shared / STATE)[0].records["m:classify"], shared / "dist")
        is None
    )
    shutil.rmtree(shared / "dist")
    restored = run_cli("run", "--json", cwd=shared)
    assert restored.returncode == 0, restored.stderr
    statuses = statuses_of(restored)
    assert set(statuses.values()) == {"built"}
    state = load_state(shared / STATE)[0]
    assert all(r.shared_files for r in state.records.values())
    np.testing.assert_allclose(
        run_tfjs(shared / "dist/m/classify", ONES)["probs"],
        run_signature(shared / "m", "classify", ONES)["probs"],
        rtol=1e-5,
    )


@pytest.mark.parametrize("when", ["after the shards", "after one model.json"])
def test_a_build_stopped_while_laying_out_leaves_outputs_that_load(
    shared: Path, monkeypatch: pytest.MonkeyPatch, when: str
) -> None:
    """Stopped between writing the new shards and relinking (or after relinking one signature):
    every recorded output is what its record says and loads; the next build finishes the
    layout and removes what no record lists."""
    shutil.rmtree(shared / "m")
    export_fresh("multihead", shared / "m", backbone_seed=7)
    relinks = []
    real_relink = building_shared._relink

    def stopping(*args: Any) -> None:
        if when == "after one model.json" and not relinks:
            relinks.append(args)
            return real_relink(*args)
        raise KeyboardInterrupt

    monkeypatch.setattr(building_shared, "_relink", stopping)
    with pytest.raises(KeyboardInterrupt):
        tfjsbuild.build([shared / "tfjs-build.yaml"], jobs=1)
    monkeypatch.undo()

    state = load_state(shared / STATE)[0]
    for key, record in state.records.items():
        assert output_change(shared, record, shared / "dist") is None, key
        run_tfjs(shared / record.output, INPUTS[key])  # loads, every file there
    assert not (shared / "dist/.tfjs-build-staging").exists()
    finished = run_cli("run", cwd=shared)
    assert finished.returncode == 0, finished.stderr
    state = load_state(shared / STATE)[0]
    assert all(not any(f.path.endswith(".bin") for f in r.files) for r in state.records.values())
    listed = {f.path for r in state.records.values() for f in r.shared_files}
    assert set(state.shared_weights) == listed
    assert {f"{SHARED_WEIGHTS_DIR}/{n}" for n in shards(shared)} == listed


def test_a_damaged_shared_shard_is_rebuilt_and_a_foreign_one_never_overwritten(
    shared: Path,
) -> None:
    state = load_state(shared / STATE)[0]
    backbone = state.records["m:features"].shared_files[0].path
    (shared / "dist" / backbone).write_bytes(
        b"\0" * state.records["m:features"].shared_files[0].size
    )
    plan = run_cli("plan", cwd=shared)
    assert f"output modified: dist/{backbone}" in plan.stdout
    rebuilt = run_cli("run", cwd=shared)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "restored from the local cache" in rebuilt.stdout
    assert (shared / "dist" / backbone).read_bytes() != b"\0" * 512
    assert run_cli("plan", cwd=shared).stdout.count("up-to-date") == len(INPUTS)

    # A file tfjs-build did not write, under the name a new shard would take: left alone.
    shutil.rmtree(shared / "dist")
    state_file = shared / STATE / "state.json"
    data = json.loads(state_file.read_text())
    data["shared_weights"] = {}
    state_file.write_text(json.dumps(data))
    (shared / "dist" / SHARED_WEIGHTS_DIR).mkdir(parents=True)
    (shared / "dist" / backbone).write_bytes(b"someone else's")
    done = run_cli("run", cwd=shared)
    assert done.returncode == 0, done.stderr
    assert (
        "is not a shard tfjs-build wrote (it holds other bytes than its name says, or is a link)"
        in done.stderr
    )
    assert (shared / "dist" / backbone).read_bytes() == b"someone else's"
    state = load_state(shared / STATE)[0]
    for record in state.records.values():  # not shared this time, and whole
        assert record.shared_files == () and output_change(shared, record, shared / "dist") is None


@pytest.mark.parametrize(
    ("tamper", "warning"),
    [
        (
            lambda s: s["signatures"]["m:features"]["shared_files"][0].update(
                path="../outside/secret.bin"
            ),
            "record m:features dropped: signatures.m:features.shared_files[0].path: "
            "'../outside/secret.bin' is not a shared weight shard",
        ),
        (
            lambda s: s.setdefault("shared_weights", {}).update(
                {"../outside/secret.bin": "0" * 64}
            ),
            None,
        ),
    ],
    ids=["record-lists-a-file-outside", "state-owns-a-file-outside"],
)
def test_a_tampered_state_never_deletes_outside_the_shared_folder(
    shared: Path, tamper: Callable[[dict[str, Any]], None], warning: str | None
) -> None:
    outside = shared / "outside"  # what "../outside" below output_dir would be
    outside.mkdir()
    (outside / "secret.bin").write_text("not tfjs-build's")
    state_file = shared / STATE / "state.json"
    data = json.loads(state_file.read_text())
    tamper(data)
    state_file.write_text(json.dumps(data))
    for command in (("run",), ("clean",)):
        done = run_cli(*command, cwd=shared)
        assert done.returncode == 0, done.stderr
        if warning is not None and command == ("run",):
            assert warning in done.stderr
    assert (outside / "secret.bin").read_text() == "not tfjs-build's"


def test_lay_out_groups_by_the_signatures_using_each_weight() -> None:
    """Pure: groups by user set, equal bytes once (a signature's repeated bytes twice), shards
    cut at the smallest shard size of a group's signatures, the same result in any order."""

    def w(name: str, data: bytes) -> Weight:
        return Weight({"name": name, "dtype": "uint8", "shape": [len(data)]}, data)

    models = {
        "a": [w("x", b"backbone"), w("y", b"head-a"), w("zero1", b"\0\0"), w("zero2", b"\0\0")],
        "b": [w("renamed", b"backbone"), w("z", b"head-b"), w("zero", b"\0\0")],
    }
    layout = lay_out(models, {"a": 4, "b": 100})
    again = lay_out(dict(reversed(list(models.items()))), {"b": 100, "a": 4})
    assert layout == again
    # The group a and b share comes first: the backbone and one pair of zero bytes each.
    names = [[s["name"] for s in group["weights"]] for group in layout.manifests["a"]]
    assert sorted(names[0]) == ["x", "zero1"] and sorted(names[1]) == ["y", "zero2"]
    names_b = [[s["name"] for s in group["weights"]] for group in layout.manifests["b"]]
    assert sorted(names_b[0]) == ["renamed", "zero"] and names_b[1] == ["z"]
    assert layout.manifests["a"][0]["paths"] == layout.manifests["b"][0]["paths"]
    # Each weight's bytes once: backbone, the shared zeros, a's second zeros, both heads.
    assert sum(len(d) for d in layout.shards.values()) == len(b"backbone\0\0\0\0head-ahead-b")
    # Shared with a: cut at a's 4 bytes, even where b allows 100.
    assert all(len(layout.shards[p]) <= 4 for g in layout.manifests["a"] for p in g["paths"])
    assert len(layout.shards[layout.manifests["b"][1]["paths"][0]]) == len(b"head-b")
    for key, manifest in layout.manifests.items():  # each signature's weights cut out in order
        data = b"".join(layout.shards[p] for g in manifest for p in g["paths"])
        by_name = {w.spec["name"]: w.data for w in models[key]}
        offset = 0
        for group in manifest:
            for spec in group["weights"]:
                assert data[offset : offset + spec["shape"][0]] == by_name[spec["name"]]
                offset += spec["shape"][0]


def test_a_shared_folder_replaced_by_a_link_is_never_written_or_deleted_through(
    shared: Path,
) -> None:
    """output_dir/tfjs-build-weights made a link to a copy elsewhere: the outputs reading
    through it are rebuilt with their own shards, and nothing is written or deleted through it
    (by that build, or by clean); it is said."""
    elsewhere = shared / "elsewhere"
    shutil.move(shared / "dist" / SHARED_WEIGHTS_DIR, elsewhere)
    (shared / "dist" / SHARED_WEIGHTS_DIR).symlink_to(elsewhere)
    kept = {p.name: p.read_bytes() for p in elsewhere.iterdir()}
    shutil.rmtree(shared / "m")
    export_fresh("multihead", shared / "m", head_a_seed=8)

    done = run_cli("run", cwd=shared)
    cleaned = run_cli("clean", cwd=shared)

    assert done.returncode == 0, done.stderr
    assert f"{shared / 'dist' / SHARED_WEIGHTS_DIR} is not a folder" in done.stderr
    assert "shared weight shard not deleted" in done.stderr  # through the link: forgotten
    assert "is a symbolic link" in done.stderr
    assert cleaned.returncode == 0, cleaned.stderr
    assert {p.name: p.read_bytes() for p in elsewhere.iterdir()} == kept


def test_an_output_dir_beside_the_manifests_folder(
    tmp_path: Path, model_store: Callable[..., Path]
) -> None:
    """output_dir: ../web (records say "../web/m/..."): laid out, rebuilt and cleaned there."""
    root = tmp_path / "proj"
    root.mkdir()
    shutil.copytree(model_store("multihead"), root / "m")
    (root / "tfjs-build.yaml").write_text(
        "version: 1\noutput_dir: ../web\ndefaults: {share_weights: true}\nmodels:\n"
        "  m: {saved_model: m}\n"
    )
    assert run_cli("run", cwd=root).returncode == 0
    shutil.rmtree(root / "m")
    export_fresh("multihead", root / "m", head_a_seed=5)
    done = run_cli("run", cwd=root)
    assert done.returncode == 0, done.stderr
    state = load_state(root / STATE)[0]
    assert all(r.output.startswith("../web/") and r.shared_files for r in state.records.values())
    for record in state.records.values():
        assert output_change(root, record, tmp_path / "web") is None
        assert [p.name for p in (root / record.output).iterdir()] == ["model.json"]
    assert run_cli("clean", cwd=root).returncode == 0
    assert not (tmp_path / "web").exists()


def every_output_loads(root: Path) -> None:
    """Every recorded output, and every model.json below dist, loads in TF.js (all its files
    are there), whatever the state says of it."""
    for model_json in sorted((root / "dist").rglob("model.json")):
        key = "/".join(model_json.parent.relative_to(root / "dist").parts).replace("/", ":")
        run_tfjs(model_json.parent, INPUTS[key])


def over_every_budget(root: Path) -> None:
    """The next build fails every signature it builds (max_bytes: 100)."""
    manifest = root / "tfjs-build.yaml"
    manifest.write_text(manifest.read_text().replace("defaults:", "defaults:\n  max_bytes: 100"))


def test_a_build_stopped_just_after_a_relink_then_a_failed_build_breaks_no_output(
    shared: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stopped right after a new model.json was swapped in, before its record said so: the
    record listed the shards of both, so a next build that fails deletes none either reads."""
    shutil.rmtree(shared / "m")
    export_fresh("multihead", shared / "m", head_b_seed=9)
    real_swap = building_shared.swap_into_place

    def swap_then_stop(staging: Path, target: Path) -> None:
        real_swap(staging, target)
        raise KeyboardInterrupt

    monkeypatch.setattr(building_shared, "swap_into_place", swap_then_stop)
    with pytest.raises(KeyboardInterrupt):
        tfjsbuild.build([shared / "tfjs-build.yaml"], jobs=1)
    monkeypatch.undo()
    every_output_loads(shared)
    over_every_budget(shared)

    failed = run_cli("run", cwd=shared)

    assert failed.returncode == 1 and "over its max_bytes budget" in failed.stdout
    every_output_loads(shared)


def test_shards_an_output_of_a_dropped_record_reads_are_kept(shared: Path) -> None:
    """A record dropped as invalid lists nothing, but its output is still in place: a failed
    rebuild of it deletes none of the shards its model.json reads."""
    state_file = shared / STATE / "state.json"
    data = json.loads(state_file.read_text())
    data["signatures"]["m:regress"]["seconds"] = -1
    state_file.write_text(json.dumps(data))
    shutil.rmtree(shared / "m")
    export_fresh("multihead", shared / "m", head_b_seed=9)
    over_every_budget(shared)

    failed = run_cli("run", cwd=shared)

    assert failed.returncode == 1
    assert "record m:regress dropped" in failed.stderr
    every_output_loads(shared)


def test_a_model_json_tampered_with_is_a_rebuild_never_an_internal_error(shared: Path) -> None:
    """A shape of 1e999 (infinity to JSON readers that allow it), mtime and size kept: run_cli
    fails the test on exit 3."""
    model_json = shared / "dist/m/classify/model.json"
    stat = model_json.stat()
    text = model_json.read_text()
    tampered = text.replace('"shape": [8, 16]', '"shape": [1e999]', 1)
    assert tampered != text
    model_json.write_text(tampered.ljust(len(text)))
    os.utime(model_json, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    shutil.rmtree(shared / "m")
    export_fresh("multihead", shared / "m", head_b_seed=9)

    done = run_cli("run", cwd=shared)

    assert done.returncode == 0, done.stderr
    assert "m:classify: its weights are not shared this time" in done.stderr


def test_verifying_shared_outputs_leaves_the_cache_entries_as_converted(shared: Path) -> None:
    entries = shared / ".tfjs-build/cache/entries"
    before = {p.relative_to(entries): p.read_bytes() for p in entries.rglob("*") if p.is_file()}
    manifest = shared / "tfjs-build.yaml"
    manifest.write_text(
        manifest.read_text().replace("defaults:", "defaults:\n  verify: {atol: 0.001}")
    )
    assert run_cli("run", cwd=shared).returncode == 0
    after = {p.relative_to(entries): p.read_bytes() for p in entries.rglob("*") if p.is_file()}
    assert after == before


def test_a_budget_the_longer_model_json_would_break_keeps_own_shards(shared: Path) -> None:
    """max_bytes between the output as converted and as laid out: built, kept with its own
    shards (said), and up to date the next time, not failed."""
    state = load_state(shared / STATE)[0]
    laid_out = state.records["r:embed"].bytes
    manifest = shared / "tfjs-build.yaml"
    manifest.write_text(
        manifest.read_text().replace(
            "  r:\n    saved_model: r\n",
            f"  r:\n    saved_model: r\n    max_bytes: {laid_out - 1}\n",
        )
    )
    shutil.rmtree(shared / "dist")

    built = run_cli("run", cwd=shared)
    again = run_cli("run", "--json", cwd=shared)

    assert built.returncode == 0, built.stdout + built.stderr
    assert (
        f"r:embed: its weights are not shared this time: shared, it would be {laid_out} bytes"
        in built.stderr
    )
    assert again.returncode == 0, again.stdout
    assert "not shared" not in again.stderr  # said once: nothing was placed since
    assert load_state(shared / STATE)[0].records["r:embed"].shared_files == ()


def test_building_one_signature_lays_out_the_others_with_it(shared: Path) -> None:
    """`run m:regress` after head B is retrained: the backbone stays in one file that the
    signatures not selected read too."""
    shutil.rmtree(shared / "m")
    export_fresh("multihead", shared / "m", head_b_seed=9)
    done = run_cli("run", "m:regress", cwd=shared)
    assert done.returncode == 0, done.stderr
    state = load_state(shared / STATE)[0]
    backbone = {f.path for f in state.records["m:features"].shared_files}
    assert backbone <= {f.path for f in state.records["m:regress"].shared_files}
    on_disk = {f"{SHARED_WEIGHTS_DIR}/{n}" for n in shards(shared)}
    assert on_disk == {f.path for r in state.records.values() for f in r.shared_files}


def test_a_full_disk_while_relinking_keeps_own_shards_and_a_true_index(
    shared: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.rmtree(shared / "m")
    export_fresh("multihead", shared / "m", head_b_seed=9)

    def full(staging: Path, target: Path) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(target))

    monkeypatch.setattr(building_shared, "swap_into_place", full)
    with pytest.warns(
        UserWarning, match="m:regress: its weights are not shared this time: .*No space left"
    ):
        result = tfjsbuild.build([shared / "tfjs-build.yaml"], jobs=1)
    monkeypatch.undo()
    assert result.ok
    state = load_state(shared / STATE)[0]
    index = json.loads((shared / "dist/tfjs-build.json").read_text())
    for key, record in state.records.items():
        model, signature = key.split(":")
        assert index["models"][model][signature]["hash"] == record.content_hash, key
        assert output_change(shared, record, shared / "dist") is None
    every_output_loads(shared)
    finished = run_cli("run", "--json", cwd=shared)
    report = json.loads(finished.stdout)
    assert all(load_state(shared / STATE)[0].records[k].shared_files for k in INPUTS)
    for entry in report["signatures"]:
        assert entry["status"] == "up-to-date"


def test_run_json_gives_the_sizes_laid_out(shared: Path) -> None:
    shutil.rmtree(shared / "m")
    export_fresh("multihead", shared / "m", head_b_seed=9)
    done = run_cli("run", "--json", cwd=shared)
    (regress,) = [s for s in json.loads(done.stdout)["signatures"] if s["signature"] == "regress"]
    index = json.loads((shared / "dist/tfjs-build.json").read_text())
    assert regress["status"] == "built"
    assert regress["bytes"] == index["models"]["m"]["regress"]["bytes"]


def test_the_report_counts_each_shared_shard_once(shared: Path) -> None:
    state = load_state(shared / STATE)[0]
    each = sum(r.bytes for r in state.records.values())
    distinct = sum(f.size for r in state.records.values() for f in r.files) + sum(
        len(data) for data in shards(shared).values()
    )
    text = run_cli("report", cwd=shared)
    as_json = run_cli("report", "--json", cwd=shared)

    assert (
        f"{len(INPUTS)} signatures, {format_bytes(distinct)} ({format_bytes(each)} unshared) in all"
        in text.stdout
    )
    report = json.loads(as_json.stdout)
    schema = json.loads((REPO / "schemas/build-report.schema.json").read_text())
    jsonschema.Draft202012Validator(schema).validate(report)
    rows = {f"{r['model']}:{r['signature']}": r for r in report["signatures"]}
    for key, record in state.records.items():
        assert rows[key]["shared_files"] == {f.path: f.size for f in record.shared_files}
        assert rows[key]["bytes"] == record.bytes


def test_a_fifo_named_model_json_below_output_dir_never_hangs_the_clean_up(shared: Path) -> None:
    """Shards no record lists are looked for in every model.json below output_dir before they
    are deleted: a fifo there is skipped, not read (a read would wait forever)."""
    (shared / "dist/planted").mkdir()
    os.mkfifo(shared / "dist/planted/model.json")
    shutil.rmtree(shared / "m")
    export_fresh("multihead", shared / "m", head_b_seed=9)

    done = run_cli("run", cwd=shared, timeout=120)

    assert done.returncode == 0, done.stderr
    state = load_state(shared / STATE)[0]
    assert set(state.shared_weights) == {
        f.path for r in state.records.values() for f in r.shared_files
    }


def test_an_output_that_cannot_be_read_back_for_verification_is_converted_again(
    shared: Path,
) -> None:
    """A verification in place reads a copy with its own shards; where the output cannot be
    read back (a model.json tampered with, size and time kept) that signature is converted
    again, and the rest of the build goes on."""
    model_json = shared / "dist/m/classify/model.json"
    stat = model_json.stat()
    text = model_json.read_text()
    model_json.write_text(text.replace('"shape": [8, 16]', '"shape": [1e999]', 1).ljust(len(text)))
    os.utime(model_json, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    manifest = shared / "tfjs-build.yaml"
    manifest.write_text(
        manifest.read_text().replace("defaults:", "defaults:\n  verify: {atol: 0.001}")
    )

    done = run_cli("run", "--json", cwd=shared)

    assert done.returncode == 0, done.stderr
    statuses = statuses_of(done)
    assert statuses.pop("m:classify") == "built"
    assert set(statuses.values()) == {"verified"}
    every_output_loads(shared)
