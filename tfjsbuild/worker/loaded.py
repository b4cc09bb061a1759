"""What a loaded source offers a worker task, whatever its kind, and the kind's loader.

A kind's loader (`load_saved_model.py`, `load_keras.py`, `load_python.py`) turns the manifest's
source into a `LoadedSource`; `loaders.py` picks it by the kind's name. Like every module under
`worker/`, these run only inside worker processes (or `inspect`): they import TensorFlow.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from tfjsbuild.errors import SignatureError
from tfjsbuild.files.artifacts import GraphModelOutput, TensorSpec
from tfjsbuild.manifest.types import ConverterOptions


class LoadedSource(Protocol):
    def convert(
        self,
        signature: str,
        output_dir: Path,
        options: ConverterOptions,
        timings: dict[str, float] | None,
    ) -> GraphModelOutput: ...

    def functions(self) -> dict[str, Any]:
        """Signature name -> the function a graph model would be converted from."""
        ...

    def input_specs(self, signature: str) -> tuple[TensorSpec, ...]:
        """The inputs TensorFlow.js takes, keyed as in model.json."""
        ...

    def run(self, signature: str, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """TensorFlow's answer for one sample of inputs, keyed as the converted outputs are."""
        ...


def require_signature(signature: str, available: Mapping[str, Any], origin: str) -> None:
    if signature not in available:
        raise SignatureError(
            f"{origin} has no signature '{signature}' (it has: "
            f"{', '.join(sorted(available)) or 'none'})"
        )


def user_error(error: BaseException) -> str:
    """`Type: message`; autograph puts the real error after an "in user code:" preamble."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if len(lines) > 1 and lines[0] == "in user code:":
        return lines[-1]
    return f"{type(error).__name__}: {error}"


@dataclass(frozen=True)
class KindLoader:
    """How a worker loads one kind of source (`sources.registry.KINDS` has the same names)."""

    kind: str
    load: Callable[[Any, Path], LoadedSource]  # (source, scratch folder) -> loaded source
    # (source, scratch) -> the loaded source (it keeps the functions' owner alive) and the
    # functions a graph model build of it would convert, for `inspect`.
    describable: Callable[[Any, Path], tuple[LoadedSource, dict[str, Any]]]
    # A failure to load is remembered for the next task on the same content, unless loading
    # runs user code (which may behave differently the next time).
    remember_failures: bool = True
    # The loaded model may serve a later build: not when it was exported into the build's
    # scratch folder (a Keras model), which the parent deletes after every build.
    outlives_build: bool = True
    # A worker that loaded this kind may serve a later build: not when loading imported the
    # user's code, which stays in `sys.modules` (an edit would go unseen).
    worker_outlives_build: bool = True


def all_functions(
    load: Callable[[Any, Path], LoadedSource],
) -> Callable[[Any, Path], tuple[LoadedSource, dict[str, Any]]]:
    """`describable` for a kind whose every function a build may convert."""

    def describable(source: Any, scratch: Path) -> tuple[LoadedSource, dict[str, Any]]:
        loaded = load(source, scratch)
        return loaded, loaded.functions()

    return describable
