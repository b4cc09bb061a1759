"""tfjs-build deletes and overwrites only what it provably wrote, for the manifest that wrote it.

Real projects built once per module and copied per test; tampering is done on disk as a user, a
restored CI cache or a hostile checkout would.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

import tfjsbuild
from conftest import run_cli
from tfjsbuild.building.removal import remove_recorded_output
from tfjsbuild.errors import ManifestError
from tfjsbuild.manifest.load import load_manifest
from tfjsbuild.stores.recorded_options import RecordedOptions
from tfjsbuild.stores.records import RecordedFile, SignatureRecord
from tfjsbuild.stores.state import load_state

STATE = ".tfjs-build/manifests/tfjs-build.yaml"
CLASSIFIER = """version: 1
models:
  classifier:
    saved_model: multi
    signatures: [classify, features]
"""
KEPT = "kept: model 'classifier' has errors; fix them to prune"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, model_store: Callable[..., Path]) -> Path:
    root = tmp_path_factory.mktemp("owned") / "proj"
    root.mkdir()
    shutil.copytree(model_store("multihead"), root / "multi")
    (root / "tfjs-build.yaml").write_text(CLASSIFIER)
    result = tfjsbuild.build([root / "tfjs-build.yaml"], jobs=1)
    assert result.ok, [r.error for r in result.failed]
    return root


@pytest.fixture
def proj(built: Path, tmp_path: Path) -> Path:
    """A copy of the built project (outputs, state, local cache) of this test's own."""
    root = (tmp_path / "proj").resolve()
    shutil.copytree(built, root, symlinks=True)
    return root


def snapshot(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def by_key(report: str) -> dict[str, tuple[str, list[str]]]:
    return {
        f"{s['model']}:{s['signature']}": (s.get("status") or s["action"], s["reasons"])
        for s in json.loads(report)["signatures"]
    }


# --------------------------------------------------------------------------- plans with errors


@pytest.mark.slow
def test_a_misspelt_signature_keeps_the_deployed_output_until_the_manifest_is_fixed(
    proj: Path,
) -> None:
    manifest = proj / "tfjs-build.yaml"
    deployed = snapshot(proj / "dist")
    manifest.write_text(CLASSIFIER.replace("[classify, features]", "[clasify, features]"))

    plan = run_cli("plan", "--json", cwd=proj)
    assert plan.returncode == 1, plan.stderr
    items = by_key(plan.stdout)
    assert items["classifier:classify"] == ("up-to-date", [KEPT])
    assert items["classifier:features"] == ("up-to-date", [])
    assert items["classifier:clasify"][0] == "build"
    assert items["classifier:clasify"][1][0].endswith(
        "did you mean 'classify'?\n"
        "    5 |     signatures: [clasify, features]\n"
        "      |                  ^"
    )
    text = run_cli("plan", cwd=proj).stdout
    assert f"  up-to-date  classifier:classify\n      {KEPT}\n" in text

    done = run_cli("run", "--json", cwd=proj)
    assert done.returncode == 1
    assert by_key(done.stdout)["classifier:classify"] == ("up-to-date", [KEPT])
    assert snapshot(proj / "dist") == deployed  # the index still lists it, too
    state, _ = load_state(proj / STATE)
    assert sorted(state.records) == ["classifier:classify", "classifier:features"]

    # A source that cannot be read is an error of its model too: nothing is removed.
    (proj / "multi").rename(proj / "moved")
    done = run_cli("run", "--json", cwd=proj)
    assert done.returncode == 1
    assert by_key(done.stdout)["classifier:classify"] == ("up-to-date", [KEPT])
    assert snapshot(proj / "dist") == deployed
    (proj / "moved").rename(proj / "multi")

    # The signature really removed from a manifest that resolves: now it is pruned.
    manifest.write_text(CLASSIFIER.replace("[classify, features]", "[features]"))
    done = run_cli("run", "--json", cwd=proj)
    assert done.returncode == 0, done.stderr
    assert by_key(done.stdout)["classifier:classify"] == (
        "removed",
        ["removed from the manifest"],
    )
    assert sorted(snapshot(proj / "dist")) == [
        "classifier/features/group1-shard1of1.bin",
        "classifier/features/model.json",
        "tfjs-build.d.ts",
        "tfjs-build.js",
        "tfjs-build.json",
    ]


# --------------------------------------------------------------------------- deletion


def record_at(output: str, *paths: str) -> SignatureRecord:
    return SignatureRecord(
        model="m",
        signature="s",
        output=output,
        fingerprint="0" * 64,
        parts={},
        options=RecordedOptions({}),
        files=tuple(RecordedFile(path, 1, "0" * 64, 0) for path in paths),
        inputs=(),
        outputs=(),
        content_hash="0" * 64,
        seconds=1.0,
    )


def test_removal_deletes_only_listed_files_below_output_dir_never_through_a_link(
    tmp_path: Path,
) -> None:
    """Records made in code, so the checks at deletion are tested without those at loading."""
    root = tmp_path.resolve()
    (root / "tfjs-build.yaml").write_text("version: 1\nmodels:\n  m:\n    saved_model: m\n")
    manifest = load_manifest(root / "tfjs-build.yaml")
    outside = root / "outside"
    (outside / "s").mkdir(parents=True)
    for name in ("model.json", "secret.txt", "s/model.json"):
        (outside / name).write_text("not tfjs-build's")
    dist = root / "dist"
    (dist / "m").mkdir(parents=True)
    (dist / "m/link").symlink_to(outside)
    (dist / "m/s").mkdir()
    (dist / "m/s/model.json").write_text("{}")
    (dist / "m/s/weights.bin").symlink_to(outside / "secret.txt")
    where = f"(tfjs-build deletes only the files it recorded, in folders below output_dir {dist}, "
    where += "never through a symbolic link)"

    refused = {
        "../outside": f"m:s: nothing deleted: output: '../outside' is not inside output_dir {dist} "
        + where,
        str(outside): f"m:s: nothing deleted: output: '{outside}' is not a relative POSIX path "
        + where,
        "dist": f"m:s: nothing deleted: output: 'dist' is not inside output_dir {dist} " + where,
        "dist/m/link/s": f"m:s: nothing deleted: output: {dist}/m/link is a symbolic link " + where,
    }
    for output, message in refused.items():
        assert remove_recorded_output(manifest, record_at(output, "model.json")) == message
    # A listed file that is a link, or a path out of the folder: nothing of the record goes.
    assert remove_recorded_output(manifest, record_at("dist/m/s", "model.json", "weights.bin")) == (
        f"m:s: nothing deleted: files[1].path: {dist}/m/s/weights.bin is a symbolic link " + where
    )
    assert remove_recorded_output(manifest, record_at("dist/m/s", "model.json", "../s")) == (
        "m:s: nothing deleted: files[1].path: '../s' is not a normalised path inside its folder "
        + where
    )
    assert (dist / "m/s/model.json").exists()
    assert snapshot(outside) == {
        "model.json": b"not tfjs-build's",
        "s/model.json": b"not tfjs-build's",
        "secret.txt": b"not tfjs-build's",
    }

    # What is provably its own goes, with the folders it leaves empty (not output_dir).
    (dist / "m/s/weights.bin").unlink()
    (dist / "m/link").unlink()
    assert remove_recorded_output(manifest, record_at("dist/m/s", "model.json", "gone.bin")) is None
    assert not (dist / "m").exists() and dist.is_dir()


@pytest.mark.slow
def test_pruning_and_clean_never_delete_through_a_symlink(proj: Path) -> None:
    outside = proj.parent / "outside"
    outside.mkdir()
    (outside / "weights.bin").write_bytes(b"precious")
    state, _ = load_state(proj / STATE)
    names = [f.path for f in state.records["classifier:features"].files]
    shard = proj / "dist/classifier/features/group1-shard1of1.bin"
    shard.unlink()
    shard.symlink_to(outside / "weights.bin")
    where = (
        "(tfjs-build deletes only the files it recorded, in folders below output_dir "
        f"{proj}/dist, never through a symbolic link)"
    )

    (proj / "tfjs-build.yaml").write_text(CLASSIFIER.replace("classify, features", "classify"))
    done = run_cli("run", "--json", cwd=proj)
    assert done.returncode == 0, done.stderr
    warning = (
        f"classifier:features: nothing deleted: files[{names.index(shard.name)}].path: {shard} is "
        f"a symbolic link {where}"
    )
    assert done.stderr == f"warning: {warning}\n"
    report = {f"{s['model']}:{s['signature']}": s for s in json.loads(done.stdout)["signatures"]}
    assert (report["classifier:features"]["status"], report["classifier:features"]["error"]) == (
        "removed",
        warning,
    )
    assert (outside / "weights.bin").read_bytes() == b"precious"
    assert shard.is_symlink() and (shard.parent / "model.json").is_file()  # left as it was
    state, _ = load_state(proj / STATE)
    assert sorted(state.records) == ["classifier:classify"]  # not kept as its own any more

    # clean: a folder of the output path is a link now, and a record points outside.
    (outside / "classifier").mkdir()
    (proj / "dist/classifier").rename(outside / "classifier/real")
    (proj / "dist/classifier").symlink_to(outside / "classifier/real")
    raw = json.loads((proj / STATE / "state.json").read_text())
    raw["signatures"]["gone:s"] = dict(
        raw["signatures"]["classifier:classify"], model="gone", signature="s", output="../outside"
    )
    (proj / STATE / "state.json").write_text(json.dumps(raw))
    guarded = snapshot(outside)
    done = run_cli("clean", cwd=proj)
    assert done.returncode == 0, done.stderr
    assert done.stderr == (
        f"warning: {proj / STATE / 'state.json'}: record classifier:classify dropped: "
        f"signatures.classifier:classify.output: {proj}/dist/classifier is a symbolic link; its "
        "files are left in place\n"
        f"warning: {proj / STATE / 'state.json'}: record gone:s dropped: signatures.gone:s.output: "
        f"'../outside' is not inside output_dir {proj}/dist; its files are left in place\n"
    )
    assert done.stdout == "Removed 0 outputs and the build state.\n"
    assert snapshot(outside) == guarded
    assert not (proj / ".tfjs-build").exists()


@pytest.mark.slow
def test_outputs_are_never_written_through_a_symlink_in_output_dir(proj: Path) -> None:
    outside = proj.parent / "outside"
    (proj / "dist/classifier").rename(outside)
    (proj / "dist/classifier").symlink_to(outside)
    guarded = snapshot(outside)
    done = run_cli("run", "--json", cwd=proj)
    assert done.returncode == 1
    report = {f"{s['model']}:{s['signature']}": s for s in json.loads(done.stdout)["signatures"]}
    for column, signature in [(18, "classify"), (28, "features")]:
        target = proj / "dist/classifier" / signature
        assert report[f"classifier:{signature}"]["error"] == (
            f"tfjs-build.yaml:5:{column}: models.classifier.signatures[{column // 20}]: output "
            f"folder {target} lies under {proj}/dist/classifier, a symbolic link (to {outside}): "
            "outputs are written only into real folders below output_dir, never through a link "
            "to elsewhere. Replace the link by a real folder, or point output_dir (which may be a "
            "link) where the outputs should go\n"
            "    5 |     signatures: [classify, features]\n"
            f"      | {' ' * (column - 1)}^"
        )
    assert snapshot(outside) == guarded


# --------------------------------------------------------------------------- manifests side by side

OTHER = """version: 1
output_dir: web
models:
  other:
    saved_model: multi
    signatures: [features]
"""


@pytest.mark.slow
def test_manifests_in_one_folder_have_their_own_state_and_share_the_cache(proj: Path) -> None:
    (proj / "other.yaml").write_text(OTHER)
    done = run_cli("run", "--json", "-f", "tfjs-build.yaml", "-f", "other.yaml", cwd=proj)
    assert done.returncode == 0, done.stderr  # one lock each: the run does not lock itself out
    assert {key: status for key, (status, _) in by_key(done.stdout).items()} == {
        "classifier:classify": "up-to-date",
        "classifier:features": "up-to-date",
        "other:features": "restored",  # the same conversion, from the folder's shared cache
    }
    assert sorted(p.name for p in (proj / ".tfjs-build/manifests").iterdir()) == [
        "other.yaml",
        "tfjs-build.yaml",
    ]
    index = json.loads((proj / "web/tfjs-build.json").read_text())
    assert (index["manifest"], list(index["models"])) == ("../other.yaml", ["other"])
    assert json.loads((proj / "dist/tfjs-build.json").read_text())["manifest"] == (
        "../tfjs-build.yaml"
    )

    # Building one manifest prunes nothing of the other.
    web = snapshot(proj / "web")
    for args in (["run"], ["run", "-f", "other.yaml"]):
        done = run_cli(*args, "--json", cwd=proj)
        assert done.returncode == 0, done.stderr
        assert {status for status, _ in by_key(done.stdout).values()} == {"up-to-date"}
    assert snapshot(proj / "web") == web

    # Cleaning one keeps the other's state and outputs, and the cache they share.
    done = run_cli("clean", "-f", "other.yaml", cwd=proj)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "removed web/other/features\nRemoved 1 output and the build state.\n"
    assert not (proj / "web").exists()
    assert sorted(p.name for p in (proj / ".tfjs-build").iterdir()) == ["cache", "manifests"]
    assert sorted(p.name for p in (proj / ".tfjs-build/manifests").iterdir()) == ["tfjs-build.yaml"]
    done = run_cli("run", "--json", cwd=proj)
    assert {status for status, _ in by_key(done.stdout).values()} == {"up-to-date"}


@pytest.mark.slow
def test_two_manifests_never_share_an_output_dir(proj: Path) -> None:
    (proj / "other.yaml").write_text(OTHER.replace("output_dir: web", "output_dir: dist"))
    deployed = snapshot(proj / "dist")
    done = run_cli("run", "-f", "tfjs-build.yaml", "-f", "other.yaml", cwd=proj)
    assert (done.returncode, done.stderr) == (
        2,
        f"other.yaml:2:13: output_dir: output_dir {proj}/dist is also the output_dir of "
        "tfjs-build.yaml: the two would overwrite each other's tfjs-build.json (and outputs); "
        "give each manifest its own output_dir\n"
        "    2 | output_dir: dist\n"
        "      |             ^\n"
        "1 problem found; nothing was built.\n",
    )
    # Run apart, the asset index says which manifest owns the folder.
    done = run_cli("run", "-f", "other.yaml", cwd=proj)
    assert (done.returncode, done.stderr) == (
        2,
        f"other.yaml:2:13: output_dir: {proj}/dist/tfjs-build.json was written by the manifest "
        f"{proj}/tfjs-build.yaml, which uses the same output_dir: the two would overwrite each "
        "other's asset index (and outputs); give each manifest its own output_dir (if "
        f"tfjs-build.yaml no longer uses this one, delete {proj}/dist/tfjs-build.json)\n"
        "    2 | output_dir: dist\n"
        "      |             ^\n"
        "1 problem found; nothing was built.\n",
    )
    assert snapshot(proj / "dist") == deployed
    assert not (proj / ".tfjs-build/manifests/other.yaml/state.json").exists()

    # A manifest renamed: the index's writer is gone, the new name takes the folder over.
    (proj / "tfjs-build.yaml").rename(proj / "renamed.yaml")
    done = run_cli("run", "--json", "-f", "renamed.yaml", cwd=proj)
    assert done.returncode == 0, done.stderr
    assert {status for status, _ in by_key(done.stdout).values()} == {"restored"}
    assert json.loads((proj / "dist/tfjs-build.json").read_text())["manifest"] == "../renamed.yaml"


@pytest.mark.slow
def test_the_shared_state_of_earlier_versions_is_adopted_by_the_default_manifest(
    proj: Path,
) -> None:
    """`.tfjs-build/state.json` (before states were per manifest) costs no rebuild."""
    legacy = proj / ".tfjs-build/state.json"
    (proj / STATE / "state.json").rename(legacy)
    shutil.rmtree(proj / STATE)
    # It was shared: a record of a model only another manifest declares is never pruned.
    raw = json.loads(legacy.read_text())
    raw["signatures"]["app:features"] = dict(
        raw["signatures"]["classifier:features"], model="app", output="dist/app/features"
    )
    legacy.write_text(json.dumps(raw))
    shutil.copytree(proj / "dist/classifier/features", proj / "dist/app/features")
    deployed = snapshot(proj / "dist")

    result = tfjsbuild.build([proj / "tfjs-build.yaml"])
    assert {r.item.key: r.status for r in result.results} == {
        "classifier:classify": "up-to-date",
        "classifier:features": "up-to-date",
    }
    assert result.warnings == []
    assert not legacy.exists()
    state, warnings = load_state(proj / STATE)
    assert (sorted(state.records), warnings) == (
        ["classifier:classify", "classifier:features"],
        [],
    )
    assert snapshot(proj / "dist") == deployed


# --------------------------------------------------------------------------- names from "*"


def test_signature_names_read_from_the_saved_model_are_located_at_their_model(
    project: Callable[..., Path], model_store: Callable[..., Path]
) -> None:
    manifest = project(
        "version: 1\nlayout: '{signature}'\nmodels:\n  odd:\n    saved_model: odd\n",
        {"odd": model_store("named", names="ok,../../x,tfjs-build.json")},
    )
    with pytest.raises(ManifestError) as caught:
        tfjsbuild.plan([manifest])
    source_line = "    4 |   odd:\n      |   ^\n"
    assert caught.value.format() == (
        f"{manifest}:4:3: models.odd: output '../../x' of odd:../../x escapes output_dir: use a "
        "relative folder below it, without '..'\n"
        + source_line
        + f"{manifest}:4:3: models.odd: output 'tfjs-build.json' of odd:tfjs-build.json takes the "
        "name 'tfjs-build.json', which tfjs-build keeps for its asset index in output_dir: "
        "choose another output\n" + source_line + "2 problems found; nothing was built."
    )
    done = run_cli("plan", cwd=manifest.parent)
    assert done.returncode == 2
    assert not (manifest.parent / "dist").exists()


@pytest.mark.slow
def test_a_renamed_model_keeping_its_output_folders_keeps_its_outputs(proj: Path) -> None:
    """The removed signatures' folders are the renamed ones' now: restored (or built) into place
    and then pruned was a build that said it succeeded and left nothing."""
    before = snapshot(proj / "dist")
    (proj / "tfjs-build.yaml").write_text(
        "version: 1\nmodels:\n  renamed:\n    saved_model: multi\n    signatures:\n"
        "      classify: {output: classifier/classify}\n"
        "      features: {output: classifier/features}\n"
    )
    done = run_cli("run", "--json", cwd=proj)
    assert done.returncode == 0, done.stderr
    assert {key: status for key, (status, _) in by_key(done.stdout).items()} == {
        "renamed:classify": "restored",
        "renamed:features": "restored",
        "classifier:classify": "removed",
        "classifier:features": "removed",
    }
    after = snapshot(proj / "dist")
    # The outputs are the same bytes; the index and its loader name the new model.
    generated = ("tfjs-build.json", "tfjs-build.js", "tfjs-build.d.ts")
    assert {k: v for k, v in after.items() if k not in generated} == {
        k: v for k, v in before.items() if k not in generated
    }
    plan = run_cli("plan", "--json", cwd=proj)
    assert {key: action for key, (action, _) in by_key(plan.stdout).items()} == {
        "renamed:classify": "up-to-date",
        "renamed:features": "up-to-date",
    }


@pytest.mark.slow
def test_an_output_folder_holding_a_users_files_is_not_replaced(proj: Path) -> None:
    """The swap replaces a whole folder: one holding files tfjs-build did not write stops the
    build of that signature, with the files named, and nothing in it changes."""
    folder = proj / "dist/classifier/classify"
    (folder / "NOTES.txt").write_text("mine")
    (folder / "keep").mkdir()
    (folder / "keep/x").write_text("mine too")
    with (folder / "model.json").open("a") as handle:
        handle.write(" ")  # a modified output: rebuilt (restored from the cache) if it may be
    before = snapshot(folder)
    done = run_cli("run", "--json", cwd=proj)
    assert done.returncode == 1
    report = {f"{s['model']}:{s['signature']}": s for s in json.loads(done.stdout)["signatures"]}
    assert report["classifier:classify"]["error"] == (
        f"output folder {folder} holds files tfjs-build did not write (NOTES.txt, keep/x); the "
        "build replaces the whole folder, so move them out of it (e.g. beside output_dir)"
    )
    assert report["classifier:features"]["status"] == "up-to-date"
    assert snapshot(folder) == before
    # Moved away, the output is replaced as usual.
    (folder / "NOTES.txt").unlink()
    shutil.rmtree(folder / "keep")
    assert run_cli("run", cwd=proj).returncode == 0
    assert run_cli("plan", cwd=proj).stdout.endswith("0 to build, 2 up to date, 0 to remove\n")
