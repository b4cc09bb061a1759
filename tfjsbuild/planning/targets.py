"""Resolve a manifest's models into (model, signature) targets, checking what needs the source.

A source that is missing or a signature the SavedModel does not have blocks only that model's
signatures; their messages use the manifest's located error format. Output collisions found
once "*" is expanded are manifest errors. Nothing here fingerprints or decides an action: that
is the plan's (`plan.py`), which imports the targets from here.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from tfjsbuild.errors import ManifestError
from tfjsbuild.manifest.output_rules import (
    layout_signature_problems,
    output_problems,
    signature_claims,
)
from tfjsbuild.manifest.types import (
    ALL_SIGNATURES,
    Checks,
    ConverterOptions,
    Location,
    Manifest,
    ModelSpec,
    SignatureSpec,
    Source,
)
from tfjsbuild.sources.base import SignatureLister
from tfjsbuild.sources.registry import kind_of
from tfjsbuild.sources.saved_model import list_signatures
from tfjsbuild.sources.saved_model_files import SavedModelError


@dataclass(frozen=True)
class Target:
    """One (model, signature) the manifest asks for, resolved against its source."""

    manifest: Path
    model: str
    signature: str
    source: Source
    options: ConverterOptions
    output: str  # relative to the manifest's folder, POSIX separators
    # Where the manifest names the source and the signature, for errors found while converting.
    source_location: Location | None = None
    location: Location | None = None
    checks: Checks = field(default_factory=Checks)
    share_weights: bool = False  # its weights stored once with other signatures' equal ones

    @property
    def key(self) -> str:
        return f"{self.model}:{self.signature}"


@dataclass(frozen=True)
class BlockedTarget:
    """A (model, signature) known before converting not to build, and why (a located message)."""

    manifest: Path
    model: str
    signature: str
    message: str

    @property
    def key(self) -> str:
        return f"{self.model}:{self.signature}"


@dataclass
class Resolution:
    """A manifest's targets, and the signatures known already not to build."""

    targets: list[Target] = field(default_factory=list)
    blocked: list[BlockedTarget] = field(default_factory=list)


def resolve_targets(manifest: Manifest, lister: SignatureLister = list_signatures) -> Resolution:
    """Targets of every model; `lister` names a SavedModel's signatures (raising SavedModelError)."""
    resolution = Resolution()
    names_by_model: dict[str, list[str]] = {}
    for model in manifest.models:
        names, problems = _signature_names(manifest, model, lister)
        for name, message in problems.items():
            resolution.blocked.append(_blocked(manifest, model, name, message))
        names_by_model[model.name] = names
        specs = {spec.name: spec for spec in model.signatures or ()}
        for name in names:
            resolved = _target(manifest, model, name, specs.get(name))
            if isinstance(resolved, Target):
                resolution.targets.append(resolved)
            else:
                resolution.blocked.append(resolved)
    # "*" is expanded now: check layouts and outputs again with the real names.
    if any(model.signatures is None for model in manifest.models):
        _check_expanded(manifest, names_by_model)
    return resolution


def _target(
    manifest: Manifest, model: ModelSpec, name: str, spec: SignatureSpec | None
) -> Target | BlockedTarget:
    """One signature's target, or why it cannot build (sample inputs named but missing)."""
    checks = spec.checks if spec is not None else model.checks
    inputs = checks.verify.inputs if checks.verify.enabled else None
    if inputs is not None and not inputs.is_file():
        location = spec.location if spec is not None else model.location
        message = (
            f"verify.inputs {inputs} does not exist: save sample inputs there with "
            "numpy.savez (arrays keyed by input name), or remove verify.inputs"
        )
        return _blocked(manifest, model, name, manifest.problem(location, message).format())
    relative = manifest.output_for(model.name, name, spec.output if spec else None)
    output = os.path.relpath(manifest.output_dir / relative, manifest.root)
    return Target(
        manifest=manifest.path,
        model=model.name,
        signature=name,
        source=model.source,
        options=spec.options if spec is not None else model.options,
        output=Path(output).as_posix(),
        source_location=model.source_location,
        location=spec.location if spec is not None else None,
        checks=checks,
        share_weights=spec.share_weights if spec is not None else model.share_weights,
    )


def _check_expanded(manifest: Manifest, names_by_model: dict[str, list[str]]) -> None:
    """Layouts and output collisions, with "*" expanded to the signatures read from the models."""
    claims = [
        # A name read from the SavedModel is not in the manifest: point at its model.
        claim if model.signatures is not None else replace(claim, location=model.location)
        for model in manifest.models
        for claim in signature_claims(manifest, model, names_by_model[model.name])
    ]
    located = layout_signature_problems(manifest, names_by_model)
    located += output_problems(
        claims,
        manifest.output_dir,
        {m.name: m.source_paths() for m in manifest.models},
        manifest.layout,
    )
    if located:
        raise ManifestError(manifest.problem(location, message) for location, message in located)


def _blocked(manifest: Manifest, model: ModelSpec, name: str, message: str) -> BlockedTarget:
    return BlockedTarget(manifest.path, model.name, name, message)


def _signature_names(
    manifest: Manifest, model: ModelSpec, lister: SignatureLister
) -> tuple[list[str], dict[str, str]]:
    """The signature names that can be built, and a located message for each that cannot."""
    declared = [spec.name for spec in model.signatures] if model.signatures is not None else []

    def whole_model(message: str) -> tuple[list[str], dict[str, str]]:
        text = manifest.problem(model.source_location, message).format()
        return [], {name: text for name in declared or [ALL_SIGNATURES]}

    source = model.source
    kind = kind_of(source)
    problem = kind.problem(source, manifest.root)
    if problem is not None:
        return whole_model(problem)
    try:
        available = kind.signature_names(source, lister)
    except SavedModelError as error:
        return whole_model(str(error))
    if available is None:  # only the manifest names them (a python: source)
        return declared, {}
    if model.signatures is None:
        if not available:
            return whole_model(f"{kind.origin(source)} exports no signatures")
        return available, {}
    names: list[str] = []
    problems: dict[str, str] = {}
    for spec in model.signatures:
        if spec.name in available:
            names.append(spec.name)
            continue
        close = difflib.get_close_matches(spec.name, available, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        problems[spec.name] = manifest.problem(
            spec.location,
            f"signature '{spec.name}' is not in {kind.origin(source)} (it has: "
            f"{', '.join(available) or 'none'}){hint}",
        ).format()
    return names, problems
