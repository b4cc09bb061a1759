"""One long-lived Node.js process running converted models in TensorFlow.js (`js/run_model.mjs`).

Node.js starts and imports TensorFlow.js once per process that verifies (a worker), not once per
signature: `Verifier.start` launches it early, so that it loads while the worker converts, and
each `run` sends one request line and reads one answer line. Tensors travel as base64 of their
little-endian bytes (strings as JSON text), so NaN and the infinities need no spelling. A Node.js
that died, answered nonsense or overran its time is stopped, and the next request starts a new
one. No TensorFlow here; numpy only once tensors are encoded.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import json
import os
import select
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from tfjsbuild.errors import BuildError
from tfjsbuild.verify.runtime import RUNNER, Runtime

if TYPE_CHECKING:
    from tfjsbuild.verify.compare import Array

REQUEST_TIMEOUT = 600.0  # seconds one model's runs may take (the task's own limit is the pool's)


@dataclass(frozen=True)
class TfjsRun:
    """A model's outputs for each sample, as TensorFlow.js computed them, and how."""

    outputs: list[dict[str, Array]]
    backend: str  # the backend that ran it: "cpu", "wasm" or "webgl"
    fallback: str | None  # why `auto` ran it on the CPU backend (None: it did not)
    seconds: dict[str, float]  # Node.js's own: "backend", "load", "run" (and "startup")


class BackendFailed(BuildError):
    """The backend asked for cannot run the model: it lacks a kernel of the graph (found before
    running), a kernel refused its inputs, or WebGL could not start. That backend's failure,
    not the verification's: the other backends still run."""


class Verifier:
    """A Node.js process serving `run` requests, started on first need and restarted after a
    failure; `close` stops it (so does the end of this process: its stdin closes)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """The Node.js process's id while one was started (it may have exited since)."""
        return None if self._process is None else self._process.pid

    def start(self) -> None:
        """Start Node.js (and its import of TensorFlow.js) unless it is running; returns at once."""
        if self._process is not None and self._process.poll() is None:
            return
        self._process = subprocess.Popen(
            [self.runtime.node, str(RUNNER), str(self.runtime.folder)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            # TF.js's own warnings: the worker's log (or the caller's stderr).
            stderr=None,
        )

    def run(
        self,
        model_dir: Path,
        samples: Sequence[Mapping[str, Array]],
        backend: str = "auto",
        timeout: float = REQUEST_TIMEOUT,
        meanwhile: Callable[[], object] | None = None,
        browser: str | None = None,
    ) -> TfjsRun:
        """The outputs of the converted model in `model_dir` for each sample of inputs;
        `meanwhile` is called while Node.js computes them (if it raises, Node.js is stopped)."""
        request = {
            "model_dir": str(model_dir),
            "backend": backend,
            "samples": [{"inputs": encode_tensors(sample)} for sample in samples],
        }
        if browser is not None:
            request["browser"] = browser
        line = json.dumps(request, allow_nan=False).encode() + b"\n"
        answer = self._ask(line, timeout, meanwhile)
        if "error" in answer:
            if answer.get("fatal"):
                self.close()
            message = str(answer["error"]).strip()
            if answer.get("backend_failed"):
                raise BackendFailed(message)
            raise BuildError(f"TensorFlow.js could not run the converted model: {message}")
        try:
            return TfjsRun(
                [decode_tensors(sample["outputs"]) for sample in answer["samples"]],
                str(answer["backend"]),
                None if answer.get("fallback") is None else str(answer["fallback"]),
                {str(k): float(v) for k, v in answer.get("seconds", {}).items()},
            )
        except (KeyError, TypeError, ValueError) as error:
            self.close()
            raise BuildError(f"TensorFlow.js answered something unreadable: {error!r}") from error

    def close(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        with contextlib.suppress(OSError):
            assert process.stdin is not None
            process.stdin.close()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()

    def _ask(
        self, line: bytes, timeout: float, meanwhile: Callable[[], object] | None
    ) -> dict[str, Any]:
        """Send a request and read its answer, calling `meanwhile` in between. A process that
        served earlier requests and is found dead (killed while idle: it may not be reaped
        yet) gets the request again, fresh, once."""
        reused = self._process is not None
        self.start()
        process = self._process
        assert process is not None and process.stdin is not None and process.stdout is not None
        # Written by a thread: a request of megabytes fills the pipe until Node.js reads it,
        # and `meanwhile` need not wait for that.
        writer = threading.Thread(target=_write, args=(process.stdin, line), daemon=True)
        writer.start()
        deadline = time.monotonic() + timeout
        if meanwhile is not None:
            try:
                meanwhile()
            except Exception:
                self._discard_answer(process, deadline)  # the next request finds it in step
                writer.join()
                raise
            except BaseException:  # the user's code ending the process: no waiting for TF.js
                process.kill()
                self.close()
                raise
        try:
            answer = _read_line(process.stdout.fileno(), deadline)
        except TimeoutError:
            process.kill()
            self.close()
            raise BuildError(f"TensorFlow.js did not finish within {timeout:.0f} s") from None
        finally:
            writer.join(timeout=5)
        if answer is None:
            status = process.wait()
            self.close()
            if reused:
                return self._ask(line, timeout, None)
            raise BuildError(
                f"Node.js running TensorFlow.js exited (status {status}) before it answered; "
                "its messages are in the worker log"
            )
        try:
            value = json.loads(answer)
        except ValueError as error:
            self.close()
            raise BuildError(f"TensorFlow.js answered something unreadable: {error}") from error
        if not isinstance(value, dict):
            self.close()
            raise BuildError(f"TensorFlow.js answered something unreadable: {answer[:200]!r}")
        return value

    def _discard_answer(self, process: subprocess.Popen[bytes], deadline: float) -> None:
        """Read the answer nobody wants; a process that does not give it is stopped."""
        assert process.stdout is not None
        try:
            if _read_line(process.stdout.fileno(), deadline) is not None:
                return
        except TimeoutError:
            process.kill()
        self.close()


def _write(stream: IO[bytes], line: bytes) -> None:
    with contextlib.suppress(OSError, ValueError):  # it died, or was closed: the read says so
        stream.write(line)
        stream.flush()


def _read_line(fd: int, deadline: float) -> bytes | None:
    """One line from `fd` (without its newline), None at end of file; TimeoutError at the
    deadline. The process answers one line per request, so nothing is read past it."""
    chunks: list[bytes] = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            continue
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            return None
        chunks.append(chunk)
        if chunk.endswith(b"\n"):
            return b"".join(chunks)[:-1]


_shared: dict[Runtime, Verifier] = {}


def shared_verifier(runtime: Runtime) -> Verifier:
    """This process's verifier for `runtime` (a worker keeps one for all its tasks), closed
    when the process exits (Node.js is not left running, nor waited for by no one)."""
    if runtime not in _shared:
        _shared[runtime] = Verifier(runtime)
        atexit.register(_shared[runtime].close)
    return _shared[runtime]


def encode_tensors(tensors: Mapping[str, Array]) -> dict[str, Any]:
    """Arrays as the runner reads them: bytes in base64, strings as JSON text."""
    import numpy as np  # only verification needs it

    encoded: dict[str, Any] = {}
    for key, value in tensors.items():
        array = np.asarray(value)
        shape = list(array.shape)
        if array.dtype.kind in "USO":
            data = [str(v, "utf-8") if isinstance(v, bytes) else str(v) for v in array.ravel()]
            encoded[key] = {"dtype": "string", "shape": shape, "data": data}
            continue
        if array.dtype.kind == "b":
            dtype, raw = "bool", array.astype("<u1")
        elif array.dtype.kind in "iu":
            if array.size and (array.min() < -(2**31) or array.max() >= 2**31):
                raise BuildError(f"input '{key}' has values outside int32, which TF.js uses")
            dtype, raw = "int32", array.astype("<i4")
        else:
            dtype, raw = "float32", array.astype("<f4")
        text = base64.b64encode(np.ascontiguousarray(raw).tobytes()).decode("ascii")
        encoded[key] = {"dtype": dtype, "shape": shape, "base64": text}
    return encoded


def decode_tensors(encoded: Mapping[str, Any]) -> dict[str, Array]:
    import numpy as np

    types = {"float32": "<f4", "int32": "<i4", "bool": "<u1"}
    decoded = {}
    for key, value in encoded.items():
        dtype = value["dtype"]
        if dtype == "string":
            array = np.array(value["data"], dtype=object)
        elif dtype in types:
            array = np.frombuffer(base64.b64decode(value["base64"]), dtype=types[dtype])
            array = array.astype(bool) if dtype == "bool" else array.astype(dtype)
        else:
            raise ValueError(f"output {key!r} has dtype {dtype}, which cannot be compared")
        decoded[key] = array.reshape(value["shape"])
    return decoded
