"""The Python API that build scripts import; the CLI is a thin layer over it.

Data flows one way: manifest -> targets -> fingerprints -> plan -> execute -> state.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tfjsbuild.building.asset_index import index_owner_problem
from tfjsbuild.building.cache import first_entry, resolve_config
from tfjsbuild.building.cache_entry import cache_key
from tfjsbuild.building.cache_store import Store
from tfjsbuild.building.execute import execute
from tfjsbuild.building.lock import BuildLock
from tfjsbuild.building.outputs import remove_built_files, remove_state_folders
from tfjsbuild.building.project import Project
from tfjsbuild.building.results import Reporter, ReportRow, SignatureResult
from tfjsbuild.building.state import BuildState, load_state, output_change
from tfjsbuild.errors import ManifestError, Problem, UsageError
from tfjsbuild.files.artifacts import GraphModelOutput
from tfjsbuild.files.atomic import swap_directory
from tfjsbuild.manifest.load import load_manifest
from tfjsbuild.manifest.rules import non_finite_numbers
from tfjsbuild.manifest.schema import manifest_schema
from tfjsbuild.manifest.types import (
    BUILTIN_OPTIONS,
    MANIFEST_NAME,
    ConverterOptions,
    KerasSource,
    Manifest,
    PythonSource,
)
from tfjsbuild.manifest.yaml_positions import format_key_path
from tfjsbuild.planning.fingerprint import fingerprint_signature, tool_versions
from tfjsbuild.planning.plan import PlanItem, Target, plan_build, select
from tfjsbuild.planning.targets import resolve_targets
from tfjsbuild.render.console import SilentReporter
from tfjsbuild.render.json import plan_json, results_json
from tfjsbuild.sources.digest import StatCache
from tfjsbuild.sources.model_sources import ModelSources
from tfjsbuild.sources.registry import kind_of, source_digest
from tfjsbuild.sources.saved_model_files import read_meta_graphs
from tfjsbuild.sources.saved_model_graph import GraphFingerprintError, signature_graphs
from tfjsbuild.verify.runtime import tfjs_version

# Folders never searched by --all: build outputs, dependencies and VCS data.
SKIPPED_FOLDERS = {".git", ".tfjs-build", "node_modules", "__pycache__", ".venv", "venv"}


@dataclass
class ManifestPlan:
    manifest: Manifest
    state: BuildState
    items: list[PlanItem]
    warnings: list[str] = field(default_factory=list)
    stores: list[Store] = field(default_factory=list)


@dataclass
class BuildPlan:
    manifests: list[ManifestPlan]

    @property
    def items(self) -> list[PlanItem]:
        return [item for plan in self.manifests for item in plan.items]

    @property
    def warnings(self) -> list[str]:
        return [warning for plan in self.manifests for warning in plan.warnings]

    def to_json(self) -> str:
        return plan_json([p.manifest.path for p in self.manifests], self.items)


@dataclass
class BuildResult:
    manifests: list[Path]
    results: list[SignatureResult]
    seconds: float
    dry_run: bool = False
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(result.status != "failed" for result in self.results)

    @property
    def failed(self) -> list[SignatureResult]:
        return [result for result in self.results if result.status == "failed"]

    def to_json(self) -> str:
        return results_json(
            self.manifests, self.results, seconds=self.seconds, dry_run=self.dry_run
        )


def discover_manifests(folder: str | Path) -> list[Path]:
    """Every tfjs-build.yaml below `folder`, skipping dependency folders and build outputs."""
    root = Path(folder)
    if not root.is_dir():
        raise UsageError(f"--all {root}: not a folder")
    found: list[Path] = []
    for current, folders, files in os.walk(root):
        folders[:] = sorted(
            f for f in folders if f not in SKIPPED_FOLDERS and not f.startswith(".")
        )
        if MANIFEST_NAME in files:
            found.append(Path(current) / MANIFEST_NAME)
    if not found:
        raise UsageError(f"no {MANIFEST_NAME} found below {root}")
    return found


def load_manifests(
    manifests: Iterable[str | Path], all_dirs: Iterable[str | Path] = ()
) -> list[Manifest]:
    paths: list[Path | None] = [Path(m) for m in manifests]
    for folder in all_dirs:
        paths += discover_manifests(folder)
    loaded: dict[Path, Manifest] = {}
    for path in paths or [None]:
        manifest = load_manifest(path)
        loaded.setdefault(manifest.path.resolve(), manifest)
    # A manifest inside another one's output folder is output, not source (e.g. a copied example).
    kept = [
        m
        for m in loaded.values()
        if not any(
            o is not m and m.path.resolve().is_relative_to(o.output_dir) for o in loaded.values()
        )
    ]
    _refuse_shared_output_dirs(kept)
    return kept


def _refuse_shared_output_dirs(manifests: Sequence[Manifest]) -> None:
    """Two manifests with one output_dir would overwrite each other's asset index."""
    first: dict[Path, Manifest] = {}
    problems = []
    for manifest in manifests:
        other = first.setdefault(manifest.output_dir, manifest)
        if other is not manifest:
            problems.append(
                _output_dir_problem(
                    manifest,
                    f"output_dir {manifest.output_dir} is also the output_dir of {other.path}: "
                    f"the two would overwrite each other's {manifest.index_path.name} (and "
                    "outputs); give each manifest its own output_dir",
                )
            )
    if problems:
        raise ManifestError(problems)


def _output_dir_problem(manifest: Manifest, message: str) -> Problem:
    return manifest.problem(manifest.output_dir_location or manifest.layout_location, message)


def _load_state(
    manifest: Manifest, consequence: str = "it will be rebuilt"
) -> tuple[BuildState, list[str]]:
    """The manifest's own state, records checked against its output_dir.

    The default manifest adopts the state of the layout before states were per manifest
    (`.tfjs-build/state.json`), so upgrading does not rebuild everything. That file was shared by
    every manifest of the folder: only records of models this manifest declares are taken, so
    none of another manifest's outputs is ever pruned.
    """
    adopt = manifest.tool_dir if manifest.path.name == MANIFEST_NAME else None
    state, problems = load_state(
        manifest.state_dir,
        root=manifest.root,
        output_dir=manifest.output_dir,
        adopt=adopt,
        consequence=consequence,
    )
    if state.adopted_from is not None:
        declared = {model.name for model in manifest.models}
        state.records = {k: r for k, r in state.records.items() if r.model in declared}
    return state, problems


def _plan_manifest(
    manifest: Manifest,
    *,
    force: bool,
    prune: bool,
    paranoid: bool,
    cache: str | None = None,
    verify: bool = True,
) -> ManifestPlan:
    owner_problem = index_owner_problem(manifest)
    if owner_problem is not None:
        raise ManifestError([_output_dir_problem(manifest, owner_problem)])
    state, state_warnings = _load_state(manifest)
    stat_cache = StatCache(state.stat_cache)
    sources = ModelSources(stat_cache, state.graph_cache, paranoid=paranoid)
    resolution = resolve_targets(manifest, sources.signature_names)
    fingerprints = {}
    tools = {kind: tool_versions(kind) for kind in {t.source.kind for t in resolution.targets}}
    for target in resolution.targets:
        by_signature = sources.fingerprints(target.source)
        entry = by_signature.get(target.signature) or by_signature["*"]
        source = target.source
        fingerprints[target.key] = fingerprint_signature(
            source=entry["digest"],
            source_kind=entry["kind"],
            signature=target.signature,
            tags=kind_of(source).tags(source),
            options=target.options,
            output=target.output,
            tools=tools[source.kind],
            details=entry["details"],
            format=kind_of(source).output_format(source),
            verify=_verification_inputs(target, manifest.root, stat_cache),
        )
    changes = {
        key: output_change(manifest.root, record)
        for key, record in state.records.items()
        if key in fingerprints and record.fingerprint == fingerprints[key].digest
    }
    items = plan_build(
        manifest.path,
        resolution.targets,
        fingerprints,
        changes,
        state.records,
        blocked=resolution.blocked,
        force=force,
        prune=prune,
        verify=verify,
    )
    state.stat_cache = stat_cache.entries()
    state.graph_cache = sources.used
    config = resolve_config(manifest, cache)
    # Stores are opened only when something is to be built or verified (a verified output is
    # offered to the cache with its verification): a no-op plan stays cheap.
    needed = any(item.action in ("build", "verify") and item.blocked is None for item in items)
    stores = config.stores() if needed else []
    items = [_with_cache(item, stores, force, verify) for item in items]
    return ManifestPlan(manifest, state, items, state_warnings, stores)


def _with_cache(item: PlanItem, stores: Sequence[Store], force: bool, verify: bool) -> PlanItem:
    """Mark a build the cache can restore (a cheap lookup of one small file per store): an
    entry with the verification this run wants, or any entry when it verifies nothing."""
    if item.action != "build" or item.blocked is not None or item.fingerprint is None or force:
        return item
    wanted = item.fingerprint.verify if verify else {}
    found = first_entry(stores, cache_key(item.fingerprint), wanted)
    return item if found is None else replace(item, cached=found[0].label)


def _verification_inputs(target: Target, root: Path, stat_cache: StatCache) -> dict[str, Any]:
    """What a signature's verification depends on: settings, sample inputs, the TF.js runtime."""
    settings = target.checks.verify
    described = settings.as_dict(root)
    if described:
        described["tfjs"] = tfjs_version()
        if settings.inputs is not None:
            described["inputs_sha256"] = stat_cache.digest(settings.inputs)
    return described


def _select(plans: Sequence[ManifestPlan], selection: Sequence[str]) -> None:
    if not selection:
        return
    items = [item for plan in plans for item in plan.items if item.action != "remove"]
    known = {item.model for item in items} | {item.key for item in items}
    unknown = [name for name in selection if name not in known]
    if unknown:
        available = ", ".join(sorted(known)) or "none"
        raise UsageError(
            f"unknown model or signature: {', '.join(unknown)} (available: {available})"
        )
    for plan in plans:
        plan.items = select(plan.items, selection)


def plan(
    manifests: Iterable[str | Path] = (),
    *,
    all_dirs: Iterable[str | Path] = (),
    selection: Sequence[str] = (),
    force: bool = False,
    paranoid: bool = False,
    cache: str | None = None,
    verify: bool = True,
) -> BuildPlan:
    """What a build would do and why, without building or writing anything.

    `verify=False`: the plan of a `--no-verify` build (nothing to verify).
    """
    plans = [
        _plan_manifest(
            m, force=force, prune=not selection, paranoid=paranoid, cache=cache, verify=verify
        )
        for m in load_manifests(manifests, all_dirs)
    ]
    _select(plans, selection)
    return BuildPlan(plans)


def build(
    manifests: Iterable[str | Path] = (),
    *,
    all_dirs: Iterable[str | Path] = (),
    selection: Sequence[str] = (),
    jobs: int | None = None,
    force: bool = False,
    dry_run: bool = False,
    fail_fast: bool = False,
    paranoid: bool = False,
    cache: str | None = None,
    executor: str = "local",
    ray_address: str | None = None,
    verify: bool = True,
    reporter: Reporter | None = None,
) -> BuildResult:
    """Build what changed; failed signatures are in the result (`result.ok` is False).

    `verify=False` skips running outputs in TensorFlow.js; a later build that verifies runs the
    outputs it built as they are, without converting them again.
    """
    return build_manifests(
        load_manifests(manifests, all_dirs),
        selection=selection,
        jobs=jobs,
        force=force,
        dry_run=dry_run,
        fail_fast=fail_fast,
        paranoid=paranoid,
        verify=verify,
        cache=cache,
        executor=executor,
        ray_address=ray_address,
        reporter=reporter,
    )


def build_manifests(
    loaded: Sequence[Manifest],
    *,
    selection: Sequence[str] = (),
    jobs: int | None = None,
    force: bool = False,
    dry_run: bool = False,
    fail_fast: bool = False,
    paranoid: bool = False,
    cache: str | None = None,
    executor: str = "local",
    ray_address: str | None = None,
    verify: bool = True,
    reporter: Reporter | None = None,
) -> BuildResult:
    """`build` for manifests already loaded (watch keeps building the last valid ones)."""
    start = time.perf_counter()
    if executor not in ("local", "ray"):
        raise UsageError(f"--executor must be local or ray, got {executor!r}")
    if jobs is not None and jobs < 1:
        raise UsageError(f"-j/--jobs must be at least 1, got {jobs}")
    with ExitStack() as stack:
        if not dry_run:
            for manifest in sorted(loaded, key=lambda m: str(m.state_dir)):
                stack.enter_context(BuildLock(manifest.state_dir))
        plans = [
            _plan_manifest(
                m, force=force, prune=not selection, paranoid=paranoid, cache=cache, verify=verify
            )
            for m in loaded
        ]
        _select(plans, selection)
        build_plan = BuildPlan(plans)
        paths = [p.manifest.path for p in plans]
        if dry_run:
            results = [SignatureResult(item, "skipped") for item in build_plan.items]
            return BuildResult(
                paths, results, time.perf_counter() - start, True, build_plan.warnings
            )
        projects = {p.manifest.path: Project(p.manifest, p.state, p.stores) for p in plans}
        results = execute(
            build_plan.items,
            projects,
            jobs=jobs,
            fail_fast=fail_fast,
            reporter=reporter or SilentReporter(),
            verify=verify,
            executor=executor,
            ray_address=ray_address,
        )
    return BuildResult(paths, results, time.perf_counter() - start, False, build_plan.warnings)


def clean(
    manifests: Iterable[str | Path] = (), *, all_dirs: Iterable[str | Path] = ()
) -> list[str]:
    """Remove the outputs this tool recorded, the asset index and the state. Returns what went.

    What is not provably this tool's (a record whose output is not inside output_dir, a file
    reached through a symbolic link, another manifest's asset index) is left alone, with a
    Python warning saying why. Other manifests' states in the same folder are kept, and so is
    the local cache they share.
    """
    removed: list[str] = []
    for manifest in load_manifests(manifests, all_dirs):
        with BuildLock(manifest.state_dir):
            state, problems = _load_state(manifest, "its files are left in place")
            gone, refused = remove_built_files(manifest, state)
        removed += gone
        for problem in problems + refused:
            warnings.warn(problem, stacklevel=2)
        remove_state_folders(manifest)
    return removed


def report(
    manifests: Iterable[str | Path] = (), *, all_dirs: Iterable[str | Path] = ()
) -> list[ReportRow]:
    """What the last builds produced, per model and signature, in manifest order."""
    rows = []
    for manifest in load_manifests(manifests, all_dirs):
        state, _ = _load_state(manifest)
        order = {model.name: index for index, model in enumerate(manifest.models)}
        records = sorted(
            state.records.values(), key=lambda r: (order.get(r.model, len(order)), r.signature)
        )
        rows += [ReportRow.from_record(manifest.path, record) for record in records]
    return rows


def _cache_stores(
    manifests: Iterable[str | Path], all_dirs: Iterable[str | Path], cache: str | None
) -> list[Store]:
    stores: dict[str, Store] = {}
    for manifest in load_manifests(manifests, all_dirs):
        for store in resolve_config(manifest, cache).stores():
            stores.setdefault(store.url, store)
    return list(stores.values())


def cache_stats(
    manifests: Iterable[str | Path] = (),
    *,
    all_dirs: Iterable[str | Path] = (),
    cache: str | None = None,
) -> list[tuple[str, str, dict[str, int]]]:
    """(label, url, {entries, blobs, bytes}) of every cache the manifests use."""
    return [(s.label, s.url, s.stats()) for s in _cache_stores(manifests, all_dirs, cache)]


def cache_prune(
    manifests: Iterable[str | Path] = (),
    *,
    all_dirs: Iterable[str | Path] = (),
    cache: str | None = None,
    max_bytes: int,
) -> list[tuple[str, str, dict[str, int]]]:
    """Shrink every writable cache to `max_bytes`, least recently used entries first."""
    return [
        (s.label, s.url, s.prune(max_bytes))
        for s in _cache_stores(manifests, all_dirs, cache)
        if s.writable
    ]


def inspect_saved_model(path: str | Path, *, paranoid: bool = False) -> dict[str, Any]:
    """Tag sets, signatures with their tensors, and each signature's graph fingerprint."""
    folder = Path(path)
    meta_graphs = []
    for meta in read_meta_graphs(folder):
        try:
            graphs = signature_graphs(folder, meta.tags, StatCache(), paranoid=paranoid)
            fallback = None
        except GraphFingerprintError as error:
            graphs, fallback = {}, str(error)
        signatures = []
        for sig in meta.signatures:
            if sig.name.startswith("__"):
                continue
            graph = graphs.get(sig.name)
            signatures.append(
                {
                    "name": sig.name,
                    "inputs": [t.as_dict() for t in sig.inputs],
                    "outputs": [t.as_dict() for t in sig.outputs],
                    "fingerprint": None
                    if graph is None
                    else {
                        "digest": graph.digest,
                        "graph": graph.graph,
                        "captures": [
                            {"kind": c.kind, "name": c.name, "digest": c.digest}
                            for c in graph.captures
                        ],
                    },
                }
            )
        meta_graphs.append(
            {"tags": list(meta.tags), "fingerprint_fallback": fallback, "signatures": signatures}
        )
    return {"path": str(folder), "meta_graphs": meta_graphs}


def inspect_source(source: KerasSource | PythonSource) -> dict[str, Any]:
    """A Keras file's or Python source's signatures, as a graph model build would convert them.

    Unlike `inspect_saved_model` this imports TensorFlow, and for a Python source runs its code.
    """
    from tfjsbuild.worker import loaders

    digest = source_digest(source, StatCache())
    with tempfile.TemporaryDirectory(prefix="tfjs-build-inspect-") as scratch:
        signatures = loaders.describe(source, Path(scratch))
    payload: dict[str, Any] = {"kind": source.kind, "fingerprint": digest}
    payload.update(kind_of(source).inspect_fields(source))
    payload["signatures"] = signatures
    return payload


def converter_options(**options: Any) -> ConverterOptions:
    """Converter options from keyword arguments, checked against the manifest schema."""
    import jsonschema

    schema = dict(manifest_schema()["$defs"]["options"])
    schema["$defs"] = manifest_schema()["$defs"]
    try:
        jsonschema.validate(options, schema, cls=jsonschema.Draft202012Validator)
    except jsonschema.ValidationError as error:
        where = ".".join(str(p) for p in error.absolute_path) or "options"
        raise UsageError(f"invalid converter option {where}: {error.message}") from None
    for path, value in non_finite_numbers(options):  # JSON Schema cannot say "finite"
        raise UsageError(
            f"invalid converter option {format_key_path(path)}: {value} is not a finite number "
            "(model.json is JSON, which has no NaN or infinity)"
        )
    return ConverterOptions.from_mapping({**BUILTIN_OPTIONS, **options})


def convert_concrete_function(
    function: Any, output_dir: str | Path, **options: Any
) -> GraphModelOutput:
    """Convert a tf.function or ConcreteFunction into a graph model at `output_dir`, atomically.

    Options are the manifest's converter options (quantization, weight_shard_size_bytes, ...).
    Raises unless a complete, loadable model.json with all its shards was written.
    """
    from tfjsbuild.worker import convert  # TensorFlow: the caller has it loaded already

    resolved = converter_options(**options)
    target = Path(output_dir).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(
        tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".staging", dir=target.parent)
    )
    try:
        result = convert.convert_concrete_function(function, staging, resolved)
        swap_directory(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return result
