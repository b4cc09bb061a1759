"""The `python:` kind: `module:callable` under the manifest's folder, returning the model.

The parent never runs the user's code: a Python source is fingerprinted by its files (its
`inputs` globs, or its module file) and its signatures are the ones the manifest names. Nothing
here imports the module, TensorFlow or Keras; the worker's `load_python.py` does.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tfjsbuild.files.json_types import JsonObject
from tfjsbuild.manifest.types import PythonSource
from tfjsbuild.sources.base import SignatureLister, SourceCache, SourceEntry, WatchPaths
from tfjsbuild.sources.digest import StatCache, sha256_text
from tfjsbuild.sources.keras import KERAS_DISTRIBUTIONS


def python_input_files(source: PythonSource) -> list[Path]:
    """The files a Python source's output depends on: its `inputs` globs, or its module file."""
    if not source.inputs:
        return [f for f in source.module_files() if f.is_file()][:1]
    found = {p for pattern in source.inputs for p in source.root.glob(pattern) if p.is_file()}
    return sorted(found)


def python_source_problem(source: PythonSource) -> str | None:
    """Why a Python source cannot be fingerprinted, before any of its code runs."""
    if not source.inputs:
        if any(f.is_file() for f in source.module_files()):
            return None
        looked = " and ".join(f.relative_to(source.root).as_posix() for f in source.module_files())
        return (
            f"module '{source.module}' is not in {source.root} (looked for {looked}); put it "
            "there, or list the files the model is built from in `inputs:`"
        )
    for pattern in source.inputs:
        if not any(p.is_file() for p in source.root.glob(pattern)):
            return f"inputs pattern '{pattern}' matches no files in {source.root}"
    return None


class PythonKind:
    name = "python"
    tool_distributions: tuple[str, ...] = KERAS_DISTRIBUTIONS

    def origin(self, source: PythonSource) -> str:
        return source.target

    def problem(self, source: PythonSource, root: Path) -> str | None:
        return python_source_problem(source)

    def signature_names(self, source: PythonSource, lister: SignatureLister) -> None:
        # The planner does not run user code: the manifest names the signatures (a rule).
        return None

    def digest(self, source: PythonSource, stat_cache: StatCache, *, paranoid: bool) -> str:
        lines = [
            f"{p.relative_to(source.root).as_posix()}\0{stat_cache.digest(p)}"
            for p in python_input_files(source)
        ]
        return sha256_text(f"python:{source.target}\n" + "\n".join(lines))

    def signature_sources(self, source: PythonSource, cache: SourceCache) -> dict[str, SourceEntry]:
        return {"*": SourceEntry(cache.digest(source), "python-content")}

    def tags(self, source: PythonSource) -> tuple[str, ...]:
        return ()

    def output_format(self, source: PythonSource) -> str:
        return "graph_model"

    def watch_paths(self, source: PythonSource) -> WatchPaths:
        if source.inputs:
            return WatchPaths(globs=tuple((source.root, pattern) for pattern in source.inputs))
        return WatchPaths(paths=source.module_files())

    def incomplete(self, source: PythonSource) -> str | None:
        return None  # code is read whole when imported

    def user_frame(self, source: PythonSource, frames: Iterable[tuple[str, int]]) -> str:
        for filename, line in frames:
            path = Path(filename)
            if path.is_relative_to(source.root) and "site-packages" not in path.parts:
                return f" (at {path.relative_to(source.root).as_posix()}:{line})"
        return ""

    def inspect_json(self, source: PythonSource) -> JsonObject:
        return {"python": source.target, "inputs": _input_names(source)}

    def inspect_heading(self, shown: str, source: PythonSource) -> str:
        return f"Python source {shown} (inputs: {', '.join(_input_names(source))})"


def _input_names(source: PythonSource) -> list[str]:
    """The source's input files, relative to its folder, as inspect shows them."""
    return [f.relative_to(source.root).as_posix() for f in python_input_files(source)]


PYTHON = PythonKind()
