"""A SavedModel loaded once in the worker, for any number of its signatures to be converted.

Imports TensorFlow and tensorflowjs; it loads and reads the model, and converts nothing
(`convert.py` does).
"""

from __future__ import annotations

import tfjsbuild.worker.environment  # noqa: F401  (first: TensorFlow reads it when imported)

# isort: split
import atexit
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tensorflow as tf
from tensorflowjs.converters import tf_saved_model_conversion_v2 as tfjs_v2


@dataclass
class LoadedSavedModel:
    """A SavedModel loaded once, with its resource initializer frozen once for all signatures."""

    path: Path
    tags: tuple[str, ...]
    model: Any
    tf_version: str
    # What TensorFlow is given: `path`, or a link to it without glob characters (see below).
    load_path: Path | None = None
    _meta_graph: Any = field(default=None, init=False)
    _initializer_function: Any = field(default=None, init=False)
    _initializer_done: bool = field(default=False, init=False)
    _frozen_initializers: dict[bool, Any] = field(default_factory=dict, init=False)

    def signature_def(self, name: str) -> Any:
        """The SignatureDef as saved, to check the converted keys against."""
        if self._meta_graph is None:
            self._meta_graph = tfjs_v2.get_meta_graph_def(
                str(self.load_path or self.path), ",".join(self.tags)
            )
        return self._meta_graph.signature_def.get(name, None)

    @property
    def is_tf1(self) -> bool:
        """Saved without an object graph, as TF1's `SavedModelBuilder` saves."""
        self.signature_def("")
        return not self._meta_graph.object_graph_def.nodes

    def initializer(self, control_flow_v2: bool) -> tuple[Any, Any] | None:
        """(initializer concrete function, its frozen graph) for lookup tables and the like.

        tensorflowjs rebuilds the function per conversion, and doing so mutates the loaded
        model's resources, so on a model loaded once it is built once; it is frozen once per
        `control_flow_v2` setting (two targets of one model may differ in it).
        """
        if not self._initializer_done:
            self._initializer_done = True
            self._initializer_function = tfjs_v2._get_resource_initializer_concrete_function(
                self.model
            )
        function = self._initializer_function
        if function is None:
            return None
        if control_flow_v2 not in self._frozen_initializers:
            self._frozen_initializers[control_flow_v2] = tfjs_v2._freeze_saved_model_v2(
                function, control_flow_v2
            )
        return function, self._frozen_initializers[control_flow_v2]


def load_saved_model(path: Path, tags: tuple[str, ...]) -> LoadedSavedModel:
    load_path = _without_glob_characters(path)
    model = tfjs_v2._load_model(str(load_path), list(tags) if tags else None)
    try:
        tf_version = str(model.tensorflow_version)
    except AttributeError:
        tf_version = tf.__version__
    loaded = LoadedSavedModel(
        path=path, tags=tags, model=model, tf_version=tf_version, load_path=load_path
    )
    # Read now: a Keras export's folder is removed after the build.
    loaded.signature_def("")
    return loaded


def _without_glob_characters(path: Path) -> Path:
    """`path`, or a link to it whose path has no `[`, `*` or `?`.

    TensorFlow reads a checkpoint's `variables/variables` prefix as a glob pattern, so a model
    in a folder named `models[v2]` fails to load ("Unsuccessful TensorSliceReader constructor").
    The link lives in a temporary folder removed when the worker exits.
    """
    if not any(character in str(path) for character in "[]*?"):
        return path
    folder = Path(tempfile.mkdtemp(prefix="tfjs-build-model-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    link = folder / "model"
    link.symlink_to(path.resolve(), target_is_directory=True)
    return link
