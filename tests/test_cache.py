"""The shared cache: keys, local and remote (S3 API) stores, restores instead of conversions."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import tfjsbuild
from conftest import run_cli
from tfjsbuild.cache import CacheEntry, Store, cache_key, first_entry, resolve_config, serves
from tfjsbuild.errors import UsageError
from tfjsbuild.fingerprint import fingerprint_signature
from tfjsbuild.manifest import ConverterOptions, load_manifest
from tfjsbuild.state import load_state

MANIFEST = """
version: 1
models:
  multi:
    saved_model: multi
"""


def fingerprint(**changes: object) -> str:
    arguments: dict[str, object] = {
        "source": "graph-digest",
        "source_kind": "graph",
        "signature": "classify",
        "tags": ("serve",),
        "options": ConverterOptions(),
        "output": "dist/multi/classify",
        "tools": {"tensorflow": "2.19.0", "tensorflowjs": "4.22.0", "tfjs-build": "0.1.0"},
        "verify": {"samples": 3, "atol": 1e-4, "rtol": 1e-3, "inputs": None, "tfjs": "4.22.0"},
    }
    arguments.update(changes)
    return cache_key(fingerprint_signature(**arguments))  # type: ignore[arg-type]


def test_the_key_changes_with_everything_that_changes_the_output() -> None:
    base = fingerprint()
    changed = {
        "graph or weights": fingerprint(source="other-digest"),
        "signature": fingerprint(signature="features"),
        "tags": fingerprint(tags=("serve", "gpu")),
        "options": fingerprint(options=ConverterOptions(weight_shard_size_bytes=1024)),
        "quantization": fingerprint(options=ConverterOptions(quantization=(("uint8", ("*",)),))),
        "converter version": fingerprint(
            tools={"tensorflow": "2.19.0", "tensorflowjs": "4.21.0", "tfjs-build": "0.1.0"}
        ),
        "tensorflow version": fingerprint(
            tools={"tensorflow": "2.18.0", "tensorflowjs": "4.22.0", "tfjs-build": "0.1.0"}
        ),
    }
    assert base not in changed.values()
    assert len(set(changed.values())) == len(changed)
    # Where the output goes is not part of it: checkouts in other folders share entries.
    assert fingerprint(output="web/models/multi/classify") == base
    # Nor is verification: it does not change the bytes; an entry says what it was verified with.
    assert fingerprint(verify={"samples": 3, "atol": 1.0, "rtol": 1e-3}) == base
    assert fingerprint(verify=None) == base


def test_an_entry_serves_only_the_verification_it_carries(tmp_path: Path) -> None:
    wanted = {"samples": 3, "atol": 1e-4, "rtol": 1e-3, "inputs": None, "tfjs": "4.22.0"}
    passed = {"passed": True, "samples": 3, "atol": 1e-4, "rtol": 1e-3}
    verified = CacheEntry("k" * 64, (), (), (), passed, 1.0, dict(wanted))
    unverified = CacheEntry("k" * 64, (), (), (), None, 1.0, None)
    # A build that verifies nothing (--no-verify, verify.enabled false) takes either.
    assert serves(verified, {}) and serves(unverified, {})
    assert serves(verified, wanted)
    assert not serves(unverified, wanted)
    assert not serves(verified, {**wanted, "atol": 0.5})
    assert not serves(verified, {**wanted, "tfjs": "4.23.0"})
    failed = CacheEntry("k" * 64, (), (), (), {**passed, "passed": False}, 1.0, dict(wanted))
    assert not serves(failed, wanted)
    # What it was verified with survives the round trip through the store's JSON.
    assert CacheEntry.from_json(verified.key, verified.to_json()) == verified
    assert CacheEntry.from_json(unverified.key, unverified.to_json()) == unverified
    bad = json.loads(verified.to_json()) | {"verified_with": 5}
    assert CacheEntry.from_json(verified.key, json.dumps(bad)) is None
    store = Store(str(tmp_path / "cache"), "rw", "local")
    store.put(unverified, tmp_path)
    assert first_entry([store], unverified.key, {}) == (store, unverified)
    assert first_entry([store], unverified.key, wanted) is None


def test_cache_settings_come_from_manifest_environment_and_flag(tmp_path: Path) -> None:
    path = tmp_path / "tfjs-build.yaml"
    path.write_text(
        MANIFEST + "cache: {dir: ../shared-cache, remote: 's3://bucket/tfjs', mode: r}\n"
    )
    manifest = load_manifest(path)
    config = resolve_config(manifest, environ={})
    assert config.local == str(tmp_path.resolve() / "../shared-cache")
    assert (config.local_mode, config.remote, config.remote_mode) == ("r", "s3://bucket/tfjs", "r")
    environ = {"TFJS_BUILD_CACHE": "/ci/cache", "TFJS_BUILD_REMOTE_CACHE": "gs://other/prefix"}
    config = resolve_config(manifest, "local:rw,remote:off", environ=environ)
    assert (config.local, config.local_mode) == ("/ci/cache", "rw")
    assert (config.remote, config.remote_mode) == ("gs://other/prefix", "off")
    assert resolve_config(manifest, "off", environ={}).stores() == []
    default = resolve_config(load_manifest(_write(tmp_path / "b", MANIFEST)), environ={})
    assert default.local == str(tmp_path.resolve() / "b/.tfjs-build/cache")
    assert (default.local_mode, default.remote) == ("rw", None)
    with pytest.raises(UsageError, match=r"--cache local:yes: expected comma-separated"):
        resolve_config(manifest, "local:yes", environ={})


def _write(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tfjs-build.yaml").write_text(text)
    return folder / "tfjs-build.yaml"


def test_a_store_never_restores_a_corrupt_or_partial_entry(tmp_path: Path) -> None:
    output = tmp_path / "output"
    output.mkdir()
    (output / "model.json").write_text('{"modelTopology": {}}')
    (output / "group1-shard1of1.bin").write_bytes(b"\x00" * 64)
    from tfjsbuild.artifacts import check_graph_model

    files = check_graph_model(output).files
    entry = CacheEntry("k" * 64, files, (), (), {"passed": True}, 1.5)
    store = Store(str(tmp_path / "cache"), "rw", "local")
    assert store.get(entry.key) is None
    store.put(entry, output)
    assert store.get(entry.key) == entry
    assert store.fetch(entry, tmp_path / "restored") is None
    assert (tmp_path / "restored/group1-shard1of1.bin").read_bytes() == b"\x00" * 64
    assert not list((tmp_path / "cache").rglob(".tmp-*"))  # temporary names were moved

    shard = next(f for f in files if f.path.endswith(".bin"))
    blob = tmp_path / "cache/blobs" / shard.sha256[:2] / shard.sha256
    blob.write_bytes(b"\x00" * 10)  # truncated
    assert store.fetch(entry, tmp_path / "again") == (
        f"blob {shard.sha256[:12]} of group1-shard1of1.bin is corrupt or truncated"
    )
    # Storing the rebuilt output replaces the bad blob; the entry restores again.
    store.put(entry, output)
    assert store.fetch(entry, tmp_path / "healed") is None
    blob.unlink()
    assert "is missing" in (store.fetch(entry, tmp_path / "again") or "")
    store.put(entry, output)
    assert store.fetch(entry, tmp_path / "healed-again") is None
    # An entry manifest that is not ours or not complete JSON is no entry at all.
    entry_file = next((tmp_path / "cache/entries").rglob("*.json"))
    entry_file.write_text('{"version": 1, "key": "')
    assert store.get(entry.key) is None


@pytest.mark.slow
def test_two_checkouts_share_a_cache_with_zero_conversions(
    tmp_path: Path, model_store: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = tmp_path / "shared-cache"
    monkeypatch.setenv("TFJS_BUILD_CACHE", str(shared))
    first = _write(tmp_path / "alice", MANIFEST)
    second = _write(tmp_path / "bob" / "checkout", MANIFEST)
    for manifest in (first, second):
        shutil.copytree(model_store("multihead"), manifest.parent / "multi")
    built = tfjsbuild.build([first], jobs=2)
    assert {r.status for r in built.results} == {"built"}

    plan = tfjsbuild.plan([second]).items
    assert {(i.action, i.cached) for i in plan} == {("build", "local")}
    done = run_cli("run", "--json", cwd=second.parent)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert {s["status"] for s in report["signatures"]} == {"restored"}
    assert not (second.parent / ".tfjs-build/worker.log").exists()  # no worker ever started
    for signature in ("classify", "features", "regress"):
        a = first.parent / "dist/multi" / signature
        b = second.parent / "dist/multi" / signature
        assert sorted(p.name for p in a.iterdir()) == sorted(p.name for p in b.iterdir())
        for file in a.iterdir():
            assert (b / file.name).read_bytes() == file.read_bytes()
    # Restored outputs carry their verification, and are up to date from then on.
    restored = json.loads((second.parent / "dist/tfjs-build.json").read_text())
    assert restored["models"]["multi"]["classify"]["verification"]["passed"] is True
    assert {i.action for i in tfjsbuild.plan([second]).items} == {"up-to-date"}

    stats = run_cli("cache", "stats", cwd=second.parent)
    assert stats.stdout.startswith(f"local cache {shared}: 3 entries, ")
    prune = run_cli("cache", "prune", "--max-bytes", "0", cwd=second.parent)
    assert prune.returncode == 0
    assert "removed 3 entries; 0 left, 0 B" in prune.stdout
    assert not [p for p in shared.rglob("*") if p.is_file()]


def _entry_json(cache: Path) -> dict[str, object]:
    (entry,) = (cache / "entries").rglob("*.json")
    return json.loads(entry.read_text())  # type: ignore[no-any-return]


@pytest.mark.slow
def test_an_entry_carries_the_verification_it_promises(
    tmp_path: Path, model_store: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = tmp_path / "shared-cache"
    monkeypatch.setenv("TFJS_BUILD_CACHE", str(shared))
    text = MANIFEST + "    signatures: [regress]\n"
    alice, bob = _write(tmp_path / "alice", text), _write(tmp_path / "bob", text)
    for manifest in (alice, bob):
        shutil.copytree(model_store("multihead"), manifest.parent / "multi")
    # Built with --no-verify: stored, and saying it is not verified.
    assert [r.status for r in tfjsbuild.build([alice], verify=False).results] == ["built"]
    assert (_entry_json(shared)["verification"], _entry_json(shared)["verified_with"]) == (
        None,
        None,
    )
    # A build that verifies does not restore it; one that does not verify does.
    assert [(i.action, i.cached) for i in tfjsbuild.plan([bob]).items] == [("build", None)]
    assert [i.cached for i in tfjsbuild.plan([bob], verify=False).items] == ["local"]
    # Verifying the output in place updates the entry: it now carries that verification.
    assert [r.status for r in tfjsbuild.build([alice]).results] == ["verified"]
    entry = _entry_json(shared)
    recorded = load_state(alice.parent / ".tfjs-build")[0].records["multi:regress"]
    assert entry["verification"] == recorded.verification
    assert recorded.verified_with is not None and recorded.verified_with["atol"] == 1e-4
    assert entry["verified_with"] == recorded.verified_with
    restored = tfjsbuild.build([bob])
    assert [(r.status, r.cache) for r in restored.results] == [("restored", "local")]
    bob_record = load_state(bob.parent / ".tfjs-build")[0].records["multi:regress"]
    assert (bob_record.verification, bob_record.verified_with) == (
        recorded.verification,
        recorded.verified_with,
    )
    assert [i.action for i in tfjsbuild.plan([bob]).items] == ["up-to-date"]
    # Other verification settings: that entry does not serve them (bob verifies in place).
    bob.write_text(text + "    verify: {atol: 0.01}\n")
    assert [(i.action, i.cached) for i in tfjsbuild.plan([bob]).items] == [("verify", None)]
    # An unverified build never replaces the verified entry.
    carol = _write(tmp_path / "carol", text)
    shutil.copytree(model_store("multihead"), carol.parent / "multi")
    built = tfjsbuild.build([carol], verify=False, force=True)
    assert [(r.status, r.verification) for r in built.results] == [("built", None)]
    assert _entry_json(shared) == entry


@pytest.mark.slow
def test_going_back_to_an_earlier_model_restores_it(
    project: Callable[..., Path], model_store: Callable[..., Path]
) -> None:
    manifest = project(MANIFEST, {"multi": model_store("multihead")})
    root = manifest.parent
    assert tfjsbuild.build([manifest], jobs=2).ok
    before = (root / "dist/multi/regress/group1-shard1of1.bin").read_bytes()
    shutil.rmtree(root / "multi")
    shutil.copytree(model_store("multihead", head_b_seed=30), root / "multi")
    retrained = tfjsbuild.build([manifest], jobs=2)
    assert {r.item.key: r.status for r in retrained.results if r.status != "up-to-date"} == {
        "multi:regress": "built"
    }
    shutil.rmtree(root / "multi")
    shutil.copytree(model_store("multihead"), root / "multi")  # `git checkout` of the old one
    back = tfjsbuild.build([manifest])
    assert {r.item.key: r.status for r in back.results if r.status != "up-to-date"} == {
        "multi:regress": "restored"
    }
    assert (root / "dist/multi/regress/group1-shard1of1.bin").read_bytes() == before


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A real S3 API on loopback (moto's server), and a bucket in it."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
    }.items():
        monkeypatch.setenv(name, value)
    import boto3

    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="models")
    yield endpoint
    server.stop()


@pytest.mark.slow
def test_a_remote_cache_written_by_ci_and_read_by_a_laptop(
    tmp_path: Path, model_store: Callable[..., Path], s3: str
) -> None:
    import boto3

    remote = "s3://models/tfjs-cache"
    ci = _write(tmp_path / "ci", MANIFEST + f"cache: {{remote: '{remote}'}}\n")
    laptop = _write(tmp_path / "laptop", MANIFEST + f"cache: {{remote: '{remote}'}}\n")
    for manifest in (ci, laptop):
        shutil.copytree(model_store("multihead"), manifest.parent / "multi")
    assert tfjsbuild.build([ci], jobs=2).ok
    objects = boto3.client("s3", endpoint_url=s3).list_objects_v2(Bucket="models")["Contents"]
    keys = sorted(o["Key"] for o in objects)
    assert len([k for k in keys if k.startswith("tfjs-cache/entries/")]) == 3
    assert not [k for k in keys if "/.tmp-" in k]

    # The laptop reads only (its own local cache is off): everything comes from S3.
    plan = tfjsbuild.plan([laptop], cache="local:off,remote:r").items
    assert {i.cached for i in plan} == {"remote"}
    restored = tfjsbuild.build([laptop], cache="local:off,remote:r")
    assert {r.status for r in restored.results} == {"restored"}
    for signature in ("classify", "features", "regress"):
        for file in (ci.parent / "dist/multi" / signature).iterdir():
            copy = laptop.parent / "dist/multi" / signature / file.name
            assert copy.read_bytes() == file.read_bytes()

    # With its local cache on, a remote hit fills it: the next restore needs no network.
    second = _write(tmp_path / "laptop2", MANIFEST + f"cache: {{remote: '{remote}'}}\n")
    shutil.copytree(model_store("multihead"), second.parent / "multi")
    filled = tfjsbuild.build([second], cache="local:rw,remote:r")
    assert {r.cache for r in filled.results} == {"remote"}
    local = Store(str(second.parent / ".tfjs-build/cache"), "r", "local")
    assert local.stats()["entries"] == 3

    # A truncated upload and a missing object: those entries are rebuilt, never restored.
    client = boto3.client("s3", endpoint_url=s3)
    entries = {
        k: json.loads(client.get_object(Bucket="models", Key=k)["Body"].read())
        for k in keys
        if k.startswith("tfjs-cache/entries/")
    }
    blob_of = {}
    for key, entry in entries.items():
        shard = next(f for f in entry["files"] if f["path"].endswith(".bin"))
        blob_of[key] = f"tfjs-cache/blobs/{shard['sha256'][:2]}/{shard['sha256']}"
    (first, second, _) = sorted(entries)
    client.put_object(Bucket="models", Key=blob_of[first], Body=b"truncated")
    client.delete_object(Bucket="models", Key=blob_of[second])
    fresh = _write(tmp_path / "fresh", MANIFEST + f"cache: {{remote: '{remote}', mode: r}}\n")
    shutil.copytree(model_store("multihead"), fresh.parent / "multi")
    with pytest.warns(UserWarning, match="remote cache entry for multi:.* is unusable"):
        result = tfjsbuild.build([fresh], cache="local:off,remote:r", jobs=2)
    assert result.ok
    assert sorted(r.status for r in result.results) == ["built", "built", "restored"]
    for signature in ("classify", "features", "regress"):
        for file in (ci.parent / "dist/multi" / signature).iterdir():
            copy = fresh.parent / "dist/multi" / signature / file.name
            assert copy.read_bytes() == file.read_bytes()


@pytest.mark.slow
def test_an_unreachable_remote_cache_is_a_warning_not_a_failure(
    tmp_path: Path, model_store: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",  # nothing listens there
        "AWS_MAX_ATTEMPTS": "1",
    }.items():
        monkeypatch.setenv(name, value)
    manifest = _write(
        tmp_path / "p",
        MANIFEST + "    signatures: [regress]\ncache: {remote: 's3://models/tfjs-cache'}\n",
    )
    shutil.copytree(model_store("multihead"), manifest.parent / "multi")
    with pytest.warns(UserWarning, match=r"remote cache s3://models/tfjs-cache is unreachable"):
        result = tfjsbuild.build([manifest])
    assert [r.status for r in result.results] == ["built"]
    # The local cache still took the build.
    assert Store(str(manifest.parent / ".tfjs-build/cache"), "r", "local").stats()["entries"] == 1
