"""Load `tfjs-build.yaml`: find and read it, check it whole, and build the frozen `Manifest`.

The steps, each in its own module: YAML with positions (`yaml_positions`), the JSON Schema
(`schema`, worded by `messages`), cross-field rules (`rules`, `output_rules`); every problem is
collected and raised at once as a `ManifestError`. Everything past `load_manifest` works on the
dataclasses of `manifest.types`; no raw dicts travel on. Nothing here imports TensorFlow or
writes anything but the schema-check memo in an existing state folder.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tfjsbuild.errors import ManifestError, Problem, UsageError
from tfjsbuild.manifest.output_rules import placement_problems
from tfjsbuild.manifest.rules import as_mapping, rule_problems
from tfjsbuild.manifest.schema import (
    remember_schema_check,
    schema_check_key,
    schema_checked,
    schema_problems,
)
from tfjsbuild.manifest.types import (
    ALL_SIGNATURES,
    BUILTIN_OPTIONS,
    DEFAULT_LAYOUT,
    DEFAULT_OUTPUT_DIR,
    DEFAULT_TIMEOUT,
    MANIFEST_NAME,
    OPTION_KEYS,
    SOURCE_KINDS,
    BackendCheck,
    CacheSettings,
    Checks,
    ConverterOptions,
    KerasSource,
    Manifest,
    ModelSpec,
    PythonSource,
    SavedModelSource,
    SignatureSpec,
    Source,
    VerifySettings,
)
from tfjsbuild.manifest.yaml_positions import MAX_MANIFEST_BYTES, KeyPath, PositionedDocument
from tfjsbuild.verify.record import BACKENDS


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
    doc = PositionedDocument(manifest_path, text)
    if doc.problems and doc.data is None:
        raise ManifestError(doc.problems)
    if doc.data is None:
        raise ManifestError(
            [doc.problem(1, 1, "", "the manifest is empty: start with `version: 1`")]
        )

    problems = list(doc.problems)
    check_key = schema_check_key(text)
    checked_before = schema_checked(manifest_path) == check_key
    if not checked_before:
        # A value YAML already rejected (a bad tag) would only be reported again by the schema.
        rejected = {(p.line, p.column) for p in doc.problems}
        problems += [p for p in schema_problems(doc) if (p.line, p.column) not in rejected]
    problems += rule_problems(doc, problems)
    if problems:
        raise ManifestError(problems)

    manifest = _build(doc)
    if not checked_before and manifest.state_dir.is_dir():
        remember_schema_check(manifest.state_dir, check_key)
    written_output_dir = str(as_mapping(doc.data).get("output_dir", DEFAULT_OUTPUT_DIR))
    located = placement_problems(manifest, written_output_dir)
    if located:
        raise ManifestError(manifest.problem(location, message) for location, message in located)
    return manifest


def _merged_options(*scopes: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(BUILTIN_OPTIONS)
    for scope in scopes:
        merged.update({key: scope[key] for key in OPTION_KEYS if key in scope})
    return merged


def _merged_flag(key: str, *scopes: Mapping[str, Any]) -> bool:
    """A true/false setting the deepest scope writing it decides; false where none does."""
    return bool(next((scope[key] for scope in reversed(scopes) if key in scope), False))


def _merged_checks(root: Path, *scopes: Mapping[str, Any]) -> Checks:
    """`verify` merges key by key (a signature may change only `atol`); the others replace."""
    verify: dict[str, Any] = {}
    max_bytes = None
    timeout = DEFAULT_TIMEOUT
    for scope in scopes:
        written = as_mapping(scope.get("verify"))
        if "backend" in written or "backends" in written:  # a deeper scope's choice replaces
            verify.pop("backend", None)
            verify.pop("backends", None)
        verify.update(written)
        max_bytes = scope.get("max_bytes", max_bytes)
        timeout = float(scope.get("timeout", timeout))
    inputs = verify.pop("inputs", None)
    # The schema's integers include 3.0: as ints, so `range(samples)` works and a recorded
    # `samples: 3` compares equal however the manifest spelled it.
    if "samples" in verify:
        verify["samples"] = int(verify["samples"])
    if "backend" in verify or "backends" in verify:
        verify["backends"] = _backend_checks(
            verify.pop("backend", None), verify.pop("backends", None)
        )
    settings = VerifySettings(**verify, inputs=None if inputs is None else root / inputs)
    return Checks(settings, None if max_bytes is None else int(max_bytes), timeout)


def _backend_checks(backend: str | None, backends: Any) -> tuple[BackendCheck, ...]:
    """`backend: x` or `backends` (a list of names, or names mapped to their settings), in the
    order they run; the schema and `rules` have checked their shape."""
    if backend is not None:
        return (BackendCheck(backend),)
    written = backends if isinstance(backends, dict) else dict.fromkeys(backends)
    return tuple(
        BackendCheck(name, **(written[name] or {})) for name in BACKENDS if name in written
    )


def _build(doc: PositionedDocument) -> Manifest:
    """The typed manifest of a document every check has passed."""
    root: dict[str, Any] = doc.data
    manifest_dir = doc.path.parent.resolve()
    defaults = as_mapping(root.get("defaults"))
    cache = as_mapping(root.get("cache"))
    return Manifest(
        path=doc.path,
        root=manifest_dir,
        output_dir=(manifest_dir / root.get("output_dir", DEFAULT_OUTPUT_DIR)).resolve(),
        layout=root.get("layout", DEFAULT_LAYOUT),
        layout_location=doc.location(("layout",), key=False),
        models=tuple(
            _model_spec(doc, name, raw, defaults, manifest_dir)
            for name, raw in root["models"].items()
        ),
        lines=doc.lines,
        cache=CacheSettings(
            dir=manifest_dir / cache["dir"] if "dir" in cache else None,
            remote=cache.get("remote"),
            mode=cache.get("mode", "rw"),
        ),
        output_dir_location=doc.location(("output_dir",), key=False),
    )


def _model_spec(
    doc: PositionedDocument,
    name: str,
    raw: dict[str, Any],
    defaults: dict[str, Any],
    manifest_dir: Path,
) -> ModelSpec:
    base: KeyPath = ("models", name)
    kind = next(kind for kind in SOURCE_KINDS if kind in raw)
    raw_signatures = raw.get("signatures", ALL_SIGNATURES)
    return ModelSpec(
        name=name,
        source=_source(kind, raw, manifest_dir),
        signatures=(
            None
            if raw_signatures == ALL_SIGNATURES
            else _signature_specs(doc, base, raw, defaults, manifest_dir)
        ),
        options=ConverterOptions.from_json_dict(_merged_options(defaults, raw)),
        location=doc.location(base),
        source_location=doc.location((*base, kind), key=False),
        checks=_merged_checks(manifest_dir, defaults, raw),
        share_weights=_merged_flag("share_weights", defaults, raw),
    )


def _source(kind: str, raw: dict[str, Any], manifest_dir: Path) -> Source:
    if kind == "saved_model":
        return SavedModelSource(
            manifest_dir / raw["saved_model"], tuple(raw.get("tags", ["serve"]))
        )
    if kind == "keras":
        return KerasSource(manifest_dir / raw["keras"], raw.get("format", "graph_model"))
    return PythonSource(raw["python"], tuple(raw.get("inputs", ())), manifest_dir)


def _signature_specs(
    doc: PositionedDocument,
    base: KeyPath,
    raw: dict[str, Any],
    defaults: dict[str, Any],
    manifest_dir: Path,
) -> tuple[SignatureSpec, ...]:
    """The signatures a model names: a list of names, or a mapping of names to overrides."""
    raw_signatures = raw["signatures"]
    per_signature = (
        raw_signatures if isinstance(raw_signatures, dict) else dict.fromkeys(raw_signatures)
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
                options=ConverterOptions.from_json_dict(_merged_options(defaults, raw, sig_raw)),
                output=sig_raw.get("output"),
                location=doc.location(sig_path),
                checks=_merged_checks(manifest_dir, defaults, raw, sig_raw),
                share_weights=_merged_flag("share_weights", defaults, raw, sig_raw),
            )
        )
    return tuple(specs)
