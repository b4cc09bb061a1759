"""Where outputs may go: each signature claims a folder under `output_dir`, and claims must not
escape it, collide, nest in each other, take a name tfjs-build keeps, or touch a model source.

Used twice: when the manifest is loaded (signatures it names) and at plan time (signatures
found by "*"). Nothing here reads files or the YAML document: it works on typed values and
returns located messages.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tfjsbuild.manifest.types import (
    DEFAULT_OUTPUT_DIR,
    RESERVED_OUTPUT_NAMES,
    STATE_ROOT,
    Location,
    Manifest,
    ModelSpec,
)


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


def placement_problems(manifest: Manifest, written_output_dir: str) -> list[tuple[Location, str]]:
    """Every output problem of the signatures a manifest names, and of its output_dir."""
    claims = [
        claim
        for model in manifest.models
        if model.signatures is not None
        for claim in signature_claims(manifest, model, [s.name for s in model.signatures])
    ]
    located = _output_dir_problems(manifest, written_output_dir)
    located += layout_signature_problems(manifest)
    located += output_problems(claims, manifest.output_dir, _source_map(manifest), manifest.layout)
    return located


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
    index = _ClaimIndex(sources)
    for claim in claims:
        misplaced = _misplaced_output(claim)
        if misplaced is not None:
            found.append((claim.location, misplaced))
            continue
        normal = posixpath.normpath(claim.relative)
        other_path = index.taken(normal)
        if other_path is not None:
            other = index.kept[other_path]
            if not (
                "{signature}" not in layout
                and other.model == claim.model
                and other.location == claim.location
            ):
                found.append((claim.location, _collision_message(other, claim, other_path, normal)))
            continue
        index.keep(normal, claim)
        for model, source in index.sources_touched((output_dir / normal).resolve()):
            found.append(
                (
                    claim.location,
                    f"output '{normal}' of {claim.label} overlaps the source of model "
                    f"'{model}' ({source}): outputs are replaced on every build, so keep "
                    "them apart",
                )
            )
    return found


class _ClaimIndex:
    """The outputs kept so far and the model sources, indexed for `output_problems`."""

    def __init__(self, sources: Mapping[str, Sequence[Path]]) -> None:
        # Indexes instead of pairwise checks: a 1,000-signature monorepo plans in milliseconds.
        self.kept: dict[str, OutputClaim] = {}  # normalised output -> claim
        self.below: dict[str, str] = {}  # every proper ancestor of a kept output -> that output
        resolved = [(model, path.resolve()) for model, paths in sources.items() for path in paths]
        self.source_at = {path: model for model, path in resolved}
        self.source_below = {
            parent: (model, path) for model, path in resolved for parent in path.parents
        }

    def taken(self, normal: str) -> str | None:
        """The kept output that `normal` is, is inside, or holds; None when it is free."""
        ancestors = _ancestors(normal)
        return next((p for p in [normal, *ancestors] if p in self.kept), self.below.get(normal))

    def keep(self, normal: str, claim: OutputClaim) -> None:
        self.kept[normal] = claim
        for ancestor in _ancestors(normal):
            self.below.setdefault(ancestor, normal)

    def sources_touched(self, target: Path) -> list[tuple[str, Path]]:
        """(model, source) of every source that is, holds, or is inside `target`."""
        overlaps = [
            (self.source_at[t], t) for t in (target, *target.parents) if t in self.source_at
        ]
        if target in self.source_below:
            overlaps.append(self.source_below[target])
        return overlaps


def _ancestors(normal: str) -> list[str]:
    parts = normal.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


def _misplaced_output(claim: OutputClaim) -> str | None:
    """Why a claim's folder cannot be an output on its own: a NUL byte, a name tfjs-build
    keeps in output_dir, or a path outside output_dir."""
    if "\0" in claim.relative:
        return f"output {claim.relative!r} of {claim.label} contains a NUL byte"
    normal = posixpath.normpath(claim.relative)
    first = normal.split("/")[0]
    if first.casefold() in RESERVED_OUTPUT_NAMES:
        return (
            f"output '{claim.relative}' of {claim.label} "
            f"{'takes the name' if first == normal else 'is inside'} '{first}', which tfjs-build "
            f"keeps for {RESERVED_OUTPUT_NAMES[first.casefold()]} in output_dir: choose "
            "another output"
        )
    if posixpath.isabs(claim.relative) or normal == "." or normal.split("/")[0] == "..":
        return (
            f"output '{claim.relative}' of {claim.label} escapes output_dir: "
            "use a relative folder below it, without '..'"
        )
    return None


def _collision_message(other: OutputClaim, claim: OutputClaim, other_path: str, normal: str) -> str:
    relation = "both go to" if other_path == normal else "nest in each other:"
    return (
        f"{other.label} and {claim.label} {relation} '{other_path}'"
        + ("" if other_path == normal else f" and '{normal}'")
        + "; give one of them its own `output` or change `layout`"
    )


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
