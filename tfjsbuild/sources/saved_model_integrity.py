"""Is a SavedModel folder whole? Half-written (`watch` waits for it) or damaged (a worker's
failure to load it names the file to re-export), told from its files without TensorFlow.

Checksums are TensorFlow's to check: this looks at what parses and what sizes add up.
"""

from __future__ import annotations

from pathlib import Path

from tfjsbuild.sources.saved_model_files import (
    CHUNKED_SAVED_MODEL,
    SAVED_MODEL_PB,
    VARIABLES_DIR,
    VARIABLES_INDEX,
    SavedModelError,
    data_shard_path,
    parse_saved_model,
    read_bundle_index,
)


def damage(path: Path) -> str | None:
    """Which file of the SavedModel at `path` is broken, e.g. `variables/variables.index is
    corrupt`, or None when its files look whole (checksums are TensorFlow's to check).

    For messages after TensorFlow failed to load the model: they name the file to re-export.
    """
    pb = path / SAVED_MODEL_PB
    if not pb.is_file() and not (path / CHUNKED_SAVED_MODEL).is_file():
        return f"{SAVED_MODEL_PB} is missing"
    if pb.is_file():
        try:
            parse_saved_model(path)
        except SavedModelError:
            return f"{SAVED_MODEL_PB} is corrupt"
    variables = path / VARIABLES_DIR
    if not variables.is_dir():
        return None
    index = variables / VARIABLES_INDEX
    index_name = f"{VARIABLES_DIR}/{VARIABLES_INDEX}"
    if not index.is_file():
        return f"{index_name} is missing"
    try:
        entries = read_bundle_index(index)
    except (SavedModelError, OSError):
        return f"{index_name} is corrupt"
    sizes: dict[int, int] = {}
    for entry in entries.values():
        try:
            shard = data_shard_path(variables, entry.shard_id)
        except SavedModelError:
            return f"every {VARIABLES_DIR}/variables.data-* shard is missing"
        if entry.shard_id not in sizes:
            sizes[entry.shard_id] = shard.stat().st_size if shard.is_file() else -1
        if sizes[entry.shard_id] < 0:
            return f"{VARIABLES_DIR}/{shard.name} is missing"
        if entry.offset + entry.size > sizes[entry.shard_id]:
            return f"{VARIABLES_DIR}/{shard.name} is truncated"
    return None


def incomplete_reason(path: Path) -> str | None:
    """Why the SavedModel at `path` cannot be read yet (mid-export), or None when it can.

    Complete means: saved_model.pb parses, and every tensor `variables.index` lists lies within
    an existing data shard. An export writes these files over seconds; reading earlier would
    convert a half-written model.
    """
    if not path.exists():
        return f"{path} does not exist (yet)"
    try:
        parse_saved_model(path)
    except SavedModelError as error:
        return str(error)
    variables = path / VARIABLES_DIR
    index = variables / VARIABLES_INDEX
    if not variables.exists():
        return None  # a model without variables
    if not index.is_file():
        return f"{index} is not written yet"
    try:
        entries = read_bundle_index(index)
        sizes: dict[int, int] = {}
        for entry in entries.values():
            if entry.shard_id not in sizes:
                shard = data_shard_path(variables, entry.shard_id)
                sizes[entry.shard_id] = shard.stat().st_size if shard.is_file() else -1
            if entry.offset + entry.size > sizes[entry.shard_id]:
                return f"{variables} has data shards shorter than its index says"
    except (SavedModelError, OSError) as error:
        return f"{index}: {error}"
    return None
