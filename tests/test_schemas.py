from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from tfjsbuild.manifest.load import load_manifest

REPO = Path(__file__).parent.parent
SCHEMAS = sorted(p.name for p in (REPO / "schemas").glob("*.json"))


def test_every_schema_is_shipped() -> None:
    assert SCHEMAS == [
        "asset-index.schema.json",
        "build-report.schema.json",
        "tfjs-build.schema.json",
    ]


@pytest.mark.parametrize("name", SCHEMAS)
def test_packaged_copy_is_identical(name: str) -> None:
    canonical = (REPO / "schemas" / name).read_bytes()
    packaged = (REPO / "tfjsbuild" / "schemas" / name).read_bytes()
    assert packaged == canonical, f"run: cp schemas/{name} tfjsbuild/schemas/{name}"


@pytest.mark.parametrize("name", SCHEMAS)
def test_schema_is_valid_draft_2020_12(name: str) -> None:
    schema = json.loads((REPO / "schemas" / name).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_example_manifest_matches_the_schema() -> None:
    schema = json.loads((REPO / "schemas" / "tfjs-build.schema.json").read_text())
    example = yaml.safe_load((REPO / "examples" / "tfjs-build.yaml").read_text())
    jsonschema.Draft202012Validator(schema).validate(example)
    assert load_manifest(REPO / "examples" / "tfjs-build.yaml").models[0].name == "classifier"


def test_issue_example_manifest_is_accepted(tmp_path: Path) -> None:
    """The format as documented: every source kind and option name."""
    path = tmp_path / "tfjs-build.yaml"
    path.write_text(
        """
version: 1
output_dir: web/models
layout: "{model}/{signature}"
defaults:
  quantization:
    float16: ["*"]
  weight_shard_size_bytes: 4194304
  strip_debug_ops: true
  control_flow_v2: false
  skip_op_check: false
  use_structured_outputs_names: false
  metadata: {}
models:
  mobilenet:
    saved_model: models/mobilenet
    tags: [serve]
    signatures:
      features: {}
      logits:
        quantization: {uint8: ["*"]}
      probs:
        output: mobilenet-probs
  encoder:
    keras: models/encoder.keras
    format: graph_model
  tokenizer:
    python: mypkg.export:build
    inputs: ["mypkg/**/*.py"]
    signatures: [encode, decode]
"""
    )
    manifest = load_manifest(path)
    assert [m.source.kind for m in manifest.models] == ["saved_model", "keras", "python"]
