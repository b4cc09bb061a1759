"""A signature converts to the same bytes whichever worker converts it, after whatever else.

Content hashes, the caches and the asset index depend on it; a build converts many signatures
in one worker process, in the order the scheduler gives it (`worker/stable_names.py`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import run_cli

pytestmark = pytest.mark.slow


def read_output(folder: Path) -> tuple[dict[str, object], dict[str, bytes]]:
    files = {p.name: p.read_bytes() for p in folder.iterdir() if p.name != "model.json"}
    return json.loads((folder / "model.json").read_text()), files


def test_a_signature_converts_to_the_same_bytes_whatever_its_worker_converted_before(
    architectures: Path, tmp_path: Path
) -> None:
    """Copies of one LSTM, converted by one worker with another model between them, wrote
    different bytes: TensorFlow numbers functions (the loop's body and condition) by a
    process-wide counter when it loads and when it freezes a model, and marks some ops
    `_has_manual_control_dependencies` by what was traced before."""
    models = {
        "a-lstm": "lstm-keras3",
        "b-other": "lstm-keras2",
        "c-lstm": "lstm-keras3",
        # Loops kept as functions (While and its body): their names are in the output; Keras 3's
        # renamed by freezing, Keras 2's only by loading. The Keras 2 ones run in TF.js.
        "d-lstm-v2": "lstm-keras3",
        "e-other-v2": "lstm-keras2",
        "f-lstm-v2": "lstm-keras3",
        "g-other-v2": "lstm-keras2",
    }
    lines = ["version: 1", "output_dir: web", "defaults:", "  verify: {enabled: false}", "models:"]
    for name, model in models.items():
        shutil.copytree(architectures / model, tmp_path / name)
        lines += [f"  {name}:", f"    saved_model: {name}", "    signatures: [serving_default]"]
        if name.endswith("-v2"):
            lines.append("    control_flow_v2: true")
        if name.endswith("other-v2"):
            lines.append("    verify: {enabled: true}")
    (tmp_path / "tfjs-build.yaml").write_text("\n".join(lines) + "\n")
    done = run_cli("run", "--json", "-j", "1", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = json.loads(done.stdout)["signatures"]
    assert [row["model"] for row in rows] == list(models)  # in this order, in one worker

    def output(name: str) -> tuple[dict[str, object], dict[str, bytes]]:
        return read_output(tmp_path / "web" / name / "serving_default")

    assert output("a-lstm") == output("c-lstm")
    assert output("d-lstm-v2") == output("f-lstm-v2")
    assert output("e-other-v2") == output("g-other-v2")
    for name in ("d-lstm-v2", "e-other-v2"):
        library = output(name)[0]["modelTopology"]["library"]  # type: ignore[index]
        assert len(library["function"]) == 4, name  # two loops: a body and a condition each
