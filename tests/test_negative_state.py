"""Every tampered state file in tests/negative/state gets exactly its expected warning and outcome.

A real project (two signatures, converted and cached once per session) is copied per case, its
state tampered with, and built again with the real CLI. Invalid records are dropped with a
warning and rebuilt (restored from the local cache), never trusted, never persisted, and nothing
outside the output folder is touched.
"""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import tfjsbuild
from conftest import run_cli
from tfjsbuild.stores.state import load_state

pytestmark = pytest.mark.slow

CASES = Path(__file__).parent / "negative" / "state"
NAMES = sorted(path.stem for path in CASES.glob("*.json"))
STATE = ".tfjs-build/manifests/tfjs-build.yaml/state.json"
MANIFEST = (
    "version: 1\nmodels:\n  a:\n    saved_model: multi\n    signatures: [features, regress]\n"
)


def test_every_case_has_an_expected_outcome() -> None:
    assert NAMES
    assert sorted(p.stem for p in CASES.glob("*.expected")) == NAMES


@pytest.fixture(scope="session")
def built_project(
    tmp_path_factory: pytest.TempPathFactory, model_store: Callable[..., Path]
) -> Path:
    root = tmp_path_factory.mktemp("state-cases") / "proj"
    root.mkdir()
    shutil.copytree(model_store("multihead"), root / "multi")
    (root / "tfjs-build.yaml").write_text(MANIFEST)
    result = tfjsbuild.build([root / "tfjs-build.yaml"], jobs=1)
    assert result.ok, [r.error for r in result.failed]
    return root


def expected_outcome(name: str) -> tuple[int, str, list[str]]:
    text = (CASES / f"{name}.expected").read_text("utf-8")
    first, *lines = text.splitlines()
    assert first.startswith("exit: "), f"{name}.expected must start with 'exit: N'"
    blank = lines.index("")
    stderr = "".join(f"{line}\n" for line in lines[:blank])
    return int(first.removeprefix("exit: ")), stderr, [line for line in lines[blank + 1 :] if line]


def _slots(node: Any, keys: list[Any]) -> list[tuple[Any, Any]]:
    """(container, key) pairs that `keys` names; "*" is every key of an object."""
    names = list(node) if keys[0] == "*" else [keys[0]]
    if len(keys) == 1:
        return [(node, name) for name in names]
    return [slot for name in names for slot in _slots(node[name], keys[1:])]


def tamper(state_file: Path, case: Path, root: Path) -> None:
    text = case.read_text("utf-8")
    try:
        patch = json.loads(text)
    except (ValueError, RecursionError):
        patch = None
    if not (isinstance(patch, dict) and "$patch" in patch):
        state_file.write_text(text)  # a whole state file, as it is
        return
    state = json.loads(state_file.read_text())
    for operation in patch["$patch"]:
        for container, key in _slots(state, operation["at"]):
            if operation.get("delete"):
                del container[key]
            elif "copy" in operation:
                ((source, source_key),) = _slots(state, operation["copy"])
                container[key] = copy.deepcopy(source[source_key])
            else:
                container[key] = operation["set"]
    state_file.write_text(json.dumps(state))
    for link, target in patch.get("$symlinks", {}).items():
        (root / link).symlink_to(target)


def snapshot(*folders: Path) -> dict[str, bytes]:
    return {
        str(path): path.read_bytes()
        for folder in folders
        for path in sorted(folder.rglob("*"))
        if path.is_file() and not path.is_symlink()
    }


@pytest.mark.parametrize("name", NAMES)
def test_tampered_state(name: str, built_project: Path, tmp_path: Path) -> None:
    root = (tmp_path / "proj").resolve()
    shutil.copytree(built_project, root, symlinks=True)
    # What a trusted bad record could point at: a folder outside, and the model source.
    outside = root.parent / "outside"
    shutil.copytree(root / "dist/a/features", outside / "features")
    (outside / "secret.txt").write_text("not tfjs-build's")
    state_file = root / STATE
    tamper(state_file, CASES / f"{name}.json", root)
    guarded = snapshot(outside, root / "multi")

    done = run_cli("run", "--json", "-j", "1", cwd=root, timeout=300)

    assert done.returncode != 3, done.stderr
    exit_code, stderr, statuses = expected_outcome(name)
    stderr = stderr.replace("{state}", str(state_file)).replace("{root}", str(root))
    assert (done.returncode, done.stderr) == (exit_code, stderr)
    report = json.loads(done.stdout)
    assert [f"{s['model']}:{s['signature']} {s['status']}" for s in report["signatures"]] == (
        statuses
    )
    # Nothing invalid persists: the state left behind loads without a warning, all of it.
    state, warnings = load_state(state_file.parent, root=root, output_dir=root / "dist")
    assert warnings == []
    payload = json.loads(state_file.read_text())
    assert sorted(payload["signatures"]) == sorted(state.records) == ["a:features", "a:regress"]
    assert payload["stat_cache"] == state.stat_cache
    assert payload["graph_cache"] == state.to_json_dict()["graph_cache"]
    # Nothing outside the output folder was deleted or changed; the outputs are whole.
    assert snapshot(outside, root / "multi") == guarded
    for signature in ("features", "regress"):
        assert sorted(p.name for p in (root / "dist/a" / signature).iterdir()) == [
            "group1-shard1of1.bin",
            "model.json",
        ]
