"""Every hostile cache entry in tests/negative/cache is a miss with its exact warning.

One real build fills a cache; each case copies that cache into a project of its own, plants
its hostile entry (or link) and runs the real CLI. A miss must warn, rebuild (not restore),
write byte-identical outputs, touch nothing outside the project and never exit 3.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from test_cache import s3  # noqa: F401  (the moto S3 fixture, for the remote cases)

from tfjsbuild.stores.cache_entry import sign

CASES = Path(__file__).parent / "negative" / "cache"
NAMES = sorted(path.stem for path in CASES.glob("*.json"))
MANIFEST = """\
version: 1
models:
  multi:
    saved_model: multi
    signatures: [regress]
"""
REMOTE = "s3://models/tfjs-cache"
SIGNATURE_KEY_ENV = "TFJS_BUILD_CACHE_SIGNATURE_KEY"
_PLACEHOLDER = re.compile(r"\{([a-z0-9_]+)\}")


@dataclass(frozen=True)
class Built:
    """The reference build: its project folder, its cache, and its one entry."""

    root: Path
    cache: Path
    key: str
    entry: dict[str, Any]


def run(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != SIGNATURE_KEY_ENV}
    return subprocess.run(
        [sys.executable, "-m", "tfjsbuild", *args],
        cwd=cwd,
        env={**environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, model_store: Callable[..., Path]) -> Built:
    root = tmp_path_factory.mktemp("reference")
    shutil.copytree(model_store("multihead"), root / "multi")
    (root / "tfjs-build.yaml").write_text(MANIFEST)
    done = run("run", "--json", cwd=root, env={})
    assert done.returncode == 0, done.stderr
    assert [s["status"] for s in json.loads(done.stdout)["signatures"]] == ["built"]
    cache = root / ".tfjs-build/cache"
    (entry_file,) = cache.glob("entries/*/*.json")
    return Built(root, cache, entry_file.stem, json.loads(entry_file.read_text()))


def test_every_case_has_an_expected_outcome() -> None:
    assert NAMES
    assert sorted(p.stem for p in CASES.glob("*.expected")) == NAMES
    for name in NAMES:
        assert json.loads((CASES / f"{name}.json").read_text()).get("about"), name


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_hostile_cache_entry(
    name: str, built: Built, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    case = json.loads((CASES / f"{name}.json").read_text())
    outcome, warnings = expected(name)
    remote = case.get("store") == "remote"
    project = tmp_path / "project"
    outside = tmp_path / "outside"  # where a hostile entry would like to read or write
    outside.mkdir()
    (outside / ".bashrc").write_text("# the user's own file\n")
    shutil.copytree(built.root / "multi", project / "multi")
    manifest = MANIFEST + (f"cache: {{remote: '{REMOTE}', mode: r}}\n" if remote else "")
    (project / "tfjs-build.yaml").write_text(manifest)
    cache = project / ".tfjs-build/cache"
    shutil.copytree(built.cache, cache, symlinks=True)

    values = {**placeholders(built, outside, case), "project": str(project)}
    entry = plant(case, built, values)
    if remote:
        request.getfixturevalue("s3")
        upload(cache, plantings(case, built, values, entry))
        shutil.rmtree(cache)
        values["cache"] = REMOTE
    else:
        for relative, data in plantings(case, built, values, entry).items():
            (cache / relative).parent.mkdir(parents=True, exist_ok=True)
            (cache / relative).write_bytes(data)
        for at, target in case.get("link", {}).items():
            link, goal = cache / fill(at, values), Path(fill(target, values))
            if not goal.exists():  # a naive follower would find the real content there
                os.rename(link, goal)
            else:
                link.unlink()
            link.symlink_to(goal)
        values["cache"] = str(cache)
    before = snapshot(tmp_path, skip=project)

    cache_flag = ["--cache", "local:off,remote:r"] if remote else []
    env = {k: fill(v, values) for k, v in case.get("env", {}).items()}
    done = run("run", "--json", *cache_flag, cwd=project, env=env)

    assert done.returncode != 3, done.stderr
    assert done.returncode == 0, done.stderr
    statuses = [s["status"] for s in json.loads(done.stdout)["signatures"]]
    assert statuses == (["built"] if outcome == "miss" else ["restored"])
    assert warned(done.stderr) == [fill(w, values) for w in warnings]
    assert outputs(project) == outputs(built.root)
    assert snapshot(tmp_path, skip=project) == before


def expected(name: str) -> tuple[str, list[str]]:
    """(outcome, warnings) from NAME.expected: `outcome: miss|restored`, then `warning:` lines."""
    first, *rest = (CASES / f"{name}.expected").read_text("utf-8").splitlines()
    assert first in ("outcome: miss", "outcome: restored"), f"{name}.expected: {first}"
    assert all(line.startswith("warning: ") for line in rest), f"{name}.expected"
    return first.removeprefix("outcome: "), [line.removeprefix("warning: ") for line in rest]


def placeholders(built: Built, outside: Path, case: dict[str, Any]) -> dict[str, Any]:
    model_json, shard = built.entry["files"][0], built.entry["files"][1]
    assert (model_json["path"], shard["path"]) == ("model.json", "group1-shard1of1.bin")
    values: dict[str, Any] = {
        "outside": str(outside),
        "key": built.key,
        "entry": f"entries/{built.key[:2]}/{built.key}.json",
        "entry_prefix": built.key[:2],
        "model_json_sha256": model_json["sha256"],
        "model_json_sha256_12": model_json["sha256"][:12],
        "model_json_prefix": model_json["sha256"][:2],
    }
    if "blob" in case:
        data = blob_bytes(case)
        values["blob_sha256"] = hashlib.sha256(data).hexdigest()
        values["blob_size"] = len(data)
    return values


def blob_bytes(case: dict[str, Any]) -> bytes:
    blob = case["blob"]
    return (blob if isinstance(blob, str) else json.dumps(blob)).encode()


def fill(value: Any, values: dict[str, Any]) -> Any:
    """Placeholders in strings; a string that is one placeholder takes its value's type."""
    if isinstance(value, str):
        whole = _PLACEHOLDER.fullmatch(value)
        if whole:
            return values[whole[1]]
        return _PLACEHOLDER.sub(lambda m: str(values[m[1]]), value)
    if isinstance(value, list):
        return [fill(item, values) for item in value]
    if isinstance(value, dict):
        return {key: fill(item, values) for key, item in value.items()}
    return value


def plant(case: dict[str, Any], built: Built, values: dict[str, Any]) -> str | None:
    """The hostile entry's text, or None when the case plants links only."""
    if not {"set", "add", "sign_with", "then_set", "pad_to"} & case.keys():
        return None
    data = json.loads(json.dumps(built.entry))
    edit(data, case.get("set", {}), values)
    for at, item in case.get("add", {}).items():
        locate(data, at.split("."))[0][at.split(".")[-1]].append(fill(item, values))
    if "sign_with" in case:
        data["signature"] = sign(
            {k: v for k, v in data.items() if k != "signature"}, case["sign_with"]
        )
    edit(data, case.get("then_set", {}), values)
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return text + " " * (case.get("pad_to", 0) - len(text))


def edit(data: dict[str, Any], changes: dict[str, Any], values: dict[str, Any]) -> None:
    for at, value in changes.items():
        parent, last = locate(data, at.split("."))
        parent[last] = fill(value, values)


def locate(data: Any, parts: list[str]) -> tuple[Any, Any]:
    """The container of the dotted path `parts` and the last key (an index for lists)."""
    for part in parts[:-1]:
        data = data[int(part)] if isinstance(data, list) else data[part]
    last = parts[-1]
    return data, int(last) if isinstance(data, list) else last


def plantings(
    case: dict[str, Any], built: Built, values: dict[str, Any], entry: str | None
) -> dict[str, bytes]:
    """Cache-relative path -> bytes to write: the hostile entry and the case's blob."""
    written = {}
    if entry is not None:
        written[values["entry"]] = entry.encode()
    if "blob" in case:
        sha = values["blob_sha256"]
        written[f"blobs/{sha[:2]}/{sha}"] = blob_bytes(case)
    return written


def upload(cache: Path, planted: dict[str, bytes]) -> None:
    """The reference cache, then the planted files, into the moto bucket under tfjs-cache/."""
    import boto3

    client = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    files = {
        p.relative_to(cache).as_posix(): p.read_bytes() for p in cache.rglob("*") if p.is_file()
    }
    for relative, data in {**files, **planted}.items():
        client.put_object(Bucket="models", Key=f"tfjs-cache/{relative}", Body=data)


def warned(stderr: str) -> list[str]:
    """The warnings a run printed, one `warning:` line each."""
    return re.findall(r"^warning: (.*)$", stderr, flags=re.MULTILINE)


def outputs(root: Path) -> dict[str, bytes]:
    dist = root / "dist"
    return {p.relative_to(dist).as_posix(): p.read_bytes() for p in dist.rglob("*") if p.is_file()}


def snapshot(folder: Path, skip: Path) -> dict[str, tuple[Any, ...]]:
    """Everything below `folder` except `skip`: kind, link target or content, and mtime."""
    seen: dict[str, tuple[Any, ...]] = {}
    for path in sorted(folder.rglob("*")):
        if path == skip or skip in path.parents:
            continue
        info = path.lstat()
        if path.is_symlink():
            seen[str(path)] = ("link", os.readlink(path), info.st_mtime_ns)
        elif path.is_file():
            seen[str(path)] = ("file", path.read_bytes(), info.st_mtime_ns)
        else:
            seen[str(path)] = ("folder", info.st_mtime_ns)
    return seen
