"""Which manifests a command works on: those named, and those found below `--all` folders.

Loading and checking each manifest is `manifest/`'s; what is checked here is what only shows
across manifests (one inside another's output folder, two sharing an output_dir). Nothing here
plans or builds.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from tfjsbuild.errors import ManifestError, Problem, UsageError
from tfjsbuild.manifest.load import load_manifest
from tfjsbuild.manifest.types import MANIFEST_NAME, Manifest

# Folders never searched by --all: build outputs, dependencies and VCS data.
SKIPPED_FOLDERS = {".git", ".tfjs-build", "node_modules", "__pycache__", ".venv", "venv"}


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
    """The manifests named and those below `all_dirs`, each once; the default one if none is."""
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
                output_dir_problem(
                    manifest,
                    f"output_dir {manifest.output_dir} is also the output_dir of {other.path}: "
                    f"the two would overwrite each other's {manifest.index_path.name} (and "
                    "outputs); give each manifest its own output_dir",
                )
            )
    if problems:
        raise ManifestError(problems)


def output_dir_problem(manifest: Manifest, message: str) -> Problem:
    """A problem located where the manifest names its output_dir (or its layout)."""
    return manifest.problem(manifest.output_dir_location or manifest.layout_location, message)
