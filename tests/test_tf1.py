"""TF1 SavedModels (a tf.compat.v1 graph saved by SavedModelBuilder), lookup tables included.

Built end to end with `tfjs-build run` (verification on), then run in TensorFlow.js and
compared with the TF1 model's own answers, and with tensorflowjs_converter's conversion.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from conftest import export_fresh, run_cli, run_tfjs

pytestmark = pytest.mark.slow

# Known words and unknown ones ("bird", ""), which get the table's default value (-1).
WORDS = np.array(["dog", "bird", "cat", "fish", "", "cat"], dtype=object)
VECTORS = np.array([[0.5, -1.0], [2.0, 0.25]], dtype="float32")

MANIFEST = """
version: 1
models:
  words:
    saved_model: models/words
    signatures:
      serving_default:
        verify: {inputs: words.npz}
      embed: {}
"""


@pytest.fixture(scope="module")
def tf1_lookup(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Exported in a fresh process, as a user's TF1 export script would."""
    return export_fresh("tf1_lookup", tmp_path_factory.mktemp("tf1") / "words")


def _project(root: Path, model: Path) -> Path:
    import shutil

    shutil.copytree(model, root / "models" / "words")
    np.savez(root / "words.npz", words=WORDS.astype(str))
    manifest = root / "tfjs-build.yaml"
    manifest.write_text(textwrap.dedent(MANIFEST).lstrip())
    return manifest


def test_a_tf1_lookup_table_model_builds_verified_and_answers_as_tensorflow(
    tmp_path: Path, tf1_lookup: Path
) -> None:
    import savedmodels

    _project(tmp_path, tf1_lookup)
    built = run_cli("run", "--json", cwd=tmp_path)
    assert built.returncode == 0, built.stdout + built.stderr
    report = {s["signature"]: s for s in json.loads(built.stdout)["signatures"]}
    assert {name: s["status"] for name, s in report.items()} == {
        "serving_default": "built",
        "embed": "built",
    }
    verification = report["serving_default"]["verification"]
    assert (verification["passed"], verification["inputs"]) == (True, str(tmp_path / "words.npz"))
    assert [set(run["outputs"]) for run in verification["backends"].values()] == [{"ids", "scores"}]
    assert report["embed"]["verification"]["passed"] is True

    words = tmp_path / "dist" / "words" / "serving_default"
    model_json = (words / "model.json").read_text()
    model = json.loads(model_json)
    assert model_json == json.dumps(model, sort_keys=True)
    assert sorted(model["signature"]["inputs"]) == ["words"]
    assert sorted(model["signature"]["outputs"]) == ["ids", "scores"]
    # The table and its initializer, named after their node (not the export's random
    # shared_name), so TF.js shares the table between the two graphs by name.
    tables = [n for n in model["modelInitializer"]["node"] if n["op"] == "HashTableV2"]
    assert [(n["name"], n["attr"]["shared_name"]["s"]) for n in tables] == [
        ("hash_table", "aGFzaF90YWJsZQ==")  # base64 of b"hash_table"
    ]
    assert "hash_table" in {n["name"] for n in model["modelTopology"]["node"]}
    # The signature without a table gets no initializer.
    embed = json.loads((tmp_path / "dist" / "words" / "embed" / "model.json").read_text())
    assert "modelInitializer" not in embed
    assert sorted(embed["signature"]["outputs"]) == ["similarity"]

    expected = savedmodels.run_tf1(tf1_lookup, "serving_default", {"words": WORDS})
    np.testing.assert_array_equal(expected["ids"], [1, -1, 0, 2, -1, 0])
    got = run_tfjs(words, {"words": WORDS})
    np.testing.assert_array_equal(got["ids"], expected["ids"])
    np.testing.assert_allclose(got["scores"], expected["scores"], rtol=1e-6)
    expected_embed = savedmodels.run_tf1(tf1_lookup, "embed", {"vectors": VECTORS})
    got_embed = run_tfjs(tmp_path / "dist" / "words" / "embed", {"vectors": VECTORS})
    np.testing.assert_allclose(got_embed["similarity"], expected_embed["similarity"], rtol=1e-5)

    # tensorflowjs_converter converts this model through its TF1 fallback: same answers.
    converter = Path(sys.executable).parent / "tensorflowjs_converter"
    subprocess.run(
        [str(converter), "--input_format=tf_saved_model", str(tf1_lookup), str(tmp_path / "ref")],
        check=True,
        capture_output=True,
    )
    reference = run_tfjs(tmp_path / "ref", {"words": WORDS})
    np.testing.assert_array_equal(reference["ids"], got["ids"])
    np.testing.assert_allclose(reference["scores"], got["scores"], rtol=1e-6)

    # A TF1 model has a whole-model fingerprint: planned again, it is up to date.
    again = run_cli("plan", "--json", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert {s["action"] for s in json.loads(again.stdout)["signatures"]} == {"up-to-date"}


def test_a_tf1_table_nothing_fills_is_refused(tmp_path: Path) -> None:
    model = export_fresh("tf1_lookup", tmp_path / "src" / "words", initialized=False)
    _project(tmp_path, model)
    built = run_cli("run", "--no-verify", "words:serving_default", cwd=tmp_path)
    assert built.returncode == 1, built.stdout + built.stderr
    assert (
        "✗ words:serving_default failed: lookup table hash_table is not filled when the model "
        "loads (no initializer in main_op, legacy_init_op or the table_initializer "
        "collection), so TensorFlow.js would answer every lookup with the default value; "
        "export the SavedModel with main_op=tf.compat.v1.tables_initializer()"
    ) in built.stdout + built.stderr
    assert not (tmp_path / "dist" / "words" / "serving_default").exists()


def test_freeze_errors_carry_the_cause_tensorflow_logged(tmp_path: Path, tf1_lookup: Path) -> None:
    """Through the TF2 path, grappler says only "check error log"; the cause is in the log."""
    from tfjsbuild.manifest.types import ConverterOptions
    from tfjsbuild.worker import convert
    from tfjsbuild.worker.errors import ConversionError
    from tfjsbuild.worker.saved_model import load_saved_model

    loaded = load_saved_model(tf1_lookup, ("serve",))
    options = ConverterOptions()
    with pytest.raises(ConversionError) as raised:
        convert._convert_function(
            loaded.model.signatures["serving_default"],
            tmp_path / "out",
            options,
            tf_version=loaded.tf_version,
            loaded=loaded,
            expected=loaded.signature_def("serving_default"),
            timings=None,
        )
    assert str(raised.value) == (
        "freezing the graph failed: ValueError: Failed to import metagraph: "
        "Init node key_value_init/LookupTableImportV2 doesn't exist in graph"
    )
