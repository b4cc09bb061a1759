"""The shared cache: keys, local and remote (S3 API) stores, restores instead of conversions."""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

import tfjsbuild
from conftest import STATE, VERIFY_REQUEST, run_cli
from tfjsbuild.errors import UsageError
from tfjsbuild.files.artifacts import OutputFile
from tfjsbuild.files.readback import InvalidData
from tfjsbuild.manifest.load import load_manifest
from tfjsbuild.manifest.types import ConverterOptions
from tfjsbuild.planning.fingerprint import cache_key, fingerprint_signature
from tfjsbuild.stores.cache_entry import (
    ENTRY_MAX_BYTES,
    MISMATCHED,
    CacheEntry,
    SignatureRefused,
    serves,
    sign,
)
from tfjsbuild.stores.cache_store import Store
from tfjsbuild.stores.caches import first_entry, resolve_config
from tfjsbuild.stores.state import load_state
from tfjsbuild.verify.record import BackendRecord, verification_from_json
from tfjsbuild.verify.request import BackendRequest, VerificationRequest, request_from_json

MANIFEST = """
version: 1
models:
  multi:
    saved_model: multi
"""


VERIFICATION = {
    "passed": True,
    "samples": 3,
    "inputs": "generated",
    "atol": 1e-4,
    "rtol": 1e-3,
    "max_abs_error": 2.4e-7,
    "outputs": {"value": {"max_abs_error": 2.4e-7, "max_rel_error": 4.5e-7, "passed": True}},
}
VERIFIED = verification_from_json(VERIFICATION, "verification")


MODEL_JSON = {
    "modelTopology": {},
    "weightsManifest": [
        {
            "paths": ["group1-shard1of1.bin"],
            "weights": [{"name": "w", "shape": [16], "dtype": "float32"}],
        }
    ],
}


def fingerprint(**changes: object) -> str:
    arguments: dict[str, object] = {
        "source": "graph-digest",
        "source_kind": "graph",
        "signature": "classify",
        "tags": ("serve",),
        "options": ConverterOptions(),
        "output": "dist/multi/classify",
        "tools": {"tensorflow": "2.19.0", "tensorflowjs": "4.22.0", "tfjs-build": "0.1.0"},
        "verify": dict(VERIFY_REQUEST),
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
    assert fingerprint(verify=VerificationRequest(3, None, "4.22.0")) == base
    assert fingerprint(verify=None) == base


def test_an_entry_serves_only_the_verification_it_carries(tmp_path: Path) -> None:
    wanted = VerificationRequest(samples=3, inputs=None, tfjs="4.22.0")
    output, built = _built_output(tmp_path)
    verified = replace(built, verified_with=wanted)
    unverified = replace(built, verification=None)
    # A build that verifies nothing (--no-verify, verify.enabled false) takes either.
    assert serves(verified, None) and serves(unverified, None)
    assert serves(verified, wanted)
    assert not serves(unverified, wanted)
    assert not serves(verified, replace(wanted, backends=(BackendRequest("auto", 0.5, 1e-3),)))
    assert not serves(verified, replace(wanted, backends=(BackendRequest("cpu", 1e-4, 1e-3),)))
    assert not serves(verified, replace(wanted, tfjs="4.23.0"))
    assert not serves(built, wanted)  # verified, but not saying with what: no promise
    # WebGL skipped for want of a browser: it serves a build without one, not one with one.
    webgl = BackendRecord("webgl", False, 1e-4, 1e-3, math.nan, skipped=True)
    partly = replace(verified, verification=replace(VERIFIED, backends=(*VERIFIED.backends, webgl)))
    assert serves(partly, replace(wanted, browser=False))
    assert not serves(partly, wanted)
    failed_run = replace(VERIFIED.backends[0], passed=False)
    failed = replace(verified, verification=replace(VERIFIED, backends=(failed_run,)))
    assert not serves(failed, wanted)
    # What it was verified with survives the round trip through the store's JSON.
    assert CacheEntry.from_json(verified.key, verified.to_json()) == verified
    assert CacheEntry.from_json(unverified.key, unverified.to_json()) == unverified
    store = Store(str(tmp_path / "cache"), "rw", "local")
    store.put(unverified, output)
    assert first_entry([store], unverified.key, None) == (store, unverified)
    assert first_entry([store], unverified.key, wanted) is None


def test_a_lookup_reads_only_and_a_restore_marks_the_entry_used(tmp_path: Path) -> None:
    """`plan` writes nothing: looking an entry up leaves its mtime (what prune goes by) alone."""
    output, entry = _built_output(tmp_path)
    store = Store(str(tmp_path / "cache"), "rw", "local")
    store.put(entry, output)
    path = tmp_path / "cache/entries" / entry.key[:2] / f"{entry.key}.json"
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    assert first_entry([store], entry.key, None) == (store, entry)
    assert path.stat().st_mtime_ns == 1_000_000_000
    store.mark_used(entry.key)
    assert path.stat().st_mtime_ns > 1_000_000_000


def test_an_entry_that_breaks_its_verification_promise_is_invalid(tmp_path: Path) -> None:
    wanted = dict(VERIFY_REQUEST)
    entry = replace(
        _built_output(tmp_path)[1], verified_with=request_from_json(wanted, "verified_with")
    )
    good = json.loads(entry.to_json())

    def problem(text: str, signature_key: str | None = None) -> str:
        with pytest.raises(InvalidData) as raised:
            CacheEntry.from_json(entry.key, text, signature_key)
        return str(raised.value)

    def changed(**fields: object) -> str:
        return json.dumps(good | fields)

    assert problem(changed(verified_with=5)) == "verified_with: expected an object, got int"
    assert problem(changed(verified_with={**wanted, "atol": [1]})) == (
        "verified_with.atol: expected text, a number, true, false or null, got a list"
    )
    overflow = changed(verified_with={**wanted, "atol": 0.5}).replace("0.5", "1e999")
    assert problem(overflow) == "verified_with.atol: expected a finite number"
    assert problem(changed(verified_with={**wanted, "tfjs": "4\u0000"})) == (
        "verified_with.tfjs: contains a NUL byte"
    )
    # Promising a verification it does not carry, or carrying one that did not pass.
    assert problem(changed(verification=None)) == (
        "verified_with: is set, but the entry carries no verification"
    )
    failed = {**VERIFICATION, "passed": False}
    assert problem(changed(verification=failed)) == (
        "verification.passed: is false: only outputs whose verification passed are stored"
    )
    # A signature covers what it was verified with: changing it after signing is a mismatch.
    signed = json.loads(entry.to_json("ci-key"))
    assert CacheEntry.from_json(entry.key, json.dumps(signed), "ci-key") == entry
    signed["verified_with"]["backends"]["auto"]["atol"] = 0.5
    with pytest.raises(SignatureRefused) as refused:
        CacheEntry.from_json(entry.key, json.dumps(signed), "ci-key")
    assert refused.value.reason == MISMATCHED


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
    (output / "model.json").write_text(json.dumps(MODEL_JSON))
    (output / "group1-shard1of1.bin").write_bytes(b"\x00" * 64)
    from tfjsbuild.files.artifacts import check_graph_model

    files = check_graph_model(output).files
    entry = CacheEntry("ab" * 32, files, (), (), VERIFIED, 1.5)
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
        f"blob {shard.sha256[:12]} of 'group1-shard1of1.bin' is corrupt or truncated"
    )
    # Storing the rebuilt output replaces the bad blob; the entry restores again.
    store.put(entry, output)
    assert store.fetch(entry, tmp_path / "healed") is None
    blob.unlink()
    assert "is missing" in (store.fetch(entry, tmp_path / "again-missing") or "")
    store.put(entry, output)
    assert store.fetch(entry, tmp_path / "healed-again") is None
    # An entry manifest that is not ours or not complete JSON is no entry at all.
    entry_file = next((tmp_path / "cache/entries").rglob("*.json"))
    entry_file.write_text('{"version": 1, "key": "')
    with pytest.warns(UserWarning) as caught:
        assert store.get(entry.key) is None
    assert [str(w.message) for w in caught] == [
        f"local cache {tmp_path}/cache: entry entries/ab/{entry.key}.json is invalid: not JSON: "
        "Unterminated string starting at: line 1 column 23 (char 22); a cache miss"
    ]


def _built_output(folder: Path) -> tuple[Path, CacheEntry]:
    """A small graph model on disk (no conversion) and the cache entry describing it."""
    from tfjsbuild.files.artifacts import check_graph_model

    output = folder / "output"
    output.mkdir(parents=True)
    (output / "model.json").write_text(json.dumps(MODEL_JSON))
    (output / "group1-shard1of1.bin").write_bytes(b"\x01" * 64)
    files = check_graph_model(output).files
    return output, CacheEntry("ab" * 32, files, (), (), VERIFIED, 1.5)


def _messages(caught: pytest.WarningsRecorder) -> list[str]:
    return [str(w.message) for w in caught]


def test_signed_entries_are_read_with_the_key_or_without_one(tmp_path: Path) -> None:
    output, entry = _built_output(tmp_path)
    url = str(tmp_path / "cache")
    Store(url, "rw", "local", signature_key="ci-key").put(entry, output)
    text = next((tmp_path / "cache/entries").rglob("*.json")).read_text()
    assert json.loads(text)["signature"] == sign(json.loads(entry.to_json()), "ci-key")
    assert Store(url, "r", "local", signature_key="ci-key").get(entry.key) == entry
    assert Store(url, "r", "local").get(entry.key) == entry  # no key: signatures are ignored
    other = Store(url, "r", "local", signature_key="laptop-key")
    with pytest.warns(UserWarning) as caught:
        assert other.get(entry.key) is None
        assert other.get(entry.key) is None  # looked up again (plan, then build): told once
    assert _messages(caught) == [
        f"local cache {url}: refusing entries whose signature does not match "
        "TFJS_BUILD_CACHE_SIGNATURE_KEY (signed with another key, or changed since); "
        "each is a cache miss"
    ]
    # The key comes from the environment; without it entries are written unsigned.
    manifest = load_manifest(_write(tmp_path / "p", MANIFEST))
    config = resolve_config(manifest, environ={"TFJS_BUILD_CACHE_SIGNATURE_KEY": "ci-key"})
    assert {store.signature_key for store in config.stores()} == {"ci-key"}
    assert "ci-key" not in repr(config)
    assert resolve_config(manifest, environ={}).signature_key is None
    Store(url, "rw", "local").put(entry, output)
    with pytest.warns(UserWarning) as caught:
        assert Store(url, "r", "local", signature_key="ci-key").get(entry.key) is None
    assert _messages(caught) == [
        f"local cache {url}: refusing unsigned entries, as TFJS_BUILD_CACHE_SIGNATURE_KEY is "
        "set; each is a cache miss"
    ]


def test_a_restore_writes_model_json_and_its_shards_whatever_the_entry_says(
    tmp_path: Path,
) -> None:
    output, entry = _built_output(tmp_path)
    store = Store(str(tmp_path / "cache"), "rw", "local")
    store.put(entry, output)
    model_json, shard = entry.files
    # Listed in another order: each file still gets its own bytes.
    reordered = replace(entry, files=(shard, model_json))
    assert store.fetch(reordered, tmp_path / "a") is None
    for name in ("model.json", "group1-shard1of1.bin"):
        assert (tmp_path / "a" / name).read_bytes() == (output / name).read_bytes()
    # A size no blob has is not read in full, nor allocated: the blob is corrupt.
    huge = replace(shard, size=10**15)
    assert store.fetch(replace(entry, files=(model_json, huge)), tmp_path / "b") == (
        f"blob {shard.sha256[:12]} of 'group1-shard1of1.bin' is corrupt or truncated"
    )
    # model.json not referencing a listed file, or referencing one the entry lacks.
    extra = OutputFile("x.py", model_json.size, model_json.sha256)
    assert store.fetch(replace(entry, files=(*entry.files, extra)), tmp_path / "c") == (
        "it lists 'x.py', which model.json does not reference"
    )
    assert store.fetch(replace(entry, files=(model_json,)), tmp_path / "d") == (
        "its model.json references 'group1-shard1of1.bin', which the entry does not hold"
    )
    assert not (tmp_path / "c").exists() and not (tmp_path / "d").exists()


def test_a_local_store_never_reads_or_writes_through_a_link(tmp_path: Path) -> None:
    output, entry = _built_output(tmp_path)
    cache = tmp_path / "cache"
    store = Store(str(cache), "rw", "local")
    outside = tmp_path / "outside"
    outside.mkdir()
    bashrc = outside / ".bashrc"
    bashrc.write_text("# mine\n")
    entry_dir = cache / "entries" / entry.key[:2]
    entry_dir.mkdir(parents=True)
    (entry_dir / f"{entry.key}.json").symlink_to(bashrc)
    with pytest.raises(OSError, match=f"{entry_dir}/{entry.key}.json is a symbolic link"):
        store.put(entry, output)
    assert bashrc.read_text() == "# mine\n"
    assert [p.name for p in outside.iterdir()] == [".bashrc"]
    with pytest.warns(UserWarning, match=r"is refused \(.* is a symbolic link\); a cache miss"):
        assert store.get(entry.key) is None
    # A FIFO planted as an entry is refused at once (opening it must not wait for a writer).
    (entry_dir / f"{entry.key}.json").unlink()
    os.mkfifo(entry_dir / f"{entry.key}.json")
    with pytest.warns(UserWarning, match=r"is not a regular file\); a cache miss"):
        assert store.get(entry.key) is None
    (entry_dir / f"{entry.key}.json").unlink()
    # A planted blob folder: nothing is written into it.
    shard = entry.files[1]
    shutil.rmtree(cache / "blobs" / shard.sha256[:2])  # written by the first put
    (cache / "blobs" / shard.sha256[:2]).symlink_to(outside, target_is_directory=True)
    with pytest.raises(OSError, match="is a symbolic link"):
        store.put(entry, output)
    assert [p.name for p in outside.iterdir()] == [".bashrc"]
    assert not (entry_dir / f"{entry.key}.json").exists()  # the entry is published last


def test_prune_survives_hostile_entries_and_deletes_only_its_own_files(tmp_path: Path) -> None:
    output, entry = _built_output(tmp_path)
    cache = tmp_path / "cache"
    store = Store(str(cache), "rw", "local")
    store.put(entry, output)
    valid_bytes = store.stats()["bytes"]
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.json").write_text("{}")
    (outside / ("cd" * 32 + ".json")).write_text("{}")
    hostile = {
        "nul": '{"version": 1, "key": "%s", "files": [{"path": "a\\u0000b"}]}',
        "not-json": "{",
        "oversize": " " * (ENTRY_MAX_BYTES + 1),
        "deep": "[" * 100_000,
        "nan": '{"version": 1, "key": "%s", "seconds": NaN}',
    }
    for number, text in enumerate(hostile.values()):
        key = f"{number:02d}" * 32
        (cache / "entries" / key[:2]).mkdir(parents=True, exist_ok=True)
        (cache / "entries" / key[:2] / f"{key}.json").write_text(text.replace("%s", key))
    (cache / "entries" / "cd").symlink_to(outside, target_is_directory=True)
    (cache / "blobs" / "README").write_text("not a blob")
    (cache / "blobs" / "ef").mkdir()
    (cache / "blobs" / "ef" / ("ef" * 32)).symlink_to(outside / "keep.json")

    with pytest.warns(UserWarning) as caught:
        assert store.stats()["entries"] == 6
    assert _messages(caught) == [
        f"local cache {cache}: ignoring 1 symbolic link(s) or special file(s) under entries/ "
        "(e.g. 'entries/cd'): tfjs-build never writes one, nor follows or deletes it",
        f"local cache {cache}: ignoring 1 symbolic link(s) or special file(s) under blobs/ "
        f"(e.g. 'blobs/ef/{'ef' * 32}'): tfjs-build never writes one, nor follows or deletes it",
    ]
    # The invalid entries go first, however recently written; the valid one stays.
    kept = store.prune(max_bytes=valid_bytes)
    assert kept == {"removed_entries": 5, "entries": 1, "bytes": valid_bytes}
    assert store.get(entry.key) == entry
    assert store.prune(max_bytes=0)["entries"] == 0
    assert sorted(p.name for p in outside.iterdir()) == [("cd" * 32) + ".json", "keep.json"]
    left = sorted(
        p.relative_to(cache).as_posix()
        for p in cache.rglob("*")
        if p.is_symlink() or not p.is_dir()
    )
    assert left == ["blobs/README", "blobs/ef/" + "ef" * 32, "entries/cd"]


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
    assert not (
        second.parent / ".tfjs-build/manifests/tfjs-build.yaml/worker.log"
    ).exists()  # no worker ever started
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
    recorded = load_state(alice.parent / STATE)[0].records["multi:regress"]
    assert recorded.verification is not None
    assert entry["verification"] == recorded.verification.to_json_dict()
    assert recorded.verified_with is not None
    assert [b.atol for b in recorded.verified_with.backends] == [1e-4]
    assert entry["verified_with"] == recorded.verified_with.to_json_dict()
    restored = tfjsbuild.build([bob])
    assert [(r.status, r.cache) for r in restored.results] == [("restored", "local")]
    bob_record = load_state(bob.parent / STATE)[0].records["multi:regress"]
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


@pytest.fixture(autouse=True)
def _fresh_s3_clients() -> Iterator[None]:
    """s3fs keeps one client per set of arguments, and the endpoint (AWS_ENDPOINT_URL) is not one
    of them: a test must not talk to the server of the test before it."""
    from s3fs import S3FileSystem

    S3FileSystem.clear_instance_cache()
    yield
    S3FileSystem.clear_instance_cache()


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
    with pytest.warns(UserWarning, match=f"remote cache {remote}: entry for multi:.* is unusable"):
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


def test_a_remote_entry_is_read_capped_and_checked(tmp_path: Path, s3: str) -> None:
    import boto3

    client = boto3.client("s3", endpoint_url=s3)
    url = "s3://models/tfjs-cache"
    output, entry = _built_output(tmp_path)
    store = Store(url, "rw", "remote")
    store.put(entry, output)
    assert store.get(entry.key) == entry
    key = f"tfjs-cache/entries/ab/{entry.key}.json"
    relative = f"entries/ab/{entry.key}.json"
    cases = {
        b" " * (ENTRY_MAX_BYTES + 1): "larger than 1048576 bytes (an entry is a few KB)",
        b"": "not JSON: Expecting value: line 1 column 1 (char 0)",
        entry.to_json().replace('"version":1', '"version":2').encode(): "",
    }
    for body, detail in cases.items():
        client.put_object(Bucket="models", Key=key, Body=body)
        reader = Store(url, "r", "remote")
        with pytest.warns(UserWarning) as caught:
            assert reader.get(entry.key) is None
        expected = f"is invalid: {detail}" if detail else "is invalid at version: expected 1, got 2"
        assert _messages(caught) == [
            f"remote cache {url}: entry {relative} {expected}; a cache miss"
        ]
        assert reader.unreachable is None  # a bad entry is a miss, not an unreachable store
