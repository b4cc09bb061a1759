"""Signature-level change detection on real SavedModels made by fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

import savedmodels
from conftest import export_fresh
from tfjsbuild.sources.digest import StatCache
from tfjsbuild.sources.saved_model_graph import (
    GraphFingerprintError,
    SignatureGraph,
    signature_graphs,
)

TESTS = Path(__file__).parent


def graphs(path: Path, paranoid: bool = False) -> dict[str, SignatureGraph]:
    return signature_graphs(path, ("serve",), StatCache(), paranoid=paranoid)


def changed(before: Path, after: Path, paranoid: bool = False) -> set[str]:
    old, new = graphs(before, paranoid), graphs(after, paranoid)
    assert set(old) == set(new)
    return {name for name in old if old[name].digest != new[name].digest}


@pytest.fixture(scope="module")
def multihead(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return savedmodels.save_multihead(tmp_path_factory.mktemp("base") / "m")


def test_identical_reexport_in_the_same_process_changes_nothing(
    multihead: Path, tmp_path: Path
) -> None:
    again = savedmodels.save_multihead(tmp_path / "again")
    assert (multihead / "saved_model.pb").read_bytes() != (again / "saved_model.pb").read_bytes()
    assert changed(multihead, again) == set()


def test_identical_reexport_in_a_fresh_process_changes_nothing(
    multihead: Path, tmp_path: Path
) -> None:
    assert changed(multihead, export_fresh("multihead", tmp_path / "fresh")) == set()


def test_tracing_unrelated_functions_first_changes_nothing(multihead: Path, tmp_path: Path) -> None:
    assert (
        changed(multihead, export_fresh("multihead", tmp_path / "traced", trace_unrelated=True))
        == set()
    )


def test_head_b_weights_change_only_regress(multihead: Path, tmp_path: Path) -> None:
    retrained = savedmodels.save_multihead(tmp_path / "b", head_b_seed=30)
    assert changed(multihead, retrained) == {"regress"}
    assert changed(multihead, retrained, paranoid=True) == {"regress"}
    regress = graphs(retrained)["regress"]
    assert [(c.kind, c.name) for c in regress.captures] == [
        ("variable", "backbone"),
        ("variable", "head_b"),
    ]


def test_backbone_change_rebuilds_all_three(multihead: Path, tmp_path: Path) -> None:
    assert changed(multihead, savedmodels.save_multihead(tmp_path / "bb", backbone_seed=10)) == {
        "features",
        "classify",
        "regress",
    }


def test_regress_code_change_with_same_weights_changes_only_regress(
    multihead: Path, tmp_path: Path
) -> None:
    assert changed(multihead, savedmodels.save_multihead(tmp_path / "code", regress_scale=2.0)) == {
        "regress"
    }


def test_vocab_asset_change_and_move(tmp_path: Path) -> None:
    base = savedmodels.save_vocab(tmp_path / "base")
    assert changed(base, savedmodels.save_vocab(tmp_path / "words", words="cat,dog,bird")) == {
        "encode"
    }
    assert changed(base, savedmodels.save_vocab(tmp_path / "moved", vocab_dir="elsewhere")) == set()
    encode = graphs(base)["encode"]
    assert [(c.kind, c.name) for c in encode.captures] == [
        ("resource", "table"),
        ("constant", "Const"),
    ]
    assert graphs(base)["score"].captures[0].name == "w"


def test_captured_constant_change_only_its_signature(tmp_path: Path) -> None:
    base = savedmodels.save_constants(tmp_path / "base")
    assert changed(base, savedmodels.save_constants(tmp_path / "a", a=3.0)) == {"first"}
    assert [c.kind for c in graphs(base)["first"].captures] == ["constant"]


def test_keras3_export_head_b_change_only_regress(tmp_path: Path) -> None:
    base = export_fresh("keras3", tmp_path / "base")
    assert changed(base, export_fresh("keras3", tmp_path / "same")) == set()
    assert changed(base, export_fresh("keras3", tmp_path / "b", head_b_seed=30)) == {"regress"}


def test_tf_keras_model_save_head_b_change_only_regress(tmp_path: Path) -> None:
    base = export_fresh("tf_keras", tmp_path / "base")
    assert changed(base, export_fresh("tf_keras", tmp_path / "same")) == set()
    assert changed(base, export_fresh("tf_keras", tmp_path / "b", head_b_seed=30)) == {"regress"}


def test_tf1_saved_model_has_no_graph_fingerprint(tmp_path: Path) -> None:
    with pytest.raises(GraphFingerprintError, match="a TF1 SavedModel without an object graph"):
        graphs(savedmodels.save_tf1(tmp_path / "tf1"))


def _build(root: Path) -> None:
    import tfjsbuild

    manifest = root / "tfjs-build.yaml"
    manifest.write_text("version: 1\nmodels:\n  m:\n    saved_model: m\n")
    result = tfjsbuild.build([manifest], jobs=1)
    assert result.ok, [r.error for r in result.failed]


def _outputs(root: Path) -> dict[str, object]:
    import json

    found: dict[str, object] = {}
    for model_json in sorted((root / "dist/m").glob("*/model.json")):
        folder = model_json.parent
        found[folder.name] = (
            json.loads(model_json.read_text()),
            {p.name: p.read_bytes() for p in sorted(folder.glob("*.bin"))},
        )
    return found


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kind", "settings"),
    [
        ("multihead", {}),
        ("multihead", {"trace_unrelated": True}),
        ("keras3", {}),
        ("tf_keras", {}),
        ("table", {}),
    ],
)
def test_up_to_date_outputs_equal_a_fresh_conversion(
    tmp_path: Path, kind: str, settings: dict[str, object]
) -> None:
    """After a re-export that rebuilds nothing, what is on disk is what converting it would give."""
    import shutil

    import tfjsbuild

    project = tmp_path / "project"
    export_fresh(kind, project / "m")
    _build(project)
    shutil.rmtree(project / "m")
    export_fresh(kind, project / "m", **settings)
    assert {item.action for item in tfjsbuild.plan([project / "tfjs-build.yaml"]).items} == {
        "up-to-date"
    }

    fresh = tmp_path / "fresh"
    shutil.copytree(project / "m", fresh / "m")
    _build(fresh)
    kept, converted = _outputs(project), _outputs(fresh)
    assert sorted(kept) == sorted(converted) and kept
    for signature in kept:
        assert kept[signature] == converted[signature], signature
