"""The versioned state file of the last successful builds (the build lock is `lock`'s).

Only the parent process writes state. The file is JSON with sorted keys, written atomically and
only when its content changed. It is read back untrusted (it may be restored from another
machine's CI cache, or edited): every record is checked before use, and one that does not have
the shape this tool writes, or whose output is not inside output_dir, is dropped with a warning.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from tfjsbuild.errors import BuildError
from tfjsbuild.files.atomic import write_atomically
from tfjsbuild.files.filesystem import refusals_reported
from tfjsbuild.files.json_types import JsonObject
from tfjsbuild.files.readback import (
    InvalidData,
    as_dict,
    as_int,
    as_list,
    as_sha256,
    as_str,
    parse_json,
)
from tfjsbuild.files.shared_weights import shared_path
from tfjsbuild.manifest.types import STATE_ROOT
from tfjsbuild.sources.base import GraphCacheEntry
from tfjsbuild.stores.records import SignatureRecord, output_folder

T = TypeVar("T")

STATE_VERSION = 1
STATE_FILE = "state.json"
STATE_REMEDY = (
    f"make it writable: tfjs-build keeps its state and lock in {STATE_ROOT} beside the manifest"
)


@dataclass
class BuildState:
    records: dict[str, SignatureRecord] = field(default_factory=dict)
    stat_cache: dict[str, list[Any]] = field(default_factory=dict)
    # source digest -> signature -> graph fingerprint: an unchanged model is not parsed again
    graph_cache: dict[str, GraphCacheEntry] = field(default_factory=dict)
    # Shared weight shards this manifest wrote (path below output_dir -> sha256 of its bytes),
    # recorded before each is written: only these are ever deleted from the shared folder.
    shared_weights: dict[str, str] = field(default_factory=dict)
    # An output with `share_weights` was placed (or one removed) and not laid out since: the
    # next build lays the shared weights out again, even if a build stopped before it did.
    layout_pending: bool = False

    # What the file held when loaded or last saved: an unchanged state is not serialised again.
    saved_json: JsonObject | None = field(default=None, compare=False, repr=False)
    # A state file of the shared layout (`.tfjs-build/state.json`) this state was read from:
    # removed once this state is saved in the manifest's own folder.
    adopted_from: Path | None = field(default=None, compare=False, repr=False)

    def to_json_dict(self) -> JsonObject:
        """The state file's content: the one place the state becomes JSON."""
        return {
            "version": STATE_VERSION,
            "signatures": {key: record.to_json() for key, record in sorted(self.records.items())},
            "stat_cache": self.stat_cache,
            "graph_cache": {key: entry.to_json_dict() for key, entry in self.graph_cache.items()},
            # Only when some are: a state without shared weights stays as it was written.
            **(
                {"shared_weights": dict(sorted(self.shared_weights.items()))}
                if self.shared_weights
                else {}
            ),
            **({"layout_pending": True} if self.layout_pending else {}),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_json_dict(), sort_keys=True, indent=1, allow_nan=False) + "\n"


def state_path(state_dir: Path) -> Path:
    return state_dir / STATE_FILE


def load_state(
    state_dir: Path,
    *,
    root: Path | None = None,
    output_dir: Path | None = None,
    adopt: Path | None = None,
    consequence: str = "it will be rebuilt",
) -> tuple[BuildState, list[str]]:
    """The recorded state and warnings: a record that fails its checks is dropped (and said so,
    with `consequence`); an unreadable file is an empty state.

    With `root` and `output_dir` (the manifest's), a record whose output is not a folder inside
    output_dir, reached without a symbolic link, is dropped too. `adopt` is a state folder of the
    old shared layout, read when `state_dir` has no state yet (see `save_state`).
    """
    path = state_path(state_dir)
    adopted = None
    if not path.exists() and adopt is not None and state_path(adopt).is_file():
        path = adopted = state_path(adopt)
    if not path.exists():
        return BuildState(), []
    if not path.is_file():  # a folder cannot be rewritten, and a fifo would hang the read
        raise BuildError(
            f"{path} is not a file: tfjs-build keeps the build state there; remove it and run "
            "again (everything is rebuilt)"
        )
    payload = _read_payload(path)
    if isinstance(payload, str):
        return BuildState(adopted_from=adopted), [
            f"{path}{payload}: rebuilding everything (it will be rewritten)"
        ]
    records, warnings = _checked_records(payload["signatures"], path, root, output_dir, consequence)
    # Caches of digests: an entry that does not check out is simply computed again.
    stat_cache = _valid_entries(payload.get("stat_cache"), _stat_entry)
    graph_cache = _valid_entries(payload.get("graph_cache"), GraphCacheEntry.from_json_dict)
    shared = _shared_weights(payload.get("shared_weights"))
    # Anything but false is pending: laying out again is only ever a little work too many.
    pending = payload.get("layout_pending", False) is not False
    state = BuildState(records, stat_cache, graph_cache, shared, pending, saved_json=payload)
    if adopted is not None:
        state.saved_json, state.adopted_from = None, adopted
    return state, warnings


def _read_payload(path: Path) -> dict[str, Any] | str:
    """The state file's JSON object, of this version, with a `signatures` object; or why it is
    not one (the rest of a sentence that starts with the path)."""
    try:
        payload = parse_json(path.read_bytes())
    except (OSError, InvalidData) as error:
        why = str(error) if isinstance(error, InvalidData) else f"{type(error).__name__}: {error}"
        return f" is unreadable ({why})"
    if not isinstance(payload, dict):
        return f" is not a tfjs-build state (expected an object, got {type(payload).__name__})"
    version = payload.get("version")
    if version != STATE_VERSION:
        return f" has state version {version!r}, this tfjs-build reads version {STATE_VERSION}"
    try:
        as_dict(payload.get("signatures"), "signatures")
    except InvalidData as error:
        return f": {error}"
    return payload


def _checked_records(
    signatures: dict[str, Any],
    path: Path,
    root: Path | None,
    output_dir: Path | None,
    consequence: str,
) -> tuple[dict[str, SignatureRecord], list[str]]:
    """The records that pass their checks, and a warning for each one dropped."""
    records: dict[str, SignatureRecord] = {}
    warnings = []
    for key, value in signatures.items():
        shown = key if key.isprintable() else repr(key)
        where = f"signatures.{shown}"
        try:
            record = SignatureRecord.from_json(value, where)
            if record.key != key:
                raise InvalidData(
                    where, f"is the record of {record.key!r}, filed under another key"
                )
            if root is not None and output_dir is not None:
                output_folder(root, output_dir, record.output, f"{where}.output")
        except InvalidData as error:
            warnings.append(f"{path}: record {shown} dropped: {error}; {consequence}")
            continue
        records[key] = record
    return records, warnings


def _valid_entries(data: Any, check: Callable[[Any], T]) -> dict[str, T]:
    if not isinstance(data, dict):
        return {}
    entries: dict[str, T] = {}
    for key, value in data.items():
        try:
            entries[as_str(key, "key")] = check(value)
        except InvalidData:
            continue
    return entries


def _shared_weights(data: Any) -> dict[str, str]:
    """The shared shards recorded as written. One that does not check out is forgotten: its
    file, if there is one, is then never deleted (only what the state proves is ours is)."""
    entries: dict[str, str] = {}
    for key, value in data.items() if isinstance(data, dict) else ():
        try:
            entries[shared_path(key, "shared_weights")] = as_sha256(value, "shared_weights")
        except InvalidData:
            continue
    return entries


def _stat_entry(value: Any) -> list[Any]:
    """[size, mtime_ns, inode, sha256], as `fingerprint.StatCache` keeps them."""
    items = as_list(value, "")
    if len(items) != 4:
        raise InvalidData("", "expected [size, mtime_ns, inode, sha256]")
    return [
        as_int(items[0], "size"),
        as_int(items[1], "mtime_ns", minimum=-(2**63)),
        as_int(items[2], "inode"),
        as_sha256(items[3], "sha256"),
    ]


def save_state(state_dir: Path, state: BuildState) -> bool:
    """Write the state if it changed; True when written."""
    path = state_path(state_dir)
    payload = state.to_json_dict()
    if payload == state.saved_json and path.exists():
        return False
    text = json.dumps(payload, sort_keys=True, indent=1, allow_nan=False) + "\n"
    # The file is replaced whole or not at all: on failure it still describes the outputs of
    # the previous records, and an output swapped in since is "changed" to the next plan.
    with refusals_reported(
        state_dir,
        "state folder",
        STATE_REMEDY,
        doing=f"cannot write {path}: ",
        after="; the next run checks again what this one built but could not record",
    ):
        write_atomically(path, text)
    state.saved_json = payload
    if state.adopted_from is not None:
        # Saved in the manifest's own folder now: the shared file must not be adopted again.
        state.adopted_from.unlink(missing_ok=True)
        state.adopted_from = None
    return True
