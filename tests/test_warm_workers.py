"""Warm workers: watch keeps its worker processes from cycle to cycle, and nothing stale
survives a build (a python: source's code, a Keras model exported into the build's scratch
folder); a worker over its memory limit is replaced; start-up is not a signature's time.

Which worker ran what is read from `worker.log`, where every worker says when it is ready
("worker pid N ready: TensorFlow imported in X s") and the pool logs each task it hands out
("worker pid N takes signature 'regress' of ...").
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest
from test_watch import MANIFEST, WatchThread, changes, replace_model

import tfjsbuild
from conftest import SCALER_MODULE, STATE, read_output, run_cli, run_tfjs
from tfjsbuild.building.executors import KeptWorkers
from tfjsbuild.building.local_pool import WorkerPool
from tfjsbuild.building.results import SignatureResult
from tfjsbuild.manifest.load import load_manifest
from tfjsbuild.planning.plan import PlanItem
from tfjsbuild.planning.targets import resolve_targets
from tfjsbuild.watch import Cycle
from tfjsbuild.worker.task import ConversionOutcome, ConversionTask

pytestmark = pytest.mark.slow

READY = re.compile(r"^tfjs-build: worker pid (\d+) ready: TensorFlow imported in ([\d.]+) s$", re.M)
TAKES = re.compile(r"^tfjs-build: worker pid (\d+) takes signature '(\w+)'", re.M)


def ready_workers(log: Path) -> list[tuple[int, float]]:
    """(pid, seconds its TensorFlow import took) of each worker that started since the log
    was truncated (each build truncates it)."""
    return [(int(pid), float(seconds)) for pid, seconds in READY.findall(log.read_text())]


def tasks_taken(log: Path) -> list[tuple[int, str]]:
    """(worker pid, signature) of each task handed out, in order."""
    return [(int(pid), signature) for pid, signature in TAKES.findall(log.read_text())]


class Recorder:
    """A reporter that remembers how many workers each build said it was starting, and what
    it was told the workers were on."""

    def __init__(self) -> None:
        self.starting: list[int] = []
        self.working_on: set[tuple[str, str]] = set()

    def build_started(self, items: Sequence[PlanItem], jobs: int, starting: int, how: str) -> None:
        self.starting.append(starting)

    def notice(self, text: str) -> None:
        pass

    def working(self, running: Mapping[str, str]) -> None:
        self.working_on.update(running.items())

    def signature_finished(self, result: SignatureResult) -> None:
        pass


def built(cycle: Cycle) -> list[SignatureResult]:
    assert cycle.result is not None, (cycle.manifest_error, cycle.error, cycle.waiting)
    return [r for r in cycle.result.results if r.status == "built"]


def cold_build(folder: Path, manifest: str, models: dict[str, Path]) -> Path:
    """The same manifest built from scratch in `folder`, by a build of its own."""
    folder.mkdir()
    for name, source in models.items():
        if source.is_dir():
            shutil.copytree(source, folder / name)
        else:
            shutil.copyfile(source, folder / name)
    (folder / "tfjs-build.yaml").write_text(manifest)
    result = tfjsbuild.build([folder / "tfjs-build.yaml"], jobs=1)
    assert result.ok, [r.error for r in result.failed]
    return folder


def test_a_watch_cycle_converts_in_the_worker_the_first_cycle_started(
    project: Callable[..., Path], model_store: Callable[..., Path], tmp_path: Path
) -> None:
    manifest = project(MANIFEST, {"multi": model_store("multihead")})
    root = manifest.parent
    log = root / STATE / "worker.log"
    recorder = Recorder()
    watch = WatchThread(manifest)
    watch.watcher.reporter = recorder
    with watch:
        first = watch.next_cycle()
        assert len(built(first)) == 3
        ((pid, _),) = ready_workers(log)
        assert {worker for worker, _ in tasks_taken(log)} == {pid}

        replace_model(root / "multi", model_store("multihead", head_b_seed=30))
        second = watch.next_cycle()
        assert changes(second) == {"multi:regress": "built"}
        # No worker started: the one of the first cycle converted it, TensorFlow imported.
        assert ready_workers(log) == []
        assert tasks_taken(log) == [(pid, "regress")]
        (regress,) = built(second)
        assert regress.verification is not None and regress.verification.passed
        warm = read_output(root / "web/multi-out/regress")
    assert recorder.starting == [1, 0]  # the second cycle started none
    # The progress line heard what the worker was on: at least its start (importing TensorFlow
    # takes seconds), under the signature's name; never a key that is no signature of this build.
    assert "starting the worker" in {phase for _, phase in recorder.working_on}
    assert {key for key, _ in recorder.working_on} <= {
        "multi:features",
        "multi:classify",
        "multi:regress",
    }
    # What the warm worker wrote is what a build of the new export alone writes.
    cold = cold_build(
        tmp_path / "cold", MANIFEST, {"multi": model_store("multihead", head_b_seed=30)}
    )
    assert warm == read_output(cold / "web/multi-out/regress")


def test_an_edited_python_source_is_converted_as_edited(project: Callable[..., Path]) -> None:
    manifest = project(
        "version: 1\nmodels:\n  code:\n    python: src.scaler:build\n    signatures: [scale]\n"
    )
    root = manifest.parent
    log = root / STATE / "worker.log"
    (root / "src").mkdir()
    (root / "src" / "scaler.py").write_text(SCALER_MODULE.format(scale=2.0))
    x = np.array([1.0, 2.0], np.float32)
    with WatchThread(manifest) as watch:
        assert changes(watch.next_cycle()) == {"code:scale": "built"}
        np.testing.assert_allclose(run_tfjs(root / "dist/code/scale", {"x": x})["y"], [2.0, 4.0])
        ((pid, _),) = ready_workers(log)
        first_log = log.read_text()

        (root / "src" / "scaler.py").write_text(SCALER_MODULE.format(scale=3.0))
        assert changes(watch.next_cycle()) == {"code:scale": "built"}
        np.testing.assert_allclose(run_tfjs(root / "dist/code/scale", {"x": x})["y"], [3.0, 6.0])
        ((second_pid, _),) = ready_workers(log)
    # The worker imported src.scaler, which stays in its sys.modules: it was retired at the end
    # of the first build, and a new one imported the edited module.
    assert f"tfjs-build: retired worker pid {pid}: it imported a python: source's code" in first_log
    assert second_pid != pid


KERAS = "version: 1\nmodels:\n  small:\n    keras: small.h5\n"


def test_a_resaved_keras_model_is_converted_with_its_new_weights(
    project: Callable[..., Path], model_store: Callable[..., Path], tmp_path: Path
) -> None:
    manifest = project(KERAS, {"small.h5": model_store("keras_h5")})
    root = manifest.parent
    output = root / "dist/small/serving_default"
    with WatchThread(manifest) as watch:
        assert changes(watch.next_cycle()) == {"small:serving_default": "built"}
        before = read_output(output)

        shutil.copyfile(model_store("keras_h5", seed=9), root / "small.h5")
        assert changes(watch.next_cycle()) == {"small:serving_default": "built"}
        resaved = read_output(output)

        # Same file, other options: the worker loaded this model in the last build, but exported
        # it into that build's scratch folder, deleted since: it loads the model again.
        manifest.write_text(KERAS + "    quantization: {float16: ['*']}\n")
        (quantized,) = built(watch.next_cycle())
        assert "load" in quantized.timings
        assert quantized.verification is not None and quantized.verification.passed
    assert resaved != before
    cold = cold_build(tmp_path / "cold", KERAS, {"small.h5": model_store("keras_h5", seed=9)})
    assert resaved == read_output(cold / "dist/small/serving_default")


@pytest.mark.parametrize(
    ("limit", "replaced"), [(1024**2, True), (1024**4, False)], ids=["1 MiB", "1 TiB"]
)
def test_a_worker_over_the_memory_limit_is_replaced_before_its_next_task(
    project: Callable[..., Path],
    model_store: Callable[..., Path],
    tmp_path: Path,
    limit: int,
    replaced: bool,
) -> None:
    manifest = load_manifest(
        project(
            "version: 1\nmodels:\n  multi:\n    saved_model: multi\n",
            {"multi": model_store("multihead")},
        )
    )
    targets = {target.signature: target for target in resolve_targets(manifest).targets}

    def task(key: str, signature: str) -> ConversionTask:
        target = targets[signature]
        staging = str(tmp_path / "staging" / key)
        scratch = str(tmp_path / "scratch")
        return ConversionTask(key, target.source, signature, target.options, staging, "m", scratch)

    log = tmp_path / "worker.log"
    log.write_text("")
    pool = WorkerPool(1, log, memory_limit=limit)
    try:
        outcomes: list[ConversionOutcome] = [
            pool.submit(task("0", "features")).result(timeout=600),
            pool.submit(task("1", "classify")).result(timeout=600),
        ]
    finally:
        pool.shutdown(abort=False)
    assert [outcome.error for outcome in outcomes] == [None, None]
    (first, _), (second, _) = tasks_taken(log)
    text = log.read_text()
    if replaced:
        assert first != second
        assert re.search(
            rf"^tfjs-build: retired worker pid {first}: [\d.]+ MiB resident, "
            r"over the 1 MiB limit$",
            text,
            re.M,
        )
    else:
        assert first == second
        assert "retired" not in text
    # A signature's seconds are its own: the worker's start-up (importing TensorFlow) is not
    # charged to the first one, which a tiny model converts in far less time.
    (_, startup), *_ = ready_workers(log)
    assert outcomes[0].seconds < startup


def test_run_says_when_it_starts_workers(
    project: Callable[..., Path], model_store: Callable[..., Path]
) -> None:
    manifest = project(
        "version: 1\nmodels:\n  multi:\n    saved_model: multi\n    signatures: [regress]\n",
        {"multi": model_store("multihead")},
    )
    first = run_cli("run", "-j", "1", "--no-verify", cwd=manifest.parent)
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines()[0] == (
        "Converting 1 signature with 1 worker, starting 1 (importing TensorFlow)"
    )
    again = run_cli("run", "--no-verify", cwd=manifest.parent)  # nothing to build: no worker
    assert again.returncode == 0, again.stderr
    assert "starting" not in again.stdout


def test_kept_workers_grow_and_are_replaced_when_their_log_moves_or_a_build_aborts(
    tmp_path: Path,
) -> None:
    """No task is submitted: a pool starts no worker before it has a task."""
    kept = KeptWorkers()
    try:
        first = kept.pool(1, tmp_path / "a.log")
        grown = kept.pool(3, tmp_path / "a.log")
        assert grown.pool is first.pool
        assert kept.pool(1, tmp_path / "a.log").pool.worker_count == 3
        grown.shutdown(abort=False)  # a build's end: the pool lives on
        assert kept.pool(1, tmp_path / "a.log").pool is first.pool

        moved = kept.pool(1, tmp_path / "b.log")  # other manifests: a pool of their own
        assert moved.pool is not first.pool
        with pytest.raises(RuntimeError, match="the worker pool is shut down"):
            first.submit(ConversionTask("0", None, "a", None, "", "", ""))

        moved.shutdown(abort=True)  # Ctrl-C in a build: its workers are killed, the pool dropped
        assert kept.pool(1, tmp_path / "b.log").pool is not moved.pool
    finally:
        kept.close()
