"""--executor ray: the example built by a local Ray cluster, byte for byte as by local workers."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import tfjsbuild
from conftest import REPO

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    import ray

    ray.init(
        num_cpus=2,
        object_store_memory=200 * 1024**2,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
    )
    yield
    ray.shutdown()


def copy_example(target: Path, models: Path) -> Path:
    shutil.copytree(REPO / "examples", target, ignore=shutil.ignore_patterns("models", "web"))
    shutil.copytree(models, target / "models")
    return target / "tfjs-build.yaml"


def files(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_the_example_built_by_ray_equals_the_local_build(tmp_path: Path, ray_cluster: None) -> None:
    models = tmp_path / "models"
    made = subprocess.run(
        [sys.executable, str(REPO / "examples/make_models.py"), str(models)],
        check=True,
        capture_output=True,
        text=True,
    )
    assert made.stderr == ""  # the README's first command: nothing but its one line
    local = copy_example(tmp_path / "local", models)
    remote = copy_example(tmp_path / "ray", models)

    by_workers = tfjsbuild.build([local], cache="off", jobs=2)
    assert by_workers.ok, [r.error for r in by_workers.failed]
    by_ray = tfjsbuild.build([remote], cache="off", executor="ray")
    assert by_ray.ok, [r.error for r in by_ray.failed]
    assert {r.item.key: r.status for r in by_ray.results} == {
        r.item.key: "built" for r in by_workers.results
    }
    assert len(by_ray.results) == 8
    # Verified in the Ray workers too, and the same bytes on disk.
    assert all(r.verification and r.verification.passed for r in by_ray.results)
    assert files(remote.parent / "web/models") == files(local.parent / "web/models")
    assert not (
        remote.parent / ".tfjs-build/manifests/tfjs-build.yaml/worker.log"
    ).read_text()  # no local worker ran


def test_a_ray_worker_verifies_an_output_as_built(
    project: Callable[..., Path], model_store: Callable[..., Path], ray_cluster: None
) -> None:
    manifest = project(
        "version: 1\nmodels:\n  wide:\n    saved_model: wide\n", {"wide": model_store("wide")}
    )
    assert tfjsbuild.build([manifest], verify=False, cache="off").ok
    output = manifest.parent / "dist/wide/serving_default"
    before = {p.name: p.stat().st_mtime_ns for p in output.iterdir()} | files(output)
    result = tfjsbuild.build([manifest], cache="off", executor="ray")
    assert [(r.status, r.error) for r in result.results] == [("verified", None)]
    assert result.results[0].verification is not None
    assert {p.name: p.stat().st_mtime_ns for p in output.iterdir()} | files(output) == before
