"""tfjs-build watch with real filesystem events; the loop runs in a thread or a subprocess."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType

import pytest

import tfjsbuild
from conftest import SCALER_MODULE, default_sigint
from tfjsbuild.stores.lock import BuildLock
from tfjsbuild.stores.state import load_state
from tfjsbuild.watch import Cycle, Watcher

pytestmark = pytest.mark.slow

MANIFEST = "version: 1\noutput_dir: web\nlayout: '{model}-out/{signature}'\nmodels:\n  multi:\n    saved_model: multi\n"


class WatchThread:
    def __init__(self, manifest: Path, quiet_period: float = 0.5, *, verify: bool = True) -> None:
        self.cycles: queue.Queue[Cycle] = queue.Queue()
        self.stop = threading.Event()
        self.watcher = Watcher(
            [manifest],
            jobs=1,
            verify=verify,
            quiet_period=quiet_period,
            on_cycle=self.cycles.put,
            stop=self.stop,
        )
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            self.watcher.run()
        except BaseException as error:  # reported by __exit__
            self.error = error

    def __enter__(self) -> WatchThread:
        self.thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop.set()
        self.thread.join(120)
        assert not self.thread.is_alive()
        assert self.error is None, self.error

    def next_cycle(self, timeout: float = 180) -> Cycle:
        try:
            return self.cycles.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"no watch cycle within {timeout}s (loop error: {self.error})")

    def assert_no_cycle(self, within: float) -> None:
        with pytest.raises(queue.Empty):
            cycle = self.cycles.get(timeout=within)
            pytest.fail(f"unexpected cycle {cycle.number} triggered by {cycle.trigger}")


def changes(cycle: Cycle) -> dict[str, str]:
    assert cycle.result is not None, (cycle.manifest_error, cycle.error, cycle.waiting)
    return {r.item.key: r.status for r in cycle.result.results if r.status != "up-to-date"}


def snapshot(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def watched(
    project: Callable[..., Path], model_store: Callable[..., Path]
) -> Iterator[tuple[Path, WatchThread]]:
    manifest = project(MANIFEST, {"multi": model_store("multihead")})
    with WatchThread(manifest) as watch:
        first = watch.next_cycle()
        assert first.trigger == ("(start)",)
        assert changes(first) == {
            "multi:classify": "built",
            "multi:features": "built",
            "multi:regress": "built",
        }
        yield manifest, watch


def replace_model(target: Path, source: Path, pause: float = 0.0) -> float:
    """`rm -rf target && export`: files appear one by one; returns when the last was written."""
    shutil.rmtree(target)
    last_write = time.time()
    for index, path in enumerate(sorted(p for p in source.rglob("*") if p.is_file())):
        if index:
            time.sleep(pause)
        destination = target / path.relative_to(source)
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, destination)
        last_write = time.time()
    return last_write


def test_retraining_one_head_rebuilds_exactly_that_signature(
    watched: tuple[Path, WatchThread], model_store: Callable[..., Path]
) -> None:
    manifest, watch = watched
    replace_model(manifest.parent / "multi", model_store("multihead", head_b_seed=30))
    cycle = watch.next_cycle()
    assert changes(cycle) == {"multi:regress": "built"}
    assert cycle.result is not None
    (regress,) = [r for r in cycle.result.results if r.status == "built"]
    assert regress.item.reasons == ("weights changed: head_b",)
    # Outputs sit beside the watched sources: the tool's own writes start no cycle.
    watch.assert_no_cycle(within=3)


def test_no_verify_cycles_rebuild_only_what_changed(
    project: Callable[..., Path], model_store: Callable[..., Path]
) -> None:
    manifest = project(MANIFEST, {"multi": model_store("multihead")})
    everything = {"multi:classify": "built", "multi:features": "built", "multi:regress": "built"}
    with WatchThread(manifest, verify=False) as watch:
        assert changes(watch.next_cycle()) == everything
        replace_model(manifest.parent / "multi", model_store("multihead", head_b_seed=30))
        # Built without verification is up to date for --no-verify: only the retrained head.
        cycle = watch.next_cycle()
        assert changes(cycle) == {"multi:regress": "built"}
        assert cycle.result is not None
        assert [r.verification for r in cycle.result.results] == [None, None, None]
    outputs = snapshot(manifest.parent / "multi-out")
    # The first build that verifies runs them as they are: nothing is converted again.
    result = tfjsbuild.build([manifest])
    assert {r.item.key: r.status for r in result.results} == {key: "verified" for key in everything}
    assert snapshot(manifest.parent / "multi-out") == outputs


def test_a_slow_export_gives_one_rebuild_after_the_last_write(
    project: Callable[..., Path], model_store: Callable[..., Path]
) -> None:
    manifest = project(MANIFEST, {"multi": model_store("multihead")})
    with WatchThread(manifest, quiet_period=1.0) as watch:
        watch.next_cycle()
        last_write = replace_model(
            manifest.parent / "multi", model_store("multihead", head_b_seed=31), pause=0.4
        )
        cycle = watch.next_cycle()
        assert cycle.started >= last_write + 0.9  # waited for the quiet period after the last write
        assert changes(cycle) == {"multi:regress": "built"}
        watch.assert_no_cycle(within=3)


def test_a_deleted_model_is_waited_for_not_failed(
    watched: tuple[Path, WatchThread], model_store: Callable[..., Path]
) -> None:
    manifest, watch = watched
    shutil.rmtree(manifest.parent / "multi")
    cycle = watch.next_cycle()
    assert cycle.result is None and cycle.error is None
    assert cycle.waiting == (f"multi: {manifest.parent / 'multi'} does not exist (yet)",)
    shutil.copytree(model_store("multihead", head_b_seed=30), manifest.parent / "multi")
    assert changes(watch.next_cycle()) == {"multi:regress": "built"}


def test_invalid_manifest_edit_keeps_watching_then_the_fix_applies(
    watched: tuple[Path, WatchThread],
) -> None:
    manifest, watch = watched
    manifest.write_text(MANIFEST + "    quantisation: {uint8: ['*']}\n")
    cycle = watch.next_cycle()
    assert cycle.manifest_error is not None
    assert (
        "7:5: models.multi.quantisation: unknown key 'quantisation'; did you mean 'quantization'?"
        in cycle.manifest_error
    )
    assert changes(cycle) == {}  # the last good manifest: nothing to do
    manifest.write_text(
        MANIFEST
        + "    signatures:\n      regress: {quantization: {uint8: ['*']}, verify: {atol: 0.5}}\n"
        "      features: {}\n      classify: {}\n"
    )
    fixed = watch.next_cycle()
    assert fixed.manifest_error is None
    assert changes(fixed) == {"multi:regress": "built"}
    assert fixed.result is not None
    assert [r.item.reasons for r in fixed.result.results if r.status == "built"] == [
        ("options changed: quantization.uint8", "verification changed: backends.auto.atol")
    ]


def test_a_failed_conversion_keeps_watching_and_the_old_output(
    watched: tuple[Path, WatchThread],
) -> None:
    manifest, watch = watched
    root = manifest.parent
    before = snapshot(root / "web/multi-out")
    manifest.write_text(MANIFEST + "    quantization: {float16: ['?*'], uint8: ['*?']}\n")
    failed = watch.next_cycle()
    assert set(changes(failed).values()) == {"failed"}
    assert snapshot(root / "web/multi-out") == before
    manifest.write_text(MANIFEST)
    assert changes(watch.next_cycle()) == {}  # back to what is on disk: nothing to rebuild


def _start_watch(manifest: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tfjsbuild", "watch", "-j", "1", "-f", str(manifest), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=default_sigint,
    )


def _read_until(stream: object, predicate: Callable[[str], bool], timeout: float) -> list[str]:
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in stream:  # type: ignore[attr-defined]
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            break
        seen.append(line)
        if predicate(line):
            return seen
    pytest.fail(f"not seen within {timeout}s; got: {seen}")


def test_sigint_during_a_conversion_stops_cleanly(
    project: Callable[..., Path], model_store: Callable[..., Path]
) -> None:
    manifest = project(MANIFEST.replace("multi", "deep"), {"deep": model_store("deep")})
    watch = _start_watch(manifest)
    _read_until(watch.stdout, lambda line: line.startswith("Converting"), timeout=120)
    os.killpg(watch.pid, signal.SIGINT)
    _, stderr = watch.communicate(timeout=120)
    assert watch.returncode == 130, stderr
    assert "Stopped watching; finished outputs and state are kept." in stderr
    assert "Traceback" not in stderr
    root = manifest.parent
    assert not (root / ".tfjs-build/manifests/tfjs-build.yaml/staging").exists()
    with BuildLock(root / ".tfjs-build/manifests/tfjs-build.yaml"):
        pass
    assert load_state(root / ".tfjs-build/manifests/tfjs-build.yaml")[1] == []


def test_json_streams_one_object_per_cycle_and_sigterm_exits_0(
    project: Callable[..., Path], model_store: Callable[..., Path]
) -> None:
    manifest = project(MANIFEST, {"multi": model_store("multihead")})
    watch = _start_watch(manifest, "--json")
    (line,) = _read_until(watch.stdout, lambda line: True, timeout=180)
    cycle = json.loads(line)
    assert (cycle["cycle"], cycle["trigger"], cycle["manifest_error"]) == (1, ["(start)"], None)
    assert sorted(s["status"] for s in cycle["report"]["signatures"]) == ["built", "built", "built"]
    os.killpg(watch.pid, signal.SIGTERM)
    watch.communicate(timeout=60)
    assert watch.returncode == 0


def test_models_added_to_the_manifest_are_watched_and_removed_ones_pruned(
    watched: tuple[Path, WatchThread], model_store: Callable[..., Path]
) -> None:
    manifest, watch = watched
    root = manifest.parent
    shutil.copytree(model_store("multihead"), root / "second")
    manifest.write_text(
        MANIFEST + "  second:\n    saved_model: second\n    signatures: [features]\n"
    )
    # The same graph and weights as multi's features: restored from the cache.
    assert changes(watch.next_cycle()) == {"second:features": "restored"}
    # The new model is watched: retraining it starts a cycle.
    replace_model(root / "second", model_store("multihead", backbone_seed=5))
    assert changes(watch.next_cycle()) == {"second:features": "built"}
    manifest.write_text(MANIFEST)
    assert changes(watch.next_cycle()) == {"second:features": "removed"}
    assert not (root / "web/second-out").exists()
    # ...and no longer watched.
    replace_model(root / "second", model_store("multihead"))
    watch.assert_no_cycle(within=3)


def test_changes_during_a_build_start_the_next_cycle(
    project: Callable[..., Path], model_store: Callable[..., Path]
) -> None:
    manifest = project(MANIFEST.replace("multi", "deep"), {"deep": model_store("deep")})
    with WatchThread(manifest) as watch:
        watch.next_cycle()
        replace_model(manifest.parent / "deep", model_store("deep", seed=40))
        # Wait for the rebuild to start, then change the model again while it converts.
        state = manifest.parent / ".tfjs-build/manifests/tfjs-build.yaml/staging"
        deadline = time.monotonic() + 120
        while not state.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert state.exists(), "the rebuild did not start"
        replace_model(manifest.parent / "deep", model_store("deep", seed=41))
        first = watch.next_cycle()
        assert set(changes(first).values()) == {"built"}
        second = watch.next_cycle()
        assert set(changes(second).values()) == {"built"}
        # The outputs are those of the last export.
        watch.assert_no_cycle(within=3)
    assert {item.action for item in tfjsbuild.plan([manifest]).items} == {"up-to-date"}


def test_python_and_keras_sources_are_watched(
    project: Callable[..., Path], model_store: Callable[..., Path]
) -> None:
    manifest = project(
        "version: 1\nmodels:\n"
        "  code:\n    python: src.scaler:build\n    signatures: [scale]\n"
        "  config:\n    python: src.scaler:build\n    inputs: ['conf/**/*.json']\n"
        "    signatures: [scale]\n"
        "  small:\n    keras: small.h5\n",
        {"small.h5": model_store("keras_h5")},
    )
    root = manifest.parent
    (root / "src").mkdir()
    (root / "src" / "scaler.py").write_text(SCALER_MODULE.format(scale=2.0))
    (root / "conf" / "a").mkdir(parents=True)
    (root / "conf" / "a" / "settings.json").write_text("{}")
    (root / "src" / "notes.txt").write_text("")
    with WatchThread(manifest) as watch:
        assert set(changes(watch.next_cycle()).values()) == {"built"}
        # Edited module: the model whose input it is rebuilds; `config` watches other files.
        (root / "src" / "scaler.py").write_text(SCALER_MODULE.format(scale=3.0))
        assert changes(watch.next_cycle()) == {"code:scale": "built"}
        # A new file matching a glob, in a new folder below the glob's fixed part.
        (root / "conf" / "b").mkdir()
        (root / "conf" / "b" / "more.json").write_text("{}")
        assert changes(watch.next_cycle()) == {"config:scale": "built"}
        # A Keras file replaced with other weights.
        shutil.copyfile(model_store("keras_h5", seed=9), root / "small.h5")
        assert changes(watch.next_cycle()) == {"small:serving_default": "built"}
        # Files no model depends on start nothing.
        (root / "src" / "notes.txt").write_text("edited")
        (root / "conf" / "readme.txt").write_text("")
        watch.assert_no_cycle(within=3)


def test_glob_regex_follows_pathlib_globs() -> None:
    from tfjsbuild.watch import glob_regex

    assert glob_regex("conf/**/*.json").fullmatch("conf/settings.json")
    assert glob_regex("conf/**/*.json").fullmatch("conf/a/b/settings.json")
    assert not glob_regex("conf/**/*.json").fullmatch("conf/a/settings.txt")
    assert glob_regex("models/*.py").fullmatch("models/net.py")
    assert not glob_regex("models/*.py").fullmatch("models/sub/net.py")
    assert glob_regex("data/v?.csv").fullmatch("data/v1.csv")
    assert not glob_regex("data/v?.csv").fullmatch("data/v10.csv")


def test_the_terminal_says_what_started_each_cycle(
    project: Callable[..., Path], model_store: Callable[..., Path]
) -> None:
    manifest = project(MANIFEST, {"multi": model_store("multihead")})
    watch = _start_watch(manifest, "--no-verify")
    lines: queue.Queue[str] = queue.Queue()  # one reader for the whole run
    threading.Thread(target=lambda: [lines.put(line) for line in watch.stdout], daemon=True).start()

    def next_cycle_line() -> str:
        while not (line := lines.get(timeout=180)).startswith("cycle "):
            pass
        return line

    try:
        first = next_cycle_line()
        assert first.startswith("cycle 1 (first build): 3 built, 0 failed in "), first
        (manifest.parent / "multi/saved_model.pb").touch()  # same bytes: nothing to rebuild
        second = next_cycle_line()
        assert second.startswith("cycle 2 (changed: multi/saved_model.pb): 0 built, 0 failed"), (
            second
        )
    finally:
        os.killpg(watch.pid, signal.SIGTERM)
        watch.communicate(timeout=60)
