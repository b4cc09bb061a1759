"""What a verification is run with: a build's wish, and what a recorded one was run with.

`VerificationRequest` is the fingerprint's `verify` part (`SignatureFingerprint.verify`) and the
state's `verified_with`: two are the same verification when equal, so changing any of it
verifies the existing output again without converting it. Its JSON form is here, and the check
of that JSON read back untrusted (`request_from_json`).

Nothing here reads files or imports numpy or TensorFlow.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tfjsbuild.files.readback import as_dict, as_scalar_dict
from tfjsbuild.verify.record import VerificationRecord


@dataclass(frozen=True)
class BackendRequest:
    """One TensorFlow.js backend to run the output on, and how closely it must match."""

    backend: str  # "auto" (wasm, or cpu where wasm cannot run it), "cpu", "wasm" or "webgl"
    atol: float
    rtol: float
    # webgl only: fail where no browser is found (False: skip it with a warning).
    required: bool = False

    def to_json_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"atol": self.atol, "rtol": self.rtol}
        if self.backend == "webgl":
            data["required"] = self.required
        return data


@dataclass(frozen=True)
class VerificationRequest:
    """What a verification is run with: samples, inputs, the TF.js version, and backends."""

    samples: int
    inputs: (
        str | None
    )  # the sample inputs' `.npz`, relative to the manifest's folder; None: generated
    tfjs: str  # the TensorFlow.js version that runs the output
    inputs_sha256: str | None = None  # the `.npz`'s digest, when there is one
    backends: tuple[BackendRequest, ...] = (BackendRequest("auto", 1e-4, 1e-3),)
    # Whether a browser for webgl is found where this build runs: not part of the request
    # (neither compared nor written), so an output verified on WebGL elsewhere answers it; a
    # recorded WebGL run skipped for want of a browser does not once one is found.
    browser: bool = field(default=True, compare=False)

    def to_json_dict(self) -> dict[str, Any]:
        """As the state and cache entries write it (`verified_with`)."""
        data: dict[str, Any] = {
            "samples": self.samples,
            "inputs": self.inputs,
            "tfjs": self.tfjs,
            "backends": {each.backend: each.to_json_dict() for each in self.backends},
        }
        if self.inputs_sha256 is not None:
            data["inputs_sha256"] = self.inputs_sha256
        return data


def skipped_runnable(verification: VerificationRecord, wanted: VerificationRequest) -> list[str]:
    """The backends `verification` skipped that can run where `wanted` was planned: webgl,
    skipped for want of a browser, once one is found."""
    return [run.backend for run in verification.backends if run.skipped and wanted.browser]


def request_json(request: VerificationRequest | None) -> dict[str, Any] | None:
    return None if request is None else request.to_json_dict()


def request_from_json(value: Any, where: str) -> VerificationRequest | None:
    """What a recorded verification was run with, read back (None: not said).

    One this version would not have written (a key missing, unknown, or of another type:
    another tfjs-build version wrote it, or it was edited) is no request of this version's: it
    reads as None, so the verification it comes with answers no request of this version (the
    output is verified again; a cache entry serves only builds that verify nothing). One
    written before several backends could be asked for (`atol`, `rtol` and maybe `backend` at
    the top) reads as that one backend's; without `backend`, every verification ran on the CPU
    backend: it reads as `cpu`.
    """
    if value is None:
        return None
    data = dict(as_dict(value, where))
    written = data.pop("backends", None)
    data = dict(as_scalar_dict(data, where))  # located errors for what no version writes
    backends = _one_backend(data) if written is None else _backends(written, f"{where}.backends")
    samples, inputs, tfjs = data.get("samples"), data.get("inputs"), data.get("tfjs")
    digest = data.get("inputs_sha256")
    if not (
        backends
        and set(data) <= _REQUEST_KEYS | {"inputs_sha256"}
        and set(data) >= _REQUEST_KEYS
        and isinstance(samples, int)
        and not isinstance(samples, bool)
        and (inputs is None or isinstance(inputs, str))
        and isinstance(tfjs, str)
        and ("inputs_sha256" not in data or isinstance(digest, str))  # never written as null
    ):
        return None
    return VerificationRequest(
        samples, inputs, tfjs, digest if isinstance(digest, str) else None, backends
    )


_REQUEST_KEYS = {"samples", "inputs", "tfjs"}


def _backends(value: Any, where: str) -> tuple[BackendRequest, ...]:
    """The `backends` object as this version writes it; () when it is not that."""
    backends = []
    for name, written in as_dict(value, where).items():
        item = as_scalar_dict(written, f"{where}.{name}")
        keys = {"atol", "rtol"} | ({"required"} if name == "webgl" else set())
        required = item.get("required", False)
        if not (set(item) == keys and _tolerances(item) and isinstance(required, bool)):
            return ()
        atol, rtol = item["atol"], item["rtol"]
        assert isinstance(atol, int | float) and isinstance(rtol, int | float)  # `_tolerances`
        backends.append(BackendRequest(name, atol, rtol, required))
    return tuple(backends)


def _one_backend(data: dict[str, Any]) -> tuple[BackendRequest, ...]:
    """The one backend of a request written before `backends` (its keys taken out of `data`)."""
    tolerances = {"atol": data.pop("atol", None), "rtol": data.pop("rtol", None)}
    backend = data.pop("backend", "cpu")  # not said before it could be chosen: all ran on cpu
    if not (isinstance(backend, str) and _tolerances(tolerances)):
        return ()
    return (BackendRequest(backend, tolerances["atol"], tolerances["rtol"]),)


def _tolerances(item: Mapping[str, Any]) -> bool:
    return all(
        isinstance(item.get(key), int | float) and not isinstance(item.get(key), bool)
        for key in ("atol", "rtol")
    )
