"""Resolve a manifest's models into (model, signature) targets, checking what needs the source.

A source that is missing or a signature the SavedModel does not have blocks only that model's
signatures; their messages use the manifest's located error format. Output collisions found
once "*" is expanded are manifest errors.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tfjsbuild.errors import ManifestError
from tfjsbuild.manifest import (
    ALL_SIGNATURES,
    KerasSource,
    Manifest,
    ModelSpec,
    PythonSource,
    SavedModelSource,
    layout_signature_problems,
    output_problems,
    signature_claims,
)
from tfjsbuild.plan import PlanItem, Target
from tfjsbuild.savedmodel import SavedModelError, find_meta_graph


@dataclass
class Resolution:
    targets: list[Target] = field(default_factory=list)
    blocked: list[PlanItem] = field(default_factory=list)


SignatureLister = Callable[[SavedModelSource], list[str]]


def list_signatures(source: SavedModelSource) -> list[str]:
    return find_meta_graph(source.path, source.tags).signature_names()


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
            spec = specs.get(name)
            relative = manifest.output_for(model.name, name, spec.output if spec else None)
            output = os.path.relpath(manifest.output_dir / relative, manifest.root)
            resolution.targets.append(
                Target(
                    manifest=manifest.path,
                    model=model.name,
                    signature=name,
                    source=model.source,
                    options=spec.options if spec is not None else model.options,
                    output=Path(output).as_posix(),
                )
            )
    # "*" is expanded now: check layouts and outputs again with the real names.
    if any(model.signatures is None for model in manifest.models):
        claims = [
            claim
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
            raise ManifestError(
                manifest.problem(location, message) for location, message in located
            )
    return resolution


def _blocked(manifest: Manifest, model: ModelSpec, name: str, message: str) -> PlanItem:
    return PlanItem(
        manifest=manifest.path,
        model=model.name,
        signature=name,
        output="",
        action="build",
        reasons=("cannot build",),
        blocked=message,
    )


def _signature_names(
    manifest: Manifest, model: ModelSpec, lister: SignatureLister
) -> tuple[list[str], dict[str, str]]:
    """The signature names that can be built, and a located message for each that cannot."""
    declared = [spec.name for spec in model.signatures] if model.signatures is not None else []

    def whole_model(message: str) -> tuple[list[str], dict[str, str]]:
        text = manifest.problem(model.source_location, message).format()
        return [], {name: text for name in declared or [ALL_SIGNATURES]}

    source = model.source
    if isinstance(source, KerasSource | PythonSource):
        return whole_model(
            f"{source.kind} sources are not implemented yet in this version of tfjs-build; "
            "export a SavedModel and use `saved_model:` for now"
        )
    assert isinstance(source, SavedModelSource)
    if not source.path.exists():
        return whole_model(
            f"SavedModel folder {source.path} does not exist (paths are relative to "
            f"{manifest.root}); export the model there or fix the path"
        )
    try:
        available = lister(source)
    except SavedModelError as error:
        return whole_model(str(error))
    if model.signatures is None:
        if not available:
            return whole_model(f"{source.path} exports no signatures")
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
            f"signature '{spec.name}' is not in {source.path} (it has: "
            f"{', '.join(available) or 'none'}){hint}",
        ).format()
    return names, problems
