"""Load `tfjs-build.yaml`: YAML with positions, JSON Schema, cross-field rules, frozen values out.

Everything past `load_manifest` works on the dataclasses defined here; no raw dicts travel on.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import posixpath
import re
import string
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import yaml

from tfjsbuild.errors import ManifestError, Problem, UsageError

if TYPE_CHECKING:
    from jsonschema import ValidationError

MANIFEST_NAME = "tfjs-build.yaml"
SCHEMA_NAME = "tfjs-build.schema.json"
SOURCE_KINDS = ("saved_model", "keras", "python")
QUANTIZATION_DTYPES = ("float16", "uint8", "uint16")
LAYOUT_PLACEHOLDERS = ("model", "signature")
DEFAULT_OUTPUT_DIR = "dist"
# Beside each manifest: the shared local cache, and one state folder per manifest file.
STATE_ROOT = ".tfjs-build"
# What tfjs-build itself keeps in output_dir: no signature's output may use these names.
INDEX_FILE = "tfjs-build.json"
OUTPUT_STAGING_DIR = ".tfjs-build-staging"  # when a rename from .tfjs-build is refused
RESERVED_OUTPUT_NAMES = {INDEX_FILE: "its asset index", OUTPUT_STAGING_DIR: "staging outputs"}
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

KeyPath = tuple[str | int, ...]


# --------------------------------------------------------------------------- typed values


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
    weight_shard_size_bytes: int = 4 * 1024 * 1024
    strip_debug_ops: bool = True
    control_flow_v2: bool = False
    skip_op_check: bool = False
    use_structured_outputs_names: bool = False
    metadata_json: str = "{}"

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> ConverterOptions:
        quantization = tuple(
            (dtype, tuple(globs)) for dtype, globs in sorted(raw["quantization"].items())
        )
        return cls(
            quantization=quantization,
            weight_shard_size_bytes=int(raw["weight_shard_size_bytes"]),
            strip_debug_ops=bool(raw["strip_debug_ops"]),
            control_flow_v2=bool(raw["control_flow_v2"]),
            skip_op_check=bool(raw["skip_op_check"]),
            use_structured_outputs_names=bool(raw["use_structured_outputs_names"]),
            metadata_json=json.dumps(raw["metadata"], sort_keys=True, allow_nan=False),
        )

    @property
    def metadata(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.metadata_json)
        return value

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-able form, used for fingerprints, state and reasons."""
        return {
            "quantization": {dtype: list(globs) for dtype, globs in self.quantization},
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
class VerifySettings:
    """How a signature's conversion is checked against TensorFlow in TensorFlow.js."""

    enabled: bool = True
    samples: int = 3
    atol: float = 1e-4
    rtol: float = 1e-3
    inputs: Path | None = None  # a .npz of real inputs instead of generated ones

    def as_dict(self, root: Path) -> dict[str, Any]:
        """What a verification depends on (nothing when disabled), for fingerprints and reasons."""
        if not self.enabled:
            return {}
        inputs = None if self.inputs is None else posixpath.relpath(self.inputs, root)
        return {"samples": self.samples, "atol": self.atol, "rtol": self.rtol, "inputs": inputs}


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
            source_line=_line_at(self.lines, location.line),
        )


def state_dir_for(manifest_path: Path) -> Path:
    """`.tfjs-build/manifests/<file name>/`: manifests sharing a folder never share a state (a
    build of one would prune the other's outputs) nor a lock (`run -f a.yaml -f b.yaml`)."""
    return manifest_path.parent / STATE_ROOT / "manifests" / manifest_path.name


# --------------------------------------------------------------------------- YAML with positions


_PLAIN_TAGS = ("tag:yaml.org,2002:map", "tag:yaml.org,2002:seq")
_MERGE_TAG = "tag:yaml.org,2002:merge"

# What a manifest may make the loader do. A few hundred bytes of nested aliases (a "billion
# laughs") expand to billions of values: 300 bytes took 50 s and 3.5 GB before these limits.
# A 1,000-model manifest sharing settings by `<<: *base` is ~94 KB and ~27,000 values.
MAX_MANIFEST_BYTES = 1024 * 1024
MAX_EXPANDED_VALUES = 100_000
MAX_NESTING = 100  # the schema needs 6 levels; metadata a few more; Python recursion ~300


class _LimitExceeded(yaml.MarkedYAMLError):
    """A document the loader refuses to expand; located at the alias or value that crossed."""


class _LimitedLoader(yaml.SafeLoader):
    """SafeLoader that counts, while composing (before anything is constructed), how many
    values the document holds with every alias expanded where it is used, and refuses it
    past `MAX_EXPANDED_VALUES`, nested past `MAX_NESTING`, or containing itself."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.expanded = 0
        self.depth = 0
        self.sizes: dict[int, int] = {}  # id(node) -> values in it, aliases expanded

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event: yaml.Event = self.peek_event()  # type: ignore[no-untyped-call]  # untyped stub
        if isinstance(event, yaml.AliasEvent):
            node = super().compose_node(parent, index)
            size = self.sizes.get(id(node)) if node is not None else 1
            if size is None:  # its anchor's value is still being composed
                raise self._refuse(
                    event,
                    f"alias *{event.anchor} is inside the value it names, which would make "
                    "the manifest infinite: use an alias only after the value it names ends",
                )
            self._count(event, size, f"alias *{event.anchor}")
            return node
        self.depth += 1
        try:
            if self.depth > MAX_NESTING:
                raise self._refuse(
                    event,
                    f"values nested more than {MAX_NESTING} levels deep: a manifest needs "
                    "a handful",
                )
            node = super().compose_node(parent, index)
        finally:
            self.depth -= 1
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [child for pair in node.value for child in pair]
        size = 1 + sum(self.sizes[id(child)] for child in children)
        if node is not None:
            self.sizes[id(node)] = size
        self._count(event, 1, "this value")
        return node

    def _count(self, event: yaml.Event, values: int, what: str) -> None:
        self.expanded += values
        if self.expanded > MAX_EXPANDED_VALUES:
            raise self._refuse(
                event,
                f"{what} makes the manifest more than {MAX_EXPANDED_VALUES:,} values with "
                "its aliases expanded (each alias is a full copy of what it names): "
                "write shared settings once under `defaults:` instead",
            )

    @staticmethod
    def _refuse(event: yaml.Event, message: str) -> _LimitExceeded:
        mark: Any = event.start_mark  # the stubs have two Mark classes for one thing
        return _LimitExceeded(problem=message, problem_mark=mark)


@dataclass(frozen=True)
class _Mark:
    line: int
    column: int


class _PositionedDocument:
    """A YAML document as plain data plus the position of every key and value."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.lines = tuple(text.splitlines())
        self.key_marks: dict[KeyPath, _Mark] = {}
        self.merged_pairs: dict[int, int] = {}  # id(mapping node) -> pairs merged in by `<<`
        self.value_marks: dict[KeyPath, _Mark] = {}
        self.problems: list[Problem] = []
        self.data: Any = None
        self._load(text)

    def _load(self, text: str) -> None:
        loader = _LimitedLoader(text)
        try:
            node = loader.get_single_node()
            if node is not None:
                self.value_marks[()] = _mark(node)
                self.data = self._construct(loader, node, ())
        except _LimitExceeded as error:
            mark = error.problem_mark
            line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
            self.problems.append(self.problem(line, column, "", str(error.problem)))
        except yaml.MarkedYAMLError as error:
            mark = error.problem_mark or error.context_mark
            line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
            message = " ".join(filter(None, [error.context, error.problem])) or str(error)
            self.problems.append(self.problem(line, column, "", f"invalid YAML: {message}"))
        except yaml.YAMLError as error:
            self.problems.append(self.problem(1, 1, "", f"invalid YAML: {error}"))
        finally:
            loader.dispose()

    def _construct(self, loader: yaml.SafeLoader, node: yaml.Node, path: KeyPath) -> Any:
        if isinstance(node, yaml.MappingNode | yaml.SequenceNode) and node.tag not in _PLAIN_TAGS:
            # Scalars go through SafeLoader, which refuses unknown tags; collections are built
            # here, so refuse object-constructing tags (!!python/object...) the same way.
            self.problems.append(
                self.problem_at(
                    _mark(node), path, f"unsupported YAML tag {node.tag}: use plain values"
                )
            )
            return None
        if isinstance(node, yaml.MappingNode):
            if id(node) not in self.merged_pairs:  # an alias constructs the same node again
                explicit = sum(1 for key_node, _ in node.value if key_node.tag != _MERGE_TAG)
                loader.flatten_mapping(node)  # resolves `<<` merge keys like SafeLoader does
                self.merged_pairs[id(node)] = len(node.value) - explicit
            # flatten_mapping puts the merged pairs first: a key given here overrides a merged
            # one, and a later merge source an earlier one, as YAML says; only keys written
            # twice in this mapping itself are duplicates.
            merged = self.merged_pairs[id(node)]
            result: dict[str, Any] = {}
            explicit_keys: set[KeyPath] = set()
            for index, (key_node, value_node) in enumerate(node.value):
                key = loader.construct_object(key_node, deep=True)
                if not isinstance(key, str):
                    self.problems.append(
                        self.problem_at(_mark(key_node), path, f"keys must be text, got {key!r}")
                    )
                    continue
                child = (*path, key)
                if key in result and child not in explicit_keys:
                    if index < merged:
                        continue  # merged twice: the first source listed wins
                    del result[key]  # a merged value, overridden by the key written here
                if key in result:
                    first = self.key_marks[child]
                    self.problems.append(
                        self.problem_at(
                            _mark(key_node),
                            child,
                            f"duplicate key '{key}' (first defined on line {first.line}); "
                            "YAML keeps only one of them: remove or rename the other",
                        )
                    )
                    continue
                self.key_marks[child] = _mark(key_node)
                self.value_marks[child] = _mark(value_node)
                if index >= merged:
                    explicit_keys.add(child)
                result[key] = self._construct(loader, value_node, child)
            return result
        if isinstance(node, yaml.SequenceNode):
            items = []
            for index, item_node in enumerate(node.value):
                child = (*path, index)
                self.value_marks[child] = _mark(item_node)
                items.append(self._construct(loader, item_node, child))
            return items
        return loader.construct_object(node, deep=True)

    def problem(self, line: int, column: int, key_path: str, message: str) -> Problem:
        return Problem(self.path, line, column, key_path, message, _line_at(self.lines, line))

    def problem_at(self, mark: _Mark, path: KeyPath, message: str) -> Problem:
        return self.problem(mark.line, mark.column, format_key_path(path), message)

    def key_mark(self, path: KeyPath) -> _Mark:
        """Position of the key that names `path` (the value's, for list items and the root)."""
        while path:
            if path in self.key_marks:
                return self.key_marks[path]
            if path in self.value_marks:
                return self.value_marks[path]
            path = path[:-1]
        return self.value_marks.get((), _Mark(1, 1))

    def value_mark(self, path: KeyPath) -> _Mark:
        while path:
            if path in self.value_marks:
                return self.value_marks[path]
            path = path[:-1]
        return self.value_marks.get((), _Mark(1, 1))

    def location(self, path: KeyPath, *, key: bool = True) -> Location:
        mark = self.key_mark(path) if key else self.value_mark(path)
        return Location(self.path, mark.line, mark.column, format_key_path(path))


def _mark(node: yaml.Node) -> _Mark:
    return _Mark(node.start_mark.line + 1, node.start_mark.column + 1)


def _line_at(lines: Sequence[str], line: int) -> str | None:
    return lines[line - 1] if 0 < line <= len(lines) else None


def format_key_path(path: Iterable[str | int]) -> str:
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text


# --------------------------------------------------------------------------- schema


def schema_text() -> str:
    """The manifest JSON Schema as shipped inside the package."""
    return resources.files("tfjsbuild").joinpath("schemas", SCHEMA_NAME).read_text("utf-8")


@cache
def manifest_schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(schema_text())
    return schema


_TYPE_NAMES = {
    "object": "a mapping",
    "array": "a list",
    "string": "text",
    "integer": "a whole number",
    "number": "a number",
    "boolean": "true or false",
    "null": "nothing",
}


def _describe_value(value: Any) -> str:
    if isinstance(value, bool):
        return f"{str(value).lower()} (true or false)"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing (null)"
    if isinstance(value, str):
        return f"text {value!r}"
    return f"{type(value).__name__} {value!r}"


def _did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    matches = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return matches[0] if matches else None


def _schema_problems(doc: _PositionedDocument) -> Iterator[Problem]:
    import jsonschema  # here: a manifest checked before is not checked again (see below)

    validator = jsonschema.Draft202012Validator(manifest_schema())
    for error in validator.iter_errors(doc.data):
        yield from _describe_error(doc, error)


def _describe_error(doc: _PositionedDocument, error: ValidationError) -> Iterator[Problem]:
    path: KeyPath = tuple(error.absolute_path)
    kind = error.validator
    schema = error.schema if isinstance(error.schema, dict) else {}
    instance = error.instance

    if kind in ("oneOf", "anyOf") and error.context:
        branch = _matching_branch(error)
        if branch is not None:
            for sub in branch:
                yield from _describe_error(doc, sub)
            return
        expected = str(schema.get("description", "a value matching the schema")).rstrip(".")
        yield doc.problem_at(
            doc.value_mark(path), path, f"expected {expected}; got {_describe_value(instance)}"
        )
        return

    if kind == "pattern" and "propertyNames" in error.absolute_schema_path:
        name_path: KeyPath = (*path, str(instance))
        yield doc.problem_at(
            doc.key_mark(name_path),
            name_path,
            f"invalid model name '{instance}': use lowercase letters, digits, '-' and '_', "
            "starting with a letter or digit",
        )
        return

    if kind == "additionalProperties" and isinstance(instance, dict):
        allowed = list(schema.get("properties", {}))
        for key in instance:
            if key in allowed:
                continue
            key_path = (*path, key)
            if path and path[-1] == "quantization":
                message = f"unknown quantization dtype '{key}'; use one of {', '.join(QUANTIZATION_DTYPES)}"
            else:
                message = f"unknown key '{key}'"
            suggestion = _did_you_mean(key, allowed)
            if suggestion:
                message += f"; did you mean '{suggestion}'?"
            elif not (path and path[-1] == "quantization"):
                message += f"; allowed here: {', '.join(allowed)}"
            yield doc.problem_at(doc.key_mark(key_path), key_path, message)
        return

    if kind == "required" and isinstance(instance, dict):
        for key in schema.get("required", []):
            if key not in instance:
                yield doc.problem_at(doc.key_mark(path), path, f"missing required key '{key}'")
        return

    mark = doc.value_mark(path)
    if kind == "type":
        expected_types = schema.get("type")
        names = [expected_types] if isinstance(expected_types, str) else list(expected_types or [])
        expected = " or ".join(_TYPE_NAMES.get(name, name) for name in names if name != "null")
        message = f"expected {expected}, got {_describe_value(instance)}"
    elif kind == "const" and path == ("version",):
        message = f"unsupported manifest version {instance!r}: this tfjs-build reads version 1"
    elif kind == "const":
        message = f"must be {schema['const']!r}, got {_describe_value(instance)}"
    elif kind == "enum":
        choices = [str(choice) for choice in schema.get("enum", [])]
        message = f"must be one of {', '.join(choices)}; got {_describe_value(instance)}"
        suggestion = _did_you_mean(str(instance), choices)
        if suggestion:
            message += f"; did you mean '{suggestion}'?"
    elif kind == "minimum":
        message = f"must be at least {schema['minimum']}, got {instance!r}"
    elif kind == "exclusiveMinimum":
        message = f"must be more than {schema['exclusiveMinimum']}, got {instance!r}"
    elif kind == "maximum":
        message = f"must be at most {schema['maximum']}, got {instance!r}"
    elif kind in ("minLength", "minItems", "minProperties"):
        message = "must not be empty"
        if path == ("models",):
            message = "declare at least one model"
    elif kind == "uniqueItems":
        message = "lists the same name twice"
    elif kind == "pattern" and path and path[-1] == "python":
        message = f"expected 'module:callable' (e.g. mypkg.export:build), got {instance!r}"
    elif kind == "pattern" and path[-2:] == ("verify", "inputs"):
        message = (
            f"expected a .npz file (numpy.savez, arrays keyed by input name), got {instance!r}"
        )
    else:
        message = error.message
    yield doc.problem_at(mark, path, message)


def _matching_branch(error: ValidationError) -> list[ValidationError] | None:
    """Of a failed oneOf, the errors of the one branch whose type fits the value, if exactly one."""
    by_branch: dict[int, list[ValidationError]] = {}
    for sub in error.context or ():
        by_branch.setdefault(int(sub.relative_schema_path[0]), []).append(sub)
    fitting = [
        errors
        for errors in by_branch.values()
        if not any(
            e.validator in ("type", "const") and len(e.relative_schema_path) == 2 for e in errors
        )
    ]
    return fitting[0] if len(fitting) == 1 else None


# --------------------------------------------------------------------------- cross-field rules


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _model_rule_problems(doc: _PositionedDocument) -> Iterator[Problem]:
    models = _mapping(_mapping(doc.data).get("models"))
    for name, model in models.items():
        if not isinstance(model, dict):
            continue
        base = ("models", name)
        sources = [kind for kind in SOURCE_KINDS if kind in model]
        if not sources:
            yield doc.problem_at(
                doc.key_mark(base),
                base,
                f"model '{name}' has no source: add exactly one of {', '.join(SOURCE_KINDS)}",
            )
        elif len(sources) > 1:
            second = (*base, sources[1])
            yield doc.problem_at(
                doc.key_mark(second),
                second,
                f"model '{name}' has {len(sources)} sources ({', '.join(sources)}): keep exactly one",
            )
        only_for = {"tags": "saved_model", "format": "keras", "inputs": "python"}
        for key, kind in only_for.items():
            if key in model and sources and kind not in sources:
                yield doc.problem_at(
                    doc.key_mark((*base, key)),
                    (*base, key),
                    f"'{key}' applies to {kind} sources only; remove it from this {sources[0]} model",
                )
        if len(sources) != 1:
            continue
        inputs = model.get("inputs")
        for index, pattern in enumerate(inputs if isinstance(inputs, list) else []):
            if isinstance(pattern, str) and pattern.startswith("/"):
                yield doc.problem_at(
                    doc.value_mark((*base, "inputs", index)),
                    (*base, "inputs", index),
                    f"'{pattern}' is an absolute path: `inputs` globs are relative to the "
                    "manifest's folder (e.g. '../shared/*.py' for a sibling folder)",
                )
        if sources == ["python"] and model.get("signatures", ALL_SIGNATURES) == ALL_SIGNATURES:
            where = (*base, "signatures") if "signatures" in model else (*base, "python")
            yield doc.problem_at(
                doc.key_mark(where) if "signatures" in model else doc.value_mark(where),
                where,
                "a python source needs `signatures:` naming the functions to export "
                "(tfjs-build plans without running your code, so it cannot list them)",
            )
        keras_path = model.get("keras")
        if (
            isinstance(keras_path, str)
            and keras_path.lower().endswith(KERAS_V3_SUFFIX)
            and model.get("format") == "layers_model"
        ):
            yield doc.problem_at(
                doc.value_mark((*base, "format")),
                (*base, "format"),
                "format: layers_model is not supported for Keras 3 .keras files: "
                "tensorflowjs 4.22 converts them with wrong weights or fails "
                "(tensorflow/tfjs#8229, #8266); use format: graph_model (the default)",
            )


def _option_scopes(data: Any) -> Iterator[tuple[KeyPath, dict[str, Any]]]:
    """Every mapping that may hold converter options: defaults, each model, each signature."""
    root = _mapping(data)
    if isinstance(root.get("defaults"), dict):
        yield ("defaults",), root["defaults"]
    for name, model in _mapping(root.get("models")).items():
        if not isinstance(model, dict):
            continue
        yield ("models", name), model
        for sig_name, sig in _mapping(model.get("signatures")).items():
            if isinstance(sig, dict):
                yield ("models", name, "signatures", sig_name), sig


def _quantization_problems(doc: _PositionedDocument) -> Iterator[Problem]:
    # An override replaces the whole quantization mapping, so checking each written mapping
    # checks every signature's effective one.
    for scope, options in _option_scopes(doc.data):
        quantization = options.get("quantization")
        if not isinstance(quantization, dict):
            continue
        seen: dict[str, str] = {}
        catch_all: str | None = None
        for dtype, globs in quantization.items():
            if not isinstance(globs, list):
                continue
            for index, glob in enumerate(globs):
                item = (*scope, "quantization", dtype, index)
                if glob == "*" and catch_all is not None and catch_all != dtype:
                    yield doc.problem_at(
                        doc.value_mark(item),
                        item,
                        f"'*' is used for both {catch_all} and {dtype}: tensorflowjs accepts the "
                        "catch-all for one dtype only; list node globs for the other",
                    )
                elif isinstance(glob, str) and glob in seen and seen[glob] != dtype:
                    yield doc.problem_at(
                        doc.value_mark(item),
                        item,
                        f"node glob '{glob}' is listed under both {seen[glob]} and {dtype}: "
                        "tensorflowjs rejects a node quantized to two dtypes; keep it under one",
                    )
                if glob == "*":
                    catch_all = catch_all or dtype
                elif isinstance(glob, str):
                    seen.setdefault(glob, dtype)


def _metadata_problems(doc: _PositionedDocument) -> Iterator[Problem]:
    for scope, options in _option_scopes(doc.data):
        if "metadata" not in options:
            continue
        try:
            # Only the types; a NaN is reported by _finite_number_problems, at its own line.
            json.dumps(options["metadata"], allow_nan=True)
        except (TypeError, ValueError):
            path = (*scope, "metadata")
            yield doc.problem_at(
                doc.value_mark(path),
                path,
                "metadata must be plain JSON values (quote dates and times)",
            )


def non_finite_numbers(value: Any, path: KeyPath = ()) -> Iterator[tuple[KeyPath, float]]:
    """Every NaN or infinity in plain data, with its key path. JSON Schema cannot say
    "finite", and JSON (reports, the state, the asset index, model.json) cannot hold them."""
    if isinstance(value, float) and not math.isfinite(value):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from non_finite_numbers(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from non_finite_numbers(item, (*path, index))


def _finite_number_problems(doc: _PositionedDocument) -> Iterator[Problem]:
    for path, value in non_finite_numbers(doc.data):
        mark = doc.value_mark(path)
        written = re.match(
            r"[^\s,\]}#]+", (_line_at(doc.lines, mark.line) or "")[mark.column - 1 :]
        )
        if written is None:
            written_text = ".nan" if math.isnan(value) else (".inf" if value > 0 else "-.inf")
        else:
            written_text = written.group()
        message = (
            f"{written_text} is not a finite number (reports and the state are JSON, which has "
            "no NaN or infinity): write a number"
        )
        if path[-2:] in (("verify", "atol"), ("verify", "rtol")):
            message += "; to accept any difference, set `verify: {enabled: false}`"
        yield doc.problem_at(mark, path, message)


def _nul_problems(doc: _PositionedDocument, value: Any, path: KeyPath) -> Iterator[Problem]:
    """A NUL byte in any key or text: no path, name or option can hold one (the OS refuses it)."""
    if isinstance(value, str) and "\0" in value:
        yield doc.problem_at(doc.value_mark(path), path, f"{value!r} contains a NUL byte")
    elif isinstance(value, dict):
        for key, item in value.items():
            if "\0" in key:
                yield doc.problem_at(
                    doc.key_mark((*path, key)), path, f"key {key!r} contains a NUL byte"
                )
            else:
                yield from _nul_problems(doc, item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _nul_problems(doc, item, (*path, index))


def layout_problems(layout: str) -> list[str]:
    """What is wrong with a layout string's placeholders, as messages."""
    try:
        fields = list(string.Formatter().parse(layout))
    except ValueError as error:
        return [
            f"invalid layout {layout!r}: {error}; write placeholders as {{model}} and {{signature}}"
        ]
    messages = []
    for _, name, spec, conversion in fields:
        if name is None:
            continue
        if name not in LAYOUT_PLACEHOLDERS:
            messages.append(
                f"unknown placeholder {{{name}}} in layout; available: "
                + ", ".join(f"{{{p}}}" for p in LAYOUT_PLACEHOLDERS)
            )
        elif spec or conversion:
            messages.append(f"placeholder {{{name}}} takes no format spec or conversion")
    return messages


@dataclass(frozen=True)
class OutputClaim:
    """One signature's claim on an output folder, for collision and escape checks."""

    model: str
    signature: str
    relative: str  # as written after formatting, before normalisation
    location: Location

    @property
    def label(self) -> str:
        return f"{self.model}:{self.signature}"


def output_problems(
    claims: Sequence[OutputClaim],
    output_dir: Path,
    sources: Mapping[str, Sequence[Path]],
    layout: str,
) -> list[tuple[Location, str]]:
    """Outputs that escape `output_dir`, collide, nest in each other or touch a model source.

    Signatures of one model sent to one folder by a layout without {signature} are left to
    `layout_signature_problems`, which says so in one message.
    """
    found: list[tuple[Location, str]] = []
    # Indexes instead of pairwise checks: a 1,000-signature monorepo plans in milliseconds.
    kept: dict[str, OutputClaim] = {}  # normalised output -> claim
    below: dict[str, str] = {}  # every proper ancestor of a kept output -> that output
    resolved = [(model, path.resolve()) for model, paths in sources.items() for path in paths]
    source_at = {path: model for model, path in resolved}
    source_below = {parent: (model, path) for model, path in resolved for parent in path.parents}
    for claim in claims:
        if "\0" in claim.relative:
            found.append(
                (claim.location, f"output {claim.relative!r} of {claim.label} contains a NUL byte")
            )
            continue
        normal = posixpath.normpath(claim.relative)
        first = normal.split("/")[0]
        if first.casefold() in RESERVED_OUTPUT_NAMES:
            found.append(
                (
                    claim.location,
                    f"output '{claim.relative}' of {claim.label} "
                    f"{'takes the name' if first == normal else 'is inside'} '{first}', which tfjs-build "
                    f"keeps for {RESERVED_OUTPUT_NAMES[first.casefold()]} in output_dir: choose "
                    "another output",
                )
            )
            continue
        if posixpath.isabs(claim.relative) or normal == "." or normal.split("/")[0] == "..":
            found.append(
                (
                    claim.location,
                    f"output '{claim.relative}' of {claim.label} escapes output_dir: "
                    "use a relative folder below it, without '..'",
                )
            )
            continue
        parts = normal.split("/")
        ancestors = ["/".join(parts[:i]) for i in range(1, len(parts))]
        other_path = next((p for p in [normal, *ancestors] if p in kept), below.get(normal))
        if other_path is not None:
            other = kept[other_path]
            if (
                "{signature}" not in layout
                and other.model == claim.model
                and other.location == claim.location
            ):
                continue
            relation = "both go to" if other_path == normal else "nest in each other:"
            found.append(
                (
                    claim.location,
                    f"{other.label} and {claim.label} {relation} '{other_path}'"
                    + ("" if other_path == normal else f" and '{normal}'")
                    + "; give one of them its own `output` or change `layout`",
                )
            )
            continue
        kept[normal] = claim
        for ancestor in ancestors:
            below.setdefault(ancestor, normal)
        target = (output_dir / normal).resolve()
        overlaps = [(source_at[t], t) for t in (target, *target.parents) if t in source_at]
        if target in source_below:
            overlaps.append(source_below[target])
        for model, source in overlaps:
            found.append(
                (
                    claim.location,
                    f"output '{normal}' of {claim.label} overlaps the source of model "
                    f"'{model}' ({source}): outputs are replaced on every build, so keep "
                    "them apart",
                )
            )
    return found


# --------------------------------------------------------------------------- loading


SCHEMA_CHECK_FILE = "manifest-checked"


def _schema_check_key(text: str) -> str:
    """The manifest, the schema and this version: the same three always validate the same."""
    from tfjsbuild import __version__

    payload = "\0".join([text, schema_text(), __version__])
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _schema_checked(manifest_path: Path) -> str | None:
    try:
        return (state_dir_for(manifest_path) / SCHEMA_CHECK_FILE).read_text("utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _remember_schema_check(state_dir: Path, key: str) -> None:
    """Remember a passed schema check (the JSON Schema validator costs more than a no-op
    build's whole plan); written only where a build already keeps its state.

    Only an optimisation: on a full disk or a read-only checkout the next load validates again,
    so a failed write is ignored (`write_atomically` leaves no temporary file behind)."""
    import contextlib

    from tfjsbuild.files.atomic import write_atomically

    with contextlib.suppress(OSError):
        write_atomically(state_dir / SCHEMA_CHECK_FILE, key)


def find_manifest(path: str | Path | None) -> Path:
    """The manifest file to use: the given path (a folder means its tfjs-build.yaml)."""
    candidate = Path(path) if path is not None else Path(MANIFEST_NAME)
    if candidate.is_dir():
        candidate = candidate / MANIFEST_NAME
    if not candidate.is_file():
        hint = "" if path is not None else " in the current folder (pass -f FILE to use another)"
        raise UsageError(f"no manifest: {candidate} does not exist{hint}")
    return candidate


def _read_manifest_text(path: Path) -> str:
    """The manifest's text; one past `MAX_MANIFEST_BYTES` is refused without being read whole."""
    try:
        with path.open(encoding="utf-8") as file:
            text = file.read(MAX_MANIFEST_BYTES + 1)  # characters: at least as many bytes
        size = len(text.encode("utf-8"))
        if size > MAX_MANIFEST_BYTES:
            size = max(size, path.stat().st_size)
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"cannot read manifest {path}: {error}") from error
    if size > MAX_MANIFEST_BYTES:
        message = (
            f"the manifest is {size:,} bytes, more than the {MAX_MANIFEST_BYTES:,} (1 MiB) "
            "tfjs-build reads: split it into one manifest per folder and build them together "
            "with --all"
        )
        raise ManifestError([Problem(path, 1, 1, "", message)])
    return text


def load_manifest(path: str | Path | None = None) -> Manifest:
    """Parse and validate a manifest; raise ManifestError listing every problem at once."""
    manifest_path = find_manifest(path)
    text = _read_manifest_text(manifest_path)
    doc = _PositionedDocument(manifest_path, text)
    if doc.problems and doc.data is None:
        raise ManifestError(doc.problems)
    if doc.data is None:
        raise ManifestError(
            [doc.problem(1, 1, "", "the manifest is empty: start with `version: 1`")]
        )

    problems = list(doc.problems)
    check_key = _schema_check_key(text)
    checked_before = _schema_checked(manifest_path) == check_key
    if not checked_before:
        # A value YAML already rejected (a bad tag) would only be reported again by the schema.
        rejected = {(p.line, p.column) for p in doc.problems}
        problems += [p for p in _schema_problems(doc) if (p.line, p.column) not in rejected]
    problems += _model_rule_problems(doc)
    problems += _quantization_problems(doc)
    problems += _metadata_problems(doc)
    reported = {(p.line, p.column) for p in problems}  # e.g. -.inf is below `minimum: 0`
    problems += [p for p in _finite_number_problems(doc) if (p.line, p.column) not in reported]
    problems += _nul_problems(doc, doc.data, ())
    root = _mapping(doc.data)
    layout = root.get("layout", DEFAULT_LAYOUT)
    if isinstance(layout, str):
        for message in layout_problems(layout):
            problems.append(doc.problem_at(doc.value_mark(("layout",)), ("layout",), message))
    if problems:
        raise ManifestError(problems)

    manifest = _build(doc)
    if not checked_before and manifest.state_dir.is_dir():
        _remember_schema_check(manifest.state_dir, check_key)
    claims = [
        claim
        for model in manifest.models
        if model.signatures is not None
        for claim in signature_claims(manifest, model, [s.name for s in model.signatures])
    ]
    located = _output_dir_problems(manifest, str(root.get("output_dir", DEFAULT_OUTPUT_DIR)))
    located += layout_signature_problems(manifest)
    located += output_problems(claims, manifest.output_dir, _source_map(manifest), manifest.layout)
    if located:
        raise ManifestError(manifest.problem(location, message) for location, message in located)
    return manifest


def _output_dir_problems(manifest: Manifest, written: str) -> list[tuple[Location, str]]:
    """An output_dir that would hold the manifest's folder, or tfjs-build's own state."""
    location = manifest.output_dir_location or manifest.layout_location
    output_dir = manifest.output_dir
    if manifest.root.is_relative_to(output_dir):
        what = "is" if output_dir == manifest.root else "contains"
        return [
            (
                location,
                f"output_dir '{written}' {what} the manifest's folder: it would hold the model "
                f"sources and {STATE_ROOT}/ beside the outputs tfjs-build replaces and prunes; "
                f"use a folder of its own, e.g. '{DEFAULT_OUTPUT_DIR}'",
            )
        ]
    if output_dir.is_relative_to(manifest.tool_dir.resolve()):
        return [
            (
                location,
                f"output_dir '{written}' is inside {STATE_ROOT}/, where tfjs-build keeps its state "
                f"and cache: use a folder of its own, e.g. '{DEFAULT_OUTPUT_DIR}'",
            )
        ]
    return []


def _source_map(manifest: Manifest) -> dict[str, tuple[Path, ...]]:
    return {model.name: model.source_paths() for model in manifest.models}


def signature_claims(
    manifest: Manifest, model: ModelSpec, names: Sequence[str]
) -> list[OutputClaim]:
    """Output claims of a model's signatures, given their names (resolved for "*")."""
    specs = {spec.name: spec for spec in model.signatures or ()}
    claims = []
    for name in names:
        spec = specs.get(name)
        if spec is not None and spec.output is not None:
            claims.append(OutputClaim(model.name, name, spec.output, spec.location))
        else:
            relative = manifest.layout.format(model=model.name, signature=name)
            claims.append(OutputClaim(model.name, name, relative, manifest.layout_location))
    return claims


def layout_signature_problems(
    manifest: Manifest, resolved: Mapping[str, Sequence[str]] | None = None
) -> list[tuple[Location, str]]:
    """A layout without {signature} cannot hold a model that exports several signatures."""
    if "{signature}" in manifest.layout:
        return []
    found = []
    for model in manifest.models:
        if resolved is not None and model.name in resolved:
            names = list(resolved[model.name])
        elif model.signatures is not None:
            names = [s.name for s in model.signatures]
        else:
            continue
        specs = {spec.name: spec for spec in model.signatures or ()}
        using_layout = [n for n in names if specs.get(n) is None or specs[n].output is None]
        if len(using_layout) > 1:
            found.append(
                (
                    manifest.layout_location,
                    f"layout '{manifest.layout}' has no {{signature}} but model '{model.name}' "
                    f"exports {len(using_layout)} signatures ({', '.join(using_layout)}) through "
                    "it: add {signature} or give each signature an `output`",
                )
            )
    return found


def _merged_options(*scopes: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(BUILTIN_OPTIONS)
    for scope in scopes:
        merged.update({key: scope[key] for key in OPTION_KEYS if key in scope})
    return merged


def _merged_checks(root: Path, *scopes: Mapping[str, Any]) -> Checks:
    """`verify` merges key by key (a signature may change only `atol`); the others replace."""
    verify: dict[str, Any] = {}
    max_bytes = None
    timeout = DEFAULT_TIMEOUT
    for scope in scopes:
        verify.update(_mapping(scope.get("verify")))
        max_bytes = scope.get("max_bytes", max_bytes)
        timeout = float(scope.get("timeout", timeout))
    inputs = verify.pop("inputs", None)
    settings = VerifySettings(**verify, inputs=None if inputs is None else root / inputs)
    return Checks(settings, max_bytes, timeout)


def _build(doc: _PositionedDocument) -> Manifest:
    root: dict[str, Any] = doc.data
    manifest_dir = doc.path.parent.resolve()
    defaults = _mapping(root.get("defaults"))
    cache = _mapping(root.get("cache"))
    models = []
    for name, raw in root["models"].items():
        base: KeyPath = ("models", name)
        kind = next(kind for kind in SOURCE_KINDS if kind in raw)
        source: Source
        if kind == "saved_model":
            source = SavedModelSource(
                manifest_dir / raw["saved_model"], tuple(raw.get("tags", ["serve"]))
            )
        elif kind == "keras":
            source = KerasSource(manifest_dir / raw["keras"], raw.get("format", "graph_model"))
        else:
            source = PythonSource(raw["python"], tuple(raw.get("inputs", ())), manifest_dir)
        model_options = _merged_options(defaults, raw)
        raw_signatures = raw.get("signatures", ALL_SIGNATURES)
        signatures: tuple[SignatureSpec, ...] | None
        if raw_signatures == ALL_SIGNATURES:
            signatures = None
        else:
            per_signature = (
                raw_signatures
                if isinstance(raw_signatures, dict)
                else dict.fromkeys(raw_signatures)
            )
            specs = []
            for index, (sig_name, sig_raw) in enumerate(per_signature.items()):
                sig_raw = sig_raw or {}
                sig_path = (
                    (*base, "signatures", sig_name)
                    if isinstance(raw_signatures, dict)
                    else (*base, "signatures", index)
                )
                specs.append(
                    SignatureSpec(
                        name=sig_name,
                        options=ConverterOptions.from_mapping(
                            _merged_options(defaults, raw, sig_raw)
                        ),
                        output=sig_raw.get("output"),
                        location=doc.location(sig_path),
                        checks=_merged_checks(manifest_dir, defaults, raw, sig_raw),
                    )
                )
            signatures = tuple(specs)
        models.append(
            ModelSpec(
                name=name,
                source=source,
                signatures=signatures,
                options=ConverterOptions.from_mapping(model_options),
                location=doc.location(base),
                source_location=doc.location((*base, kind), key=False),
                checks=_merged_checks(manifest_dir, defaults, raw),
            )
        )
    return Manifest(
        path=doc.path,
        root=manifest_dir,
        output_dir=(manifest_dir / root.get("output_dir", DEFAULT_OUTPUT_DIR)).resolve(),
        layout=root.get("layout", DEFAULT_LAYOUT),
        layout_location=doc.location(("layout",), key=False),
        models=tuple(models),
        lines=doc.lines,
        cache=CacheSettings(
            dir=manifest_dir / cache["dir"] if "dir" in cache else None,
            remote=cache.get("remote"),
            mode=cache.get("mode", "rw"),
        ),
        output_dir_location=doc.location(("output_dir",), key=False),
    )
