"""Explicit quantization writes the bytes tensorflowjs writes itself.

A signature with `quantization` is converted at float32 and its weights then written quantized
by `worker/quantize.py`, not by tensorflowjs's writer during the conversion. Both ways must
give the same output, for graph and layers models, each setting and small shards: compared
with tfjs-build's conversion when tensorflowjs quantizes while writing (the path before
`quantization: auto`), and with `tensorflowjs_converter`'s own output (its `convert`, in this
process: the binary runs the same function and takes seconds to start).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import stored_dtypes
from tfjsbuild.manifest.types import ConverterOptions, KerasSource, SavedModelSource

pytestmark = pytest.mark.slow

# Small enough that every output has several shards, split inside weights.
SHARD_SIZE = 100
# Each float16 glob matches one source's first layer: the graph model's backbone (its MatMul;
# the head is MatMul_1) and the layers model's `hidden` layer.
FIRST_LAYERS = ["*/MatMul/*", "hidden/*"]
SETTINGS = {  # name: (the manifest's quantization, the same as tensorflowjs_converter flags)
    "uint8": ({"uint8": ["*"]}, ["--quantize_uint8"]),
    "uint16": ({"uint16": ["*"]}, ["--quantize_uint16"]),
    "float16": ({"float16": ["*"]}, ["--quantize_float16"]),
    "mixed": (
        {"float16": FIRST_LAYERS, "uint8": ["*"]},
        [f"--quantize_float16={','.join(FIRST_LAYERS)}", "--quantize_uint8"],
    ),
}
SOURCES = ["graph", "layers"]


def make_source(kind: str, model_store: Callable[..., Path]) -> SavedModelSource | KerasSource:
    if kind == "graph":
        return SavedModelSource(model_store("wide_backbone"), ("serve",))
    return KerasSource(model_store("keras_h5"), "layers_model")


def options(setting: str) -> ConverterOptions:
    quantization, _ = SETTINGS[setting]
    return ConverterOptions.from_json_dict(
        {"quantization": quantization, "weight_shard_size_bytes": SHARD_SIZE}
    )


def assert_same_output(written: Path, expected: Path) -> None:
    """The same files; model.json the same JSON (written canonically, so -0.0 is not 0.0);
    every weight shard the same bytes."""
    assert sorted(p.name for p in written.iterdir()) == sorted(p.name for p in expected.iterdir())
    model: dict[str, Any] = json.loads((written / "model.json").read_text())
    expected_model: dict[str, Any] = json.loads((expected / "model.json").read_text())
    assert model == expected_model
    assert json.dumps(model, sort_keys=True) == json.dumps(expected_model, sort_keys=True)
    shards = [path for group in model["weightsManifest"] for path in group["paths"]]
    assert len(shards) > 1
    for shard in shards:
        assert (written / shard).read_bytes() == (expected / shard).read_bytes(), shard


def assert_quantized_as(output: Path, setting: str) -> None:
    """Not two unquantized outputs compared: the weights are stored as the setting says."""
    assert stored_dtypes(output) == ({"float16", "uint8"} if setting == "mixed" else {setting})


@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize("kind", SOURCES)
def test_quantized_after_converting_is_what_tensorflowjs_writes_while_converting(
    kind: str, setting: str, model_store: Callable[..., Path], tmp_path: Path
) -> None:
    """A build's path (float32, then `quantize.py`) against the same conversion with
    tensorflowjs's writer given the quantization (`write.py`, `layers.py`)."""
    from tfjsbuild.worker import loaders
    from tfjsbuild.worker.quantize import convert_quantized

    source = make_source(kind, model_store)
    loaded = loaders.load(source, str(source.path), tmp_path / "scratch")
    built, reference = tmp_path / "built", tmp_path / "quantized-while-writing"
    timings: dict[str, float] = {}
    convert_quantized(
        loaded, "serving_default", built, options(setting), None, verifying=False, timings=timings
    )
    assert "quantize" in timings  # float32 first, then quantize.py: not the reference's path
    loaded.convert("serving_default", reference, options(setting), None)
    assert_quantized_as(reference, setting)
    assert_same_output(built, reference)


@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize("kind", SOURCES)
def test_quantized_after_converting_is_what_tensorflowjs_converter_writes(
    kind: str, setting: str, model_store: Callable[..., Path], tmp_path: Path
) -> None:
    """`quantize.py` quantizing tensorflowjs_converter's float32 output against
    tensorflowjs_converter given the quantization flags: no tfjs-build conversion code."""
    from tensorflowjs.converters import converter

    from tfjsbuild.worker.quantize import Float32Output

    source = make_source(kind, model_store)
    input_format = "tf_saved_model" if kind == "graph" else "keras"
    arguments = [f"--input_format={input_format}", f"--weight_shard_size_bytes={SHARD_SIZE}"]
    float32, reference = tmp_path / "float32", tmp_path / "tensorflowjs"
    converter.convert([*arguments, str(source.path), str(float32)])
    converter.convert([*arguments, str(source.path), str(reference), *SETTINGS[setting][1]])
    assert_quantized_as(reference, setting)
    quantized = tmp_path / "quantized"
    Float32Output.read(float32).write_quantized(
        quantized, options(setting).quantization_dtype_map(), SHARD_SIZE
    )
    assert_same_output(quantized, reference)
