"""Turn a source of any kind into something `convert.py` can convert, signature by signature.

A Keras model becomes a SavedModel (exported by its own Keras into a scratch folder), a Python
source is imported and called, and everything then goes through the same checked conversion as
a `saved_model:` source. Each kind's loader is one module (`load_<kind>.py`), picked here by the
kind's name. Like `convert.py`, this runs only inside worker processes: it imports TensorFlow,
Keras, and the user's code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tfjsbuild.errors import SourceError
from tfjsbuild.manifest.types import Source
from tfjsbuild.sources.description import TracedSignature
from tfjsbuild.worker import load_keras, load_python, load_saved_model
from tfjsbuild.worker.functions import concrete_function, function_tensors
from tfjsbuild.worker.loaded import KindLoader, LoadedSource, user_error

LOADERS: dict[str, KindLoader] = {
    loader.kind: loader
    for loader in (load_saved_model.LOADER, load_keras.LOADER, load_python.LOADER)
}

_cache: dict[str, LoadedSource] = {}
# A model file that failed to load fails the same way for its next signature: not loaded again.
_failed: dict[str, SourceError] = {}


@dataclass
class _Kept:
    """Which build `_cache` and `_failed` are from, and what may serve a later one."""

    build: str | None = None
    model_outlives_build: bool = True  # the cached model's files outlive the build
    worker_outlives_build: bool = True  # no source's loading imported user code


_kept = _Kept()


def load(source: Source, model_key: str, scratch: Path, build: str | None = None) -> LoadedSource:
    """Load a source once per worker (while `model_key`, its content digest, stays the same).

    Keras exports go to `scratch`, which the parent removes after the build; so the first task
    of another `build` forgets such a model, and every failure remembered.
    """
    _begin(build)
    if model_key in _cache:
        return _cache[model_key]
    if model_key in _failed:
        raise SourceError(str(_failed[model_key]))
    loader = LOADERS[source.kind]
    if not loader.worker_outlives_build:
        _kept.worker_outlives_build = False  # a failed load may have imported the code too
    try:
        loaded = loader.load(source, scratch)
    except SourceError as error:
        if loader.remember_failures:  # user code runs again, as it may differ
            _failed.clear()
            _failed[model_key] = error
        raise
    _cache.clear()  # one model per worker: bounded memory, and the next task is likely the same
    _cache[model_key] = loaded
    _kept.model_outlives_build = loader.outlives_build
    return loaded


def _begin(build: str | None) -> None:
    """A task of `build`: what only an earlier build could use is forgotten."""
    if build == _kept.build:
        return
    _kept.build = build
    _failed.clear()  # a failure is its build's: a later build tries again
    if not _kept.model_outlives_build:
        _cache.clear()  # exported into the earlier build's scratch folder, deleted since
        _kept.model_outlives_build = True


def worker_outlives_build() -> bool:
    """Whether this process may serve a later build: no load imported the user's code, which
    stays in `sys.modules`, so an edit to it would go unseen."""
    return _kept.worker_outlives_build


def describe(source: Source, scratch: Path) -> tuple[TracedSignature, ...]:
    """Each signature a graph model build would convert, with its input and output tensors."""
    # `_loaded` keeps the functions' owner alive while they are traced.
    _loaded, functions = LOADERS[source.kind].describable(source, scratch)
    described: list[TracedSignature] = []
    for name, function in sorted(functions.items()):
        try:
            concrete = concrete_function(function)
        except Exception as error:  # ConversionError, or the user's code while tracing
            described.append(TracedSignature(name, error=user_error(error)))
            continue
        inputs, outputs = function_tensors(concrete)
        described.append(TracedSignature(name, inputs, outputs))
    return tuple(described)
