"""Who wrote an output_dir's asset index (`tfjs-build.json`), read back untrusted: a manifest
never writes or deletes an index another manifest wrote. Nothing here writes.
"""

from __future__ import annotations

import os
from pathlib import Path

from tfjsbuild.files.readback import InvalidData, as_dict, as_str, parse_json
from tfjsbuild.manifest.types import Manifest


def index_owner_problem(manifest: Manifest) -> str | None:
    """Why `manifest` must not write or delete its output_dir's asset index: another manifest
    wrote it (two manifests with one output_dir would overwrite each other's index)."""
    index = manifest.index_path
    try:
        if not index.is_file():  # none yet, or a fifo that would hang the read
            return None
        data = parse_json(index.read_bytes())
        owner = as_str(as_dict(data, "").get("manifest"), "manifest")
        other = Path(os.path.normpath(manifest.output_dir / owner))
        if other == manifest.path.resolve() or not other.is_file():
            return None  # ours, or its manifest is gone (renamed or deleted)
    except (OSError, InvalidData):
        return None  # one this tool cannot read, or one of before it named its writer
    return (
        f"{index} was written by the manifest {other}, which uses the same output_dir: the two "
        "would overwrite each other's asset index (and outputs); give each manifest its own "
        f"output_dir (if {other.name} no longer uses this one, delete {index})"
    )
