"""Turn a source of any kind into something `convert.py` can convert, signature by signature.

A Keras model becomes a SavedModel (exported by its own Keras into a scratch folder), a Python
source is imported and called, and everything then goes through the same checked conversion as
a `saved_model:` source. Each kind's loader is one module (`load_<kind>.py`), picked here by the
kind's name. Like `convert.py`, this runs only inside worker processes: it imports TensorFlow,
Keras, and the user's code.
"""

from __future__ import annotations

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


def load(source: Source, model_key: str, scratch: Path) -> LoadedSource:
    """Load a source once per worker (while `model_key`, its content digest, stays the same).

    Keras exports go to `scratch`, which the parent removes after the build.
    """
    if model_key in _cache:
        return _cache[model_key]
    if model_key in _failed:
        raise SourceError(str(_failed[model_key]))
    loader = LOADERS[source.kind]
    try:
        loaded = loader.load(source, scratch)
    except SourceError as error:
        if loader.remember_failures:  # user code runs again, as it may differ
            _failed.clear()
            _failed[model_key] = error
        raise
    _cache.clear()  # one model per worker: bounded memory, and the next task is likely the same
    _cache[model_key] = loaded
    return loaded


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
