"""The manifest's typed values: the frozen dataclasses everything past loading works on.

Also the names and defaults a manifest implies (the state folder, the asset index, the
converter's own defaults). Nothing here reads files, parses YAML or validates: values are
built by `manifest.load` from a document the schema and the rules have already accepted.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from tfjsbuild.errors import Problem
from tfjsbuild.files.json_types import JsonObject
from tfjsbuild.files.shared_weights import SHARED_WEIGHTS_DIR

MANIFEST_NAME = "tfjs-build.yaml"
SOURCE_KINDS = ("saved_model", "keras", "python")
QUANTIZATION_DTYPES = ("float16", "uint8", "uint16")
# `quantization: auto`: try these for every weight, smallest first (then none: float32), and
# keep the first that passes verification.
AUTO_QUANTIZATION = "auto"
LAYOUT_PLACEHOLDERS = ("model", "signature")
DEFAULT_OUTPUT_DIR = "dist"
# Beside each manifest: the shared local cache, and one state folder per manifest file.
STATE_ROOT = ".tfjs-build"
# What tfjs-build itself keeps in output_dir: no signature's output may use these names.
INDEX_FILE = "tfjs-build.json"
LOADER_FILE = "tfjs-build.js"  # the app's loader, beside the index
LOADER_TYPES_FILE = "tfjs-build.d.ts"
OUTPUT_STAGING_DIR = f"{STATE_ROOT}-staging"  # when a rename from .tfjs-build is refused
RESERVED_OUTPUT_NAMES = {
    INDEX_FILE: "its asset index",
    LOADER_FILE: "the app's loader",
    LOADER_TYPES_FILE: "the app loader's types",
    OUTPUT_STAGING_DIR: "staging outputs",
    SHARED_WEIGHTS_DIR: "weights shared across signatures",
}
DEFAULT_LAYOUT = "{model}/{signature}"
ALL_SIGNATURES = "*"
PYTHON_TARGET = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_.]*")  # as in the schema

# The converter's own defaults (tensorflowjs_converter 4.22), so an empty manifest means the same.
BUILTIN_OPTIONS: Mapping[str, Any] = MappingProxyType(
    {
        "quantization": {},
        "weight_shard_size_bytes": 4 * 1024 * 1024,
        "strip_debug_ops": True,
        "control_flow_v2": False,
        "skip_op_check": False,
        "use_structured_outputs_names": False,
        "metadata": {},
    }
)
OPTION_KEYS = tuple(BUILTIN_OPTIONS)


@dataclass(frozen=True)
class Location:
    """Where a value was written: used to point plan-time errors at the manifest."""

    file: Path
    line: int
    column: int
    key_path: str


@dataclass(frozen=True)
class ConverterOptions:
    """Effective converter options of one signature (defaults, model and signature merged)."""

    quantization: tuple[tuple[str, tuple[str, ...]], ...] = ()
    # `quantization: auto`: the worker chooses the quantization by verifying candidates.
    auto_quantization: bool = False
    weight_shard_size_bytes: int = 4 * 1024 * 1024
    strip_debug_ops: bool = True
    control_flow_v2: bool = False
    skip_op_check: bool = False
    use_structured_outputs_names: bool = False
    metadata_json: str = "{}"

    @classmethod
    def from_json_dict(cls, raw: Mapping[str, Any]) -> ConverterOptions:
        """From a schema-checked `options` mapping of the manifest (or the API's keywords): the
        one place options become typed. A key left out takes the converter's default."""
        raw = {**BUILTIN_OPTIONS, **raw}
        auto = raw["quantization"] == AUTO_QUANTIZATION
        quantization = tuple(
            (dtype, tuple(globs))
            for dtype, globs in sorted(({} if auto else raw["quantization"]).items())
        )
        return cls(
            quantization=quantization,
            auto_quantization=auto,
            weight_shard_size_bytes=int(raw["weight_shard_size_bytes"]),
            strip_debug_ops=bool(raw["strip_debug_ops"]),
            control_flow_v2=bool(raw["control_flow_v2"]),
            skip_op_check=bool(raw["skip_op_check"]),
            use_structured_outputs_names=bool(raw["use_structured_outputs_names"]),
            metadata_json=json.dumps(raw["metadata"], sort_keys=True, allow_nan=False),
        )

    @property
    def metadata(self) -> JsonObject:
        """The user's metadata for model.json: arbitrary JSON."""
        value: JsonObject = json.loads(self.metadata_json)
        return value

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-able form, used for fingerprints, state and reasons."""
        quantization: str | dict[str, list[str]] = {
            dtype: list(globs) for dtype, globs in self.quantization
        }
        return {
            "quantization": AUTO_QUANTIZATION if self.auto_quantization else quantization,
            "weight_shard_size_bytes": self.weight_shard_size_bytes,
            "strip_debug_ops": self.strip_debug_ops,
            "control_flow_v2": self.control_flow_v2,
            "skip_op_check": self.skip_op_check,
            "use_structured_outputs_names": self.use_structured_outputs_names,
            "metadata": self.metadata,
        }

    def quantization_dtype_map(self) -> dict[str, list[str] | bool]:
        """The converter's `quantization_dtype_map`; a lone "*" is its fallthrough (`True`)."""
        return {
            dtype: True if list(globs) == ["*"] else list(globs)
            for dtype, globs in self.quantization
        }


@dataclass(frozen=True)
class SavedModelSource:
    path: Path
    tags: tuple[str, ...]
    kind: str = "saved_model"


@dataclass(frozen=True)
class BackendCheck:
    """A TensorFlow.js backend a signature is verified on (`verify.backend` or `backends`)."""

    # "auto" (WebAssembly, or CPU where WebAssembly cannot run the model), "cpu", "wasm" or
    # "webgl" (in a headless browser).
    name: str
    atol: float | None = None  # None: `verify.atol`
    rtol: float | None = None  # None: `verify.rtol`
    required: bool = False  # webgl: fail, not skip, where no browser is found


@dataclass(frozen=True)
class VerifySettings:
    """How a signature's conversion is checked against TensorFlow in TensorFlow.js."""

    enabled: bool = True
    samples: int = 3
    atol: float = 1e-4
    rtol: float = 1e-3
    inputs: Path | None = None  # a .npz of real inputs instead of generated ones
    backends: tuple[BackendCheck, ...] = (BackendCheck("auto"),)

    @property
    def strictest_atol(self) -> float:
        """The smallest `atol` of any backend: what quantized weights' steps are checked against."""
        return min(self.atol if check.atol is None else check.atol for check in self.backends)


DEFAULT_TIMEOUT = 3600.0  # seconds; generous: a big model converts and verifies in minutes


@dataclass(frozen=True)
class Checks:
    """What a built signature must pass besides converting: parity, a size budget, a time limit.

    `timeout` bounds the work, not the result: it is no part of any fingerprint.
    """

    verify: VerifySettings = field(default_factory=VerifySettings)
    max_bytes: int | None = None
    timeout: float = DEFAULT_TIMEOUT


KERAS_V3_SUFFIX = ".keras"
KERAS_H5_SUFFIXES = (".h5", ".hdf5")
KERAS_SIGNATURE = "serving_default"  # the one endpoint of a Keras model file


@dataclass(frozen=True)
class KerasSource:
    path: Path
    format: str  # graph_model | layers_model
    kind: str = "keras"

    def as_saved_model(self) -> SavedModelSource | None:
        """A tf.keras SavedModel folder converted to a graph model is a plain SavedModel."""
        if self.container == "saved_model" and self.format == "graph_model":
            return SavedModelSource(self.path, ("serve",))
        return None

    @property
    def container(self) -> str:
        """keras_v3 (a Keras 3 `.keras` file), h5, or saved_model (a tf.keras SavedModel folder)."""
        suffix = self.path.suffix.lower()
        if suffix == KERAS_V3_SUFFIX:
            return "keras_v3"
        if suffix in KERAS_H5_SUFFIXES:
            return "h5"
        return "saved_model"


@dataclass(frozen=True)
class PythonSource:
    target: str  # package.module:callable
    inputs: tuple[str, ...]  # globs relative to root; empty means the module's own file
    root: Path  # the manifest's folder, put on sys.path to import the module
    kind: str = "python"

    @property
    def module(self) -> str:
        return self.target.partition(":")[0]

    @property
    def attribute(self) -> str:
        return self.target.partition(":")[2]

    def module_files(self) -> tuple[Path, ...]:
        """Where the module would be found under root (as a file or a package)."""
        base = self.root.joinpath(*self.module.split("."))
        return (base.with_suffix(".py"), base / "__init__.py")


Source = SavedModelSource | KerasSource | PythonSource


@dataclass(frozen=True)
class SignatureSpec:
    name: str
    options: ConverterOptions
    output: str | None  # explicit per-signature output folder, relative to output_dir
    location: Location
    checks: Checks = field(default_factory=Checks)
    share_weights: bool = False  # weights stored once across signatures (SHARED_WEIGHTS_DIR)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    source: Source
    # None means "*": every signature the source exports, resolved at plan time.
    signatures: tuple[SignatureSpec, ...] | None
    options: ConverterOptions  # model-level effective options, for signatures found by "*"
    location: Location
    source_location: Location
    checks: Checks = field(default_factory=Checks)  # model-level, for signatures found by "*"
    share_weights: bool = False  # model-level, for signatures found by "*"

    def source_paths(self) -> tuple[Path, ...]:
        if isinstance(self.source, SavedModelSource | KerasSource):
            return (self.source.path,)
        return ()


@dataclass(frozen=True)
class CacheSettings:
    """The manifest's `cache:` block (environment and flags may override it)."""

    dir: Path | None = None
    remote: str | None = None
    mode: str = "rw"


@dataclass(frozen=True)
class Manifest:
    path: Path
    root: Path
    output_dir: Path  # absolute
    layout: str
    layout_location: Location
    models: tuple[ModelSpec, ...]
    lines: tuple[str, ...] = field(repr=False, compare=False)
    cache: CacheSettings = field(default_factory=CacheSettings)
    output_dir_location: Location | None = None

    @property
    def tool_dir(self) -> Path:
        """`.tfjs-build/` beside the manifest: the shared local cache and each manifest's state."""
        return self.root / STATE_ROOT

    @property
    def state_dir(self) -> Path:
        """This manifest's own state, lock, worker log and staging (see `state_dir_for`)."""
        return state_dir_for(self.root / self.path.name)

    @property
    def index_path(self) -> Path:
        return self.output_dir / INDEX_FILE

    def output_for(self, model: str, signature: str, override: str | None) -> str:
        """Relative output folder of one signature under `output_dir`, normalised."""
        raw = (
            override
            if override is not None
            else self.layout.format(model=model, signature=signature)
        )
        return posixpath.normpath(raw)

    def problem(self, location: Location, message: str) -> Problem:
        return Problem(
            file=self.path,
            line=location.line,
            column=location.column,
            key_path=location.key_path,
            message=message,
            source_line=line_at(self.lines, location.line),
        )


def state_dir_for(manifest_path: Path) -> Path:
    """`.tfjs-build/manifests/<file name>/`: manifests sharing a folder never share a state (a
    build of one would prune the other's outputs) nor a lock (`run -f a.yaml -f b.yaml`)."""
    return manifest_path.parent / STATE_ROOT / "manifests" / manifest_path.name


def line_at(lines: Sequence[str], line: int) -> str | None:
    """The text of a 1-based line, shown under a problem; None past the end."""
    return lines[line - 1] if 0 < line <= len(lines) else None
