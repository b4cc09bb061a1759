from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

TESTS = Path(__file__).parent
REPO = TESTS.parent
# The TensorFlow.js runtime CI installs (`npm ci --prefix tfjsbuild/verify/js`, as .ci/run does):
# tests never install anything themselves. Worker and CLI subprocesses inherit it.
TFJS_RUNTIME = REPO / "tfjsbuild" / "verify" / "js"
# The default manifest's state folder, relative to the manifest's folder.
STATE = Path(".tfjs-build/manifests/tfjs-build.yaml")
# A `python:` source's module: `build()` returns a tf.Module whose `scale` signature multiplies
# its input by SCALE (`.format(scale=2.0)`).
SCALER_MODULE = """
import tensorflow as tf

SCALE = {scale}


class Scaler(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
    def scale(self, x):
        return {{"y": x * SCALE}}


def build():
    return Scaler()
"""
# What a verification with the default settings was run with, as this version writes it
# (`verified_with` in the state and cache entries).
VERIFY_REQUEST = {
    "samples": 3,
    "inputs": None,
    "tfjs": "4.22.0",
    "backends": {"auto": {"atol": 1e-4, "rtol": 1e-3}},
}
os.environ["TFJS_BUILD_TFJS_RUNTIME"] = str(TFJS_RUNTIME)
# Builds start their own workers, unless a test asks for the fork server (or the whole session
# does: `TFJS_BUILD_SERVER=on pytest`). Servers live in this session's own folder (a short path:
# a Unix socket's is at most ~100 bytes) and are stopped when the session ends.
os.environ.setdefault("TFJS_BUILD_SERVER", "off")
SERVERS_MADE = (
    None if "TFJS_BUILD_SERVER_DIR" in os.environ else tempfile.mkdtemp(prefix="tfjs-srv-")
)
os.environ.setdefault("TFJS_BUILD_SERVER_DIR", SERVERS_MADE or "")
if not (TFJS_RUNTIME / "node_modules" / "@tensorflow" / "tfjs").is_dir():
    pytest.exit(
        f"the TensorFlow.js runtime is not installed: run `npm ci --prefix {TFJS_RUNTIME}` "
        "(.ci/run does)",
        returncode=2,
    )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    from tfjsbuild.building import fork_server

    fork_server.stop_servers(os.environ)  # each exits once its workers have
    if SERVERS_MADE is not None:
        shutil.rmtree(SERVERS_MADE, ignore_errors=True)


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


@pytest.fixture(scope="session")
def architectures(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every architecture of tests/architectures.py in both Kerases, small, as SavedModels
    named <architecture>-keras<version>; made once, in a process of its own (Keras stays out of
    the test process)."""
    folder = tmp_path_factory.mktemp("architectures")
    subprocess.run(
        [sys.executable, str(TESTS / "architectures.py"), str(folder)],
        check=True,
        capture_output=True,
    )
    return folder


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


def read_output(folder: Path) -> tuple[dict[str, object], dict[str, bytes]]:
    """A graph model output as a test compares it: model.json parsed, every other file's bytes."""
    files = {p.name: p.read_bytes() for p in folder.iterdir() if p.name != "model.json"}
    return json.loads((folder / "model.json").read_text()), files


def default_sigint() -> None:
    """A `preexec_fn` for processes a test sends SIGINT: where the tests run in the background of
    a non-interactive shell, SIGINT is ignored and children inherit that, so Ctrl-C would never
    reach tfjs-build."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


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
    *args: str,
    cwd: Path,
    check: bool = False,
    timeout: float = 600,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the real `tfjs-build` command in a subprocess (`env`: variables added to ours)."""
    return no_internal_error(
        subprocess.run(
            [sys.executable, "-m", "tfjsbuild", *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=check,
            timeout=timeout,
            env=None if env is None else {**os.environ, **env},
        )
    )


def no_internal_error(
    result: subprocess.CompletedProcess[str],
) -> subprocess.CompletedProcess[str]:
    """Exit code 3 means a bug in tfjs-build: no input a test gives the CLI may produce it."""
    if result.returncode == 3:
        pytest.fail(f"tfjs-build exited 3 (an internal error):\n{result.stderr}")
    return result


def run_tfjs(model_dir: Path, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run a converted model in Node with pure-JS @tensorflow/tfjs; outputs by key."""
    from tfjsbuild.verify.runtime import find_runtime
    from tfjsbuild.verify.verifier import shared_verifier

    verifier = shared_verifier(find_runtime(install=False))  # one Node.js for the test session
    (outputs,) = verifier.run(model_dir, [inputs], backend="cpu").outputs
    return outputs


def stored_dtypes(output: Path) -> set[str]:
    """The dtypes model.json stores its weights as (a quantized weight's quantized dtype)."""
    manifest = json.loads((output / "model.json").read_text())["weightsManifest"]
    return {
        (weight.get("quantization") or {}).get("dtype", weight["dtype"])
        for group in manifest
        for weight in group["weights"]
    }
