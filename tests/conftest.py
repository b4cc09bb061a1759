from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

TESTS = Path(__file__).parent
REPO = TESTS.parent
NODE_RUNNER = TESTS / "node" / "run_graph_model.mjs"


@pytest.fixture(scope="session")
def model_store(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Make each SavedModel once per session; tests copy it into their own folder."""
    import savedmodels

    store = tmp_path_factory.mktemp("models")
    made: dict[tuple[Any, ...], Path] = {}

    def get(kind: str, **kwargs: Any) -> Path:
        key = (kind, *sorted(kwargs.items()))
        if key not in made:
            path = store / f"{kind}-{len(made)}{savedmodels.FILE_SUFFIXES.get(kind, '')}"
            getattr(savedmodels, f"save_{kind}")(path, **kwargs)
            made[key] = path
        return made[key]

    return get


@pytest.fixture
def project(tmp_path: Path, model_store: Callable[..., Path]) -> Callable[..., Path]:
    """Write a manifest into tmp_path and copy the named models (folders or files) beside it."""

    def make(manifest: str, models: dict[str, Path] | None = None) -> Path:
        for name, source in (models or {}).items():
            target = tmp_path / name
            if target.is_dir():
                shutil.rmtree(target)
            if source.is_dir():
                shutil.copytree(source, target)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, target)
        path = tmp_path / "tfjs-build.yaml"
        path.write_text(textwrap.dedent(manifest).lstrip())
        return path

    return make


def export_fresh(kind: str, path: Path, **settings: object) -> Path:
    """Export in a new Python process: other function numbering, other uids."""
    args = [
        f"{key}={str(value).lower() if isinstance(value, bool) else value}"
        for key, value in settings.items()
    ]
    subprocess.run(
        [sys.executable, str(TESTS / "savedmodels.py"), kind, str(path), *args],
        check=True,
        capture_output=True,
    )
    return path


def run_cli(
    *args: str, cwd: Path, check: bool = False, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run the real `tfjs-build` command in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "tfjsbuild", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=check,
        timeout=timeout,
    )


def run_tfjs(model_dir: Path, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run a converted graph model in Node with pure-JS @tensorflow/tfjs; outputs by key."""
    if not (TESTS / "node" / "node_modules" / "@tensorflow" / "tfjs").is_dir():
        pytest.fail("tests/node is not installed: run `npm ci --prefix tests/node` (.ci/run does)")
    request = {
        "inputs": {
            key: {
                "dtype": "string" if value.dtype.kind in "US" else str(value.dtype),
                "shape": list(value.shape),
                "data": value.ravel().tolist(),
            }
            for key, value in inputs.items()
        }
    }
    done = subprocess.run(
        ["node", str(NODE_RUNNER), str(model_dir), "-"],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    outputs = json.loads(done.stdout)["outputs"]
    return {
        key: np.array(value["data"], dtype=_numpy_dtype(value["dtype"])).reshape(value["shape"])
        for key, value in outputs.items()
    }


def _numpy_dtype(dtype: str) -> str | None:
    return None if dtype == "string" else dtype
