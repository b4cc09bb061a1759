"""The TensorFlow.js runtime verification runs in: Node.js, the pinned pure-JS @tensorflow/tfjs and
its WebAssembly backend, found or installed.

`js/run_model.mjs` (in `tfjsbuild/verify/js`) runs converted models on the samples it is sent
(`verifier.py` keeps one running). The runtime is installed once with `npm ci` from the lockfile
shipped there, into a cache folder (`$XDG_CACHE_HOME/tfjs-build` or `~/.cache/tfjs-build`), or taken from the folder
`TFJS_BUILD_TFJS_RUNTIME` names. No TensorFlow or numpy here: planning imports this module for
`tfjs_version`.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tfjsbuild.errors import BuildError

RUNTIME_ENV = "TFJS_BUILD_TFJS_RUNTIME"
JS_DIR = Path(__file__).parent / "js"
RUNNER = JS_DIR / "run_model.mjs"
# What the runtime's node_modules must hold, each at `tfjs_version()`.
PACKAGES = ("@tensorflow/tfjs", "@tensorflow/tfjs-backend-wasm")
BROWSER_ENV = "TFJS_BUILD_CHROMIUM"
# Looked for on PATH, in this order, when $TFJS_BUILD_CHROMIUM is not set.
BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
NO_VERIFY_HINT = "or build with --no-verify (or `verify: {enabled: false}` in the manifest)"


class RuntimeSetupError(BuildError):
    """Node.js, npm or the TensorFlow.js package is missing or would not install."""


@dataclass(frozen=True)
class Runtime:
    """Node.js, and the folder whose node_modules holds the pinned @tensorflow/tfjs (and its
    WebAssembly backend)."""

    node: str
    folder: Path  # its node_modules holds @tensorflow/tfjs


def tfjs_version() -> str:
    package = json.loads((JS_DIR / "package.json").read_text("utf-8"))
    return str(package["dependencies"]["@tensorflow/tfjs"])


def find_runtime(*, install: bool = True, announce: Callable[[str], None] | None = None) -> Runtime:
    """The runtime to verify with, installing it into the cache on first use (said first to
    `announce`: it takes a while)."""
    node = shutil.which("node")
    if node is None:
        raise RuntimeSetupError(
            "verification runs each converted model in Node.js, and `node` is not on PATH: "
            f"install Node.js 18 or newer, {NO_VERIFY_HINT}"
        )
    given = os.environ.get(RUNTIME_ENV)
    if given:
        folder = Path(given)
        for package in PACKAGES:
            found = _installed_version(folder, package)
            if found is None:
                raise RuntimeSetupError(
                    f"{RUNTIME_ENV}={given}: no node_modules/{package} there; run "
                    f"`npm ci --prefix {given}` with tfjs-build's package.json, or unset it"
                )
            if found != tfjs_version():
                raise RuntimeSetupError(
                    f"{RUNTIME_ENV}={given} holds {package} {found}, but tfjs-build verifies "
                    f"with {tfjs_version()}: install that version there, or unset {RUNTIME_ENV}"
                )
        return Runtime(node, folder)
    folder = cache_folder()
    if (folder / ".installed").is_file():
        return Runtime(node, folder)
    if not install:
        raise RuntimeSetupError(f"the TensorFlow.js runtime is not installed in {folder}")
    _install(folder, announce)
    return Runtime(node, folder)


def find_browser() -> str | None:
    """The Chromium that runs TF.js's WebGL backend: $TFJS_BUILD_CHROMIUM (a path or a name on
    PATH; set empty for none), or the first of `BROWSER_NAMES` on PATH; None when none is found."""
    given = os.environ.get(BROWSER_ENV)
    if given is not None:
        return shutil.which(given) if given else None
    return next(filter(None, map(shutil.which, BROWSER_NAMES)), None)


def no_browser_reason() -> str:
    """Why `find_browser` found none, and what to do."""
    given = os.environ.get(BROWSER_ENV)
    if given == "":
        return f"no Chromium is used here (${BROWSER_ENV} is set empty)"
    if given:
        return f"${BROWSER_ENV}={given} is not an executable: point it at Chromium or Chrome"
    return (
        f"no Chromium found (looked for {', '.join(BROWSER_NAMES)} on PATH): install Chromium, "
        f"or set ${BROWSER_ENV} to one"
    )


def cache_folder() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    lock = hashlib.sha256((JS_DIR / "package-lock.json").read_bytes()).hexdigest()[:12]
    return Path(base) / "tfjs-build" / f"tfjs-{tfjs_version()}-{lock}"


def _installed_version(folder: Path, package: str) -> str | None:
    try:
        found = json.loads((folder / "node_modules" / package / "package.json").read_text("utf-8"))
        return str(found["version"])
    except (OSError, ValueError, KeyError):
        return None


def _install(folder: Path, announce: Callable[[str], None] | None = None) -> None:
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
        if announce is not None:
            announce(f"Installing the TensorFlow.js runtime (once; npm, ~300 MB) into {folder} ...")
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
