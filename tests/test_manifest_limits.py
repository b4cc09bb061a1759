"""What a manifest may make the loader do: bounded size, alias expansion and nesting.

The hostile cases with their exact messages are data in tests/negative/manifests (alias-bomb,
alias-recursive, nested-too-deep, verify-not-finite); these tests add what data files cannot:
a generated oversized manifest, the limits' exact edges, and a guard against hangs.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tfjsbuild.errors import ManifestError, UsageError
from tfjsbuild.manifest.load import load_manifest
from tfjsbuild.manifest.yaml_positions import MAX_EXPANDED_VALUES, MAX_MANIFEST_BYTES
from tfjsbuild.planning.options import converter_options

CASES = Path(__file__).parent / "negative" / "manifests"
HEAD = "version: 1\nmodels:\n  a:\n    saved_model: models/a\n"


def test_alias_bomb_fails_at_once_with_the_alias_that_crossed_the_limit(tmp_path: Path) -> None:
    """A guard against hangs (50 s and 3.5 GB before), not a speed claim."""
    manifest = tmp_path / "tfjs-build.yaml"
    manifest.write_bytes((CASES / "alias-bomb.yaml").read_bytes())
    start = time.perf_counter()
    with pytest.raises(ManifestError) as raised:
        load_manifest(manifest)
    assert time.perf_counter() - start < 2
    (problem,) = raised.value.problems
    assert (problem.line, problem.column) == (11, 14)
    assert problem.source_line == "      f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]"
    assert problem.message.startswith("alias *e makes the manifest more than 100,000 values")


def test_oversized_manifest_is_refused_before_it_is_parsed(tmp_path: Path) -> None:
    manifest = tmp_path / "tfjs-build.yaml"
    # Valid YAML all through (a long comment): only the size can make it fail.
    padding = MAX_MANIFEST_BYTES - len(HEAD.encode()) - 2
    manifest.write_text(HEAD + "#" * padding + "\n")
    assert manifest.stat().st_size == MAX_MANIFEST_BYTES - 1
    assert load_manifest(manifest).models[0].name == "a"

    manifest.write_text(HEAD + "#" * (padding + 2) + "\n")  # one byte over
    start = time.perf_counter()
    with pytest.raises(ManifestError) as raised:
        load_manifest(manifest)
    assert time.perf_counter() - start < 2
    assert raised.value.format() == (
        f"{manifest}:1:1: the manifest is 1,048,577 bytes, more than the 1,048,576 (1 MiB) "
        "tfjs-build reads: split it into one manifest per folder and build them together "
        "with --all\n"
        "1 problem found; nothing was built."
    )


def test_manifest_of_many_gigabytes_is_not_read_whole(tmp_path: Path) -> None:
    manifest = tmp_path / "tfjs-build.yaml"
    with manifest.open("wb") as file:  # sparse: 64 GiB on disk costs nothing
        file.write(HEAD.encode())
        file.truncate(64 * 1024**3)
    start = time.perf_counter()
    with pytest.raises(ManifestError, match=r"the manifest is 68,719,476,736 bytes"):
        load_manifest(manifest)
    assert time.perf_counter() - start < 2


def test_aliases_expanding_to_exactly_the_limit_are_accepted(tmp_path: Path) -> None:
    """The limit counts every value with aliases expanded; reaching it is fine, one more not."""
    manifest = tmp_path / "tfjs-build.yaml"
    copies = 97

    def write(items: int) -> None:
        # metadata: {k: &k [1 x 999], c0: *k, ..., x: [1 x items]}: each alias copies 1,000.
        manifest.write_text(
            HEAD
            + "    metadata:\n"
            + f"      k: &k [{', '.join(['1'] * 999)}]\n"
            + "".join(f"      c{i}: *k\n" for i in range(copies))
            + f"      x: [{', '.join(['1'] * items)}]\n"
        )

    # The root; version, models, a, saved_model, metadata and x, each a key and its value;
    # k with its list of 999; each alias with its copy of that list.
    values = 1 + 6 * 2 + (1 + 1 + 999) + copies * (1 + 1000)
    write(MAX_EXPANDED_VALUES - values)
    assert load_manifest(manifest).models[0].name == "a"
    write(MAX_EXPANDED_VALUES - values + 1)
    with pytest.raises(ManifestError, match="this value makes the manifest more than 100,000"):
        load_manifest(manifest)


def test_a_thousand_models_sharing_settings_by_merge_keys_are_accepted(tmp_path: Path) -> None:
    text = "version: 1\nmodels:\n"
    text += (
        "  m0:\n    saved_model: models/m0\n    <<: &base\n"
        "      quantization: {float16: ['*']}\n      verify: {atol: 0.01, samples: 2}\n"
    )
    text += "".join(
        f"  m{i}:\n    <<: *base\n    saved_model: models/m{i}\n" for i in range(1, 1000)
    )
    manifest = tmp_path / "tfjs-build.yaml"
    manifest.write_text(text)
    models = load_manifest(manifest).models
    assert len(models) == 1000
    assert models[999].checks.verify.atol == 0.01


def test_python_api_refuses_non_finite_metadata() -> None:
    with pytest.raises(UsageError) as raised:
        converter_options(metadata={"scale": [1.0, float("inf")]})
    assert str(raised.value) == (
        "invalid converter option metadata.scale[1]: inf is not a finite number "
        "(model.json is JSON, which has no NaN or infinity)"
    )
