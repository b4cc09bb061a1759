"""The TensorFlow.js side of verification: Node.js running the pinned, pure-JS @tensorflow/tfjs.

`js/run_model.mjs` (in `tfjsbuild/verify/js`) runs a converted model on the samples it is sent
as JSON. The runtime is installed once with `npm ci` from the lockfile shipped there, into a
cache folder (`$XDG_CACHE_HOME/tfjs-build` or `~/.cache/tfjs-build`), or taken from the folder
`TFJS_BUILD_TFJS_RUNTIME` names. No TensorFlow here, and numpy only once tensors are encoded:
planning imports this module for `tfjs_version`.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tfjsbuild.errors import BuildError

if TYPE_CHECKING:
    from tfjsbuild.verify.compare import Array

RUNTIME_ENV = "TFJS_BUILD_TFJS_RUNTIME"
JS_DIR = Path(__file__).parent / "js"
RUNNER = JS_DIR / "run_model.mjs"
NO_VERIFY_HINT = "or build with --no-verify (or `verify: {enabled: false}` in the manifest)"


class RuntimeSetupError(BuildError):
    """Node.js, npm or the TensorFlow.js package is missing or would not install."""


@dataclass(frozen=True)
class Runtime:
    """Node.js, and the folder whose node_modules holds the pinned @tensorflow/tfjs."""

    node: str
    folder: Path  # its node_modules holds @tensorflow/tfjs

    def run(
        self, model_dir: Path, samples: Sequence[Mapping[str, Array]], timeout: float = 600
    ) -> list[dict[str, Array]]:
        """Outputs of the converted model for each sample of inputs, keyed like the model."""
        request = {"samples": [{"inputs": encode_tensors(sample)} for sample in samples]}
        try:
            done = subprocess.run(
                [self.node, str(RUNNER), str(self.folder), str(model_dir), "-"],
                input=json.dumps(request, allow_nan=False),
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as error:
            raise BuildError(f"TensorFlow.js did not finish within {timeout:.0f} s") from error
        if done.returncode != 0:
            message = done.stderr.strip().removeprefix("run_model: error: ")
            raise BuildError(f"TensorFlow.js could not run the converted model: {message}")
        return [decode_tensors(sample["outputs"]) for sample in json.loads(done.stdout)["samples"]]


def tfjs_version() -> str:
    package = json.loads((JS_DIR / "package.json").read_text("utf-8"))
    return str(package["dependencies"]["@tensorflow/tfjs"])


def find_runtime(*, install: bool = True) -> Runtime:
    """The runtime to verify with, installing it into the cache on first use."""
    node = shutil.which("node")
    if node is None:
        raise RuntimeSetupError(
            "verification runs each converted model in Node.js, and `node` is not on PATH: "
            f"install Node.js 18 or newer, {NO_VERIFY_HINT}"
        )
    given = os.environ.get(RUNTIME_ENV)
    if given:
        folder = Path(given)
        found = _installed_version(folder)
        if found is None:
            raise RuntimeSetupError(
                f"{RUNTIME_ENV}={given}: no node_modules/@tensorflow/tfjs there; run "
                f"`npm ci --prefix {given}` with tfjs-build's package.json, or unset it"
            )
        if found != tfjs_version():
            raise RuntimeSetupError(
                f"{RUNTIME_ENV}={given} holds @tensorflow/tfjs {found}, but tfjs-build verifies "
                f"with {tfjs_version()}: install that version there, or unset {RUNTIME_ENV}"
            )
        return Runtime(node, folder)
    folder = cache_folder()
    if (folder / ".installed").is_file():
        return Runtime(node, folder)
    if not install:
        raise RuntimeSetupError(f"the TensorFlow.js runtime is not installed in {folder}")
    _install(folder)
    return Runtime(node, folder)


def cache_folder() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    lock = hashlib.sha256((JS_DIR / "package-lock.json").read_bytes()).hexdigest()[:12]
    return Path(base) / "tfjs-build" / f"tfjs-{tfjs_version()}-{lock}"


def _installed_version(folder: Path) -> str | None:
    package = folder / "node_modules" / "@tensorflow" / "tfjs" / "package.json"
    try:
        return str(json.loads(package.read_text("utf-8"))["version"])
    except (OSError, ValueError, KeyError):
        return None


def _install(folder: Path) -> None:
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeSetupError(
            f"installing the TensorFlow.js runtime needs npm, which is not on PATH: install "
            f"npm (it comes with Node.js), set {RUNTIME_ENV} to an installed one, {NO_VERIFY_HINT}"
        )
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / "install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another build may be installing the same runtime
        if (folder / ".installed").is_file():
            return
        staging = folder.parent / f".{folder.name}.{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        try:
            for name in ("package.json", "package-lock.json"):
                shutil.copyfile(JS_DIR / name, staging / name)
            done = subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                cwd=staging,
                capture_output=True,
                text=True,
                timeout=900,
            )
            if done.returncode != 0:
                tail = "\n".join(done.stderr.strip().splitlines()[-5:])
                raise RuntimeSetupError(
                    f"`npm ci` of @tensorflow/tfjs {tfjs_version()} into {folder} failed:\n{tail}"
                )
            (staging / ".installed").write_text(tfjs_version())
            shutil.rmtree(folder, ignore_errors=True)
            os.replace(staging, folder)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def encode_tensors(tensors: Mapping[str, Array]) -> dict[str, Any]:
    """Arrays as the runner's JSON: flat data, non-finite floats as strings."""
    import numpy as np  # only verification needs it; planning imports this module

    from tfjsbuild.verify.record import json_float

    encoded = {}
    for key, value in tensors.items():
        array = np.asarray(value)
        data: list[Any]
        if array.dtype.kind in "USO":
            dtype = "string"
            data = [str(v, "utf-8") if isinstance(v, bytes) else str(v) for v in array.ravel()]
        elif array.dtype.kind == "b":
            dtype, data = "bool", array.ravel().tolist()
        elif array.dtype.kind in "iu":
            dtype, data = "int32", array.astype("int64").ravel().tolist()
        else:
            dtype = "float32"
            data = [json_float(v) for v in array.astype("float32").ravel().tolist()]
        encoded[key] = {"dtype": dtype, "shape": list(array.shape), "data": data}
    return encoded


def decode_tensors(encoded: Mapping[str, Any]) -> dict[str, Array]:
    import numpy as np

    decoded = {}
    for key, value in encoded.items():
        dtype = value["dtype"]
        if dtype == "string":
            array = np.array(value["data"], dtype=object)
        elif dtype in ("float32", "complex64"):
            array = np.array([float(v) for v in value["data"]], dtype="float32")
        else:
            array = np.array(value["data"], dtype=dtype)
        decoded[key] = array.reshape(value["shape"])
    return decoded
