"""A signature converts to the same bytes whichever worker converts it, after whatever else.

Content hashes, the caches and the asset index depend on it; a build converts many signatures
in one worker process, in the order the scheduler gives it (`worker/stable_names.py`).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import read_output, run_cli

pytestmark = pytest.mark.slow

VERIFY = "verify: {enabled: true}"


def test_a_signature_converts_to_the_same_bytes_whatever_its_worker_converted_before(
    architectures: Path, model_store: Callable[..., Path], tmp_path: Path
) -> None:
    """Copies of one model, converted by one worker with another model between them, wrote
    different bytes: TensorFlow numbers functions (an LSTM's loop body and condition) and
    resource handles (a lookup table's) by process-wide counters when it loads and when it
    freezes a model, and marks some ops `_has_manual_control_dependencies` by what was traced
    before."""
    lstm, other, table = (
        architectures / "lstm-keras3",
        architectures / "lstm-keras2",
        model_store("table"),
    )
    models = {  # name: (SavedModel, signature, extra settings)
        "a-lstm": (lstm, "serving_default", []),
        "b-other": (other, "serving_default", []),
        "c-lstm": (lstm, "serving_default", []),
        # Loops kept as functions (While and its body): their names are in the output; Keras 3's
        # renamed by freezing, Keras 2's only by loading. The Keras 2 ones run in TF.js.
        "d-lstm-v2": (lstm, "serving_default", ["control_flow_v2: true"]),
        "e-other-v2": (other, "serving_default", ["control_flow_v2: true", VERIFY]),
        "f-lstm-v2": (lstm, "serving_default", ["control_flow_v2: true"]),
        "g-other-v2": (other, "serving_default", ["control_flow_v2: true", VERIFY]),
        # A table's resource ids pair the model's inputs with its initializer's outputs.
        "h-table": (table, "encode", [VERIFY]),
        "i-other": (other, "serving_default", []),
        "j-table": (table, "encode", [VERIFY]),
        # Its initializer frozen for `score` first (one load, one worker), before `encode`'s graph.
        "k-table": (table, "score, encode", []),
    }
    lines = ["version: 1", "output_dir: web", "defaults:", "  verify: {enabled: false}", "models:"]
    for name, (source, signature, settings) in models.items():
        shutil.copytree(source, tmp_path / name)
        lines += [f"  {name}:", f"    saved_model: {name}", f"    signatures: [{signature}]"]
        lines += [f"    {setting}" for setting in settings]
    (tmp_path / "tfjs-build.yaml").write_text("\n".join(lines) + "\n")
    done = run_cli("run", "--json", "-j", "1", cwd=tmp_path)  # one worker, in plan order
    assert done.returncode == 0, done.stdout + done.stderr
    rows = json.loads(done.stdout)["signatures"]
    assert [(row["model"], row["signature"]) for row in rows] == [
        (name, signature)
        for name, (_, signatures, _) in models.items()
        for signature in signatures.split(", ")
    ]
    assert all(row["status"] == "built" for row in rows)

    def output(
        name: str, signature: str = "serving_default"
    ) -> tuple[dict[str, object], dict[str, bytes]]:
        return read_output(tmp_path / "web" / name / signature)

    assert output("a-lstm") == output("c-lstm")
    assert output("d-lstm-v2") == output("f-lstm-v2")
    assert output("e-other-v2") == output("g-other-v2")
    for name in ("d-lstm-v2", "e-other-v2"):
        library = output(name)[0]["modelTopology"]["library"]  # type: ignore[index]
        assert len(library["function"]) == 4, name  # two loops: a body and a condition each
    assert output("h-table", "encode") == output("j-table", "encode")
    assert output("h-table", "encode") == output("k-table", "encode")
    assert "resourceId" in json.dumps(output("h-table", "encode")[0])


def test_targets_of_one_model_get_the_initializer_frozen_with_their_control_flow_setting(
    model_store: Callable[..., Path],
) -> None:
    """A worker keeps one loaded model for every target of its folder; two targets may differ
    in `control_flow_v2`, and the first one's frozen initializer served both."""
    from tfjsbuild.worker.saved_model import load_saved_model

    loaded = load_saved_model(model_store("table"), ("serve",))
    lowered, kept = loaded.initializer(False), loaded.initializer(True)
    assert lowered is not None and kept is not None
    assert lowered[0] is kept[0]  # built once: building it again mutates the model
    assert lowered[1] is not kept[1]
    assert loaded.initializer(False) == lowered
