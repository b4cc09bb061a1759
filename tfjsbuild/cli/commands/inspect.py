"""`tfjs-build inspect PATH`: the signatures of a SavedModel, a Keras file or a Python source
(`module:callable`), with their fingerprints, as text or JSON. Which kind PATH is decides which
API call reads it; nothing here loads a model."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from tfjsbuild import api
from tfjsbuild.cli import options
from tfjsbuild.cli.output import Output
from tfjsbuild.errors import EXIT_OK, SourceError, UsageError
from tfjsbuild.files.artifacts import TensorSpec
from tfjsbuild.manifest.types import (
    KERAS_H5_SUFFIXES,
    KERAS_V3_SUFFIX,
    PYTHON_TARGET,
    KerasSource,
    PythonSource,
)
from tfjsbuild.render.json import command_json
from tfjsbuild.sources.python import python_source_problem
from tfjsbuild.sources.registry import kind_of
from tfjsbuild.sources.saved_model_files import is_saved_model
from tfjsbuild.sources.saved_model_inspection import SavedModelInspection


def add_parser(subparsers: options.Subparsers) -> None:
    parser = subparsers.add_parser(
        "inspect",
        help="list the signatures of a SavedModel, a Keras file or a Python source "
        "(module:callable), with their fingerprints",
        parents=[options.paranoid(), options.json_output()],
    )
    parser.add_argument("path", metavar="PATH")
    parser.set_defaults(handler=inspect)


def inspect(args: argparse.Namespace, out: Output) -> int:
    path: str = args.path
    folder = Path(path)
    if not is_saved_model(folder):
        return _inspect_source(path, json_output=args.json_output, out=out)
    inspection = api.inspect_saved_model(folder, paranoid=args.paranoid)
    if args.json_output:
        print(command_json(inspection.to_json_dict()), file=out.json_out)
    else:
        _print_saved_model(out.console, inspection)
    return EXIT_OK


def _inspect_source(path: str, *, json_output: bool, out: Output) -> int:
    """A Keras file, or `module:callable` (run from the current folder, as a manifest there)."""
    source = _source_at(path)
    try:
        inspection = api.inspect_source(source)
    except SystemExit as exit:  # the user's code called sys.exit(): inspecting it failed
        raise SourceError(
            f"inspecting {path} failed: its code called sys.exit({exit.code!r})"
        ) from None
    if json_output:
        print(command_json(inspection.to_json_dict()), file=out.json_out)
        return EXIT_OK
    console = out.console
    console.print(escape(kind_of(source).inspect_heading(path, inspection.fields_json)))
    console.print(f"  fingerprint {inspection.fingerprint[:16]}")
    for sig in inspection.signatures:
        console.print(f"    signature [bold]{escape(sig.name)}[/bold]")
        if sig.error is not None:
            console.print(f"      [red]{escape(sig.error)}[/red]")
            continue
        _print_tensors(console, sig.inputs, sig.outputs)
    return EXIT_OK


def _source_at(path: str) -> KerasSource | PythonSource:
    file = Path(path)
    if file.is_file() and file.suffix.lower() in (KERAS_V3_SUFFIX, *KERAS_H5_SUFFIXES):
        return KerasSource(file, "graph_model")
    if not file.exists() and PYTHON_TARGET.fullmatch(path):
        source = PythonSource(path, (), Path.cwd())
        problem = python_source_problem(source)
        if problem is not None:
            raise UsageError(problem)
        return source
    raise UsageError(
        f"{path} is not a SavedModel folder (no saved_model.pb), a .keras or .h5 file, or "
        "a Python source module:callable"
    )


def _print_saved_model(console: Console, inspection: SavedModelInspection) -> None:
    # Everything below comes from the model file: escaped, as rich would read `[x]` as markup.
    console.print(f"SavedModel {escape(str(inspection.path))}")
    for meta in inspection.meta_graphs:
        console.print(f"  tags: {escape(', '.join(meta.tags)) or '(none)'}")
        if meta.fingerprint_fallback:
            console.print(f"  fingerprint: whole model ({escape(meta.fingerprint_fallback)})")
        for sig in meta.signatures:
            console.print(f"    signature [bold]{escape(sig.name)}[/bold]")
            _print_tensors(console, sig.inputs, sig.outputs)
            graph = sig.graph
            if graph:
                console.print(f"      fingerprint {graph.digest[:16]}  graph {graph.graph[:16]}")
                for capture in graph.captures:
                    console.print(
                        f"        {capture.kind:<9} {escape(capture.name)}  {capture.digest[:24]}"
                    )


def _print_tensors(
    console: Console, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]
) -> None:
    for side, tensors in (("input", inputs), ("output", outputs)):
        for tensor in tensors:
            console.print(f"      {side:<6} {_tensor_text(tensor)}")


def _tensor_text(tensor: TensorSpec) -> str:
    """`name: dtype [shape]`, escaped for rich (names come from the model)."""
    shape = "unknown rank" if tensor.shape is None else _shape(tensor.shape)
    return escape(f"{tensor.name}: {tensor.dtype} {shape}")


def _shape(shape: Sequence[int | None]) -> str:
    return "[" + ", ".join("?" if dim is None else str(dim) for dim in shape) + "]"
