"""Where outputs are staged before they are swapped into place, and clearing it.

Staging is on the outputs' own mount, so that the swap into place is a rename: a failed or
interrupted build leaves the previous outputs as they were and, once staging is cleared,
nothing of its own.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from tfjsbuild.building.project import Project
from tfjsbuild.files.filesystem import OUTPUT_REMEDY, refusals_reported
from tfjsbuild.manifest.types import OUTPUT_STAGING_DIR, Manifest

STAGING_DIR = "staging"


def staging_root(project: Project) -> Path:
    """Where to stage outputs: on the outputs' mount, so that the swap is a rename.

    Tried, not guessed: a bind mount has the device number of the folder it shows, yet a rename
    across two mounts fails (EXDEV), and so does a rename out of a full or read-only
    `.tfjs-build`. An empty folder renamed from `.tfjs-build/staging` into output_dir tells;
    if it cannot be, outputs are staged beside them, in `output_dir/.tfjs-build-staging`.
    Creating that folder is also the check that output_dir is writable, before any conversion.
    """
    state_staging = project.manifest.state_dir / STAGING_DIR
    output_dir = project.manifest.output_dir
    beside = output_dir / OUTPUT_STAGING_DIR
    with refusals_reported(output_dir, "output folder", OUTPUT_REMEDY):
        beside.mkdir(parents=True, exist_ok=True)
    probe = state_staging / "rename-probe"
    try:
        probe.mkdir(parents=True, exist_ok=True)
        os.rename(probe, beside / probe.name)
    except OSError:
        with contextlib.suppress(OSError):
            probe.rmdir()
            state_staging.rmdir()  # only if empty: leave nothing behind
        return beside
    shutil.rmtree(beside, ignore_errors=True)
    return state_staging


def remove_staging(manifest: Manifest) -> None:
    """Every place staging may be, chosen or not (`staging_root` may not have returned yet)."""
    for root in (manifest.state_dir / STAGING_DIR, manifest.output_dir / OUTPUT_STAGING_DIR):
        shutil.rmtree(root, ignore_errors=True)
