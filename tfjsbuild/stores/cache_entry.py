"""A cache entry: its key (what the output depends on), its JSON form, and whether it serves a build.

An entry is keyed by everything the output depends on (the signature fingerprint without the
output path) and lists the output's files by sha256, plus the verification result and what it
was run with: verification is not in the key, an entry serves a verifying build only if it
carries that very verification (`serves`).

Nothing read back is trusted (a cache may be shared, restored or tampered with): an entry is
size-capped and checked like the state (`readback`) before use, and may be signed with a shared
key (`TFJS_BUILD_CACHE_SIGNATURE_KEY`). Nothing here reads or writes a file: that is
`cache_store`'s.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tfjsbuild.files import readback
from tfjsbuild.files.artifacts import (
    MODEL_JSON,
    OutputFile,
    TensorSpec,
    tensor_specs_from_json,
    tensor_specs_json,
)
from tfjsbuild.files.readback import InvalidData
from tfjsbuild.sources.digest import canonical_json
from tfjsbuild.verify.quantization import QuantizationChoice, choice_from_json, choice_json
from tfjsbuild.verify.record import VerificationRecord, verification_from_json, verification_json
from tfjsbuild.verify.request import (
    VerificationRequest,
    request_from_json,
    request_json,
    skipped_runnable,
)

CACHE_VERSION = 1
SIGNATURE_KEY_ENV = "TFJS_BUILD_CACHE_SIGNATURE_KEY"
ENTRY_MAX_BYTES = 1 << 20  # an entry is a few KB; bigger is refused before it is parsed
_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class CacheEntry:
    key: str
    files: tuple[OutputFile, ...]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    verification: VerificationRecord | None
    seconds: float  # what the original conversion took: what a restore saves
    # What `verification` was run with (`SignatureFingerprint.verify`); None: not verified.
    verified_with: VerificationRequest | None = None
    # What `quantization: auto` chose (it depends on the verification, which is in the key).
    quantization_choice: QuantizationChoice | None = None

    def to_json(self, signature_key: str | None = None) -> str:
        data: dict[str, Any] = {
            "version": CACHE_VERSION,
            "key": self.key,
            "files": [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in self.files],
            "inputs": tensor_specs_json(self.inputs),
            "outputs": tensor_specs_json(self.outputs),
            "verification": verification_json(self.verification),
            "verified_with": request_json(self.verified_with),
            "seconds": self.seconds,
        }
        if self.quantization_choice is not None:  # only then: other entries stay as they were
            data["quantization_choice"] = choice_json(self.quantization_choice)
        if signature_key is not None:
            # Over all of the above: a changed verification or `verified_with` is a mismatch.
            data["signature"] = sign(data, signature_key)
        return canonical_json(data)

    @classmethod
    def from_json(cls, key: str, text: str | bytes, signature_key: str | None = None) -> CacheEntry:
        """Parse and check an entry read back from a store.

        Raises InvalidData naming the key path at fault, or SignatureRefused when a signature
        key is set and the entry is unsigned or its signature does not match.
        """
        if len(text) > ENTRY_MAX_BYTES:
            raise InvalidData("", f"larger than {ENTRY_MAX_BYTES} bytes (an entry is a few KB)")
        data = readback.as_dict(readback.parse_json(text), "")
        signature = data.pop("signature", None)
        if signature_key is not None:
            # Checked before anything else is looked at: an entry not written with the key is
            # not read at all.
            if signature is None:
                raise SignatureRefused(UNSIGNED)
            try:
                expected = sign(data, signature_key)
            except (ValueError, RecursionError) as error:
                raise InvalidData("", f"cannot be signed ({error})") from error
            if not (
                isinstance(signature, str)
                and _HEX64.fullmatch(signature)
                and hmac.compare_digest(signature, expected)
            ):
                raise SignatureRefused(MISMATCHED)
        if data.get("version") != CACHE_VERSION:
            raise InvalidData("version", f"expected {CACHE_VERSION}, got {data.get('version')!r}")
        if data.get("key") != key:
            raise InvalidData(
                "key", f"expected {key} (the entry's own key), got {data.get('key')!r:.80}"
            )
        verification = verification_from_json(data.get("verification"), "verification")
        verified_with = request_from_json(data.get("verified_with"), "verified_with")
        # Checked on what the entry says, even settings this version would not have written.
        _check_promise(verification, promised=data.get("verified_with") is not None)
        return cls(
            key,
            _entry_files(data.get("files")),
            tensor_specs_from_json(data.get("inputs"), "inputs"),
            tensor_specs_from_json(data.get("outputs"), "outputs"),
            verification,
            readback.as_float(data.get("seconds", 0.0), "seconds"),
            verified_with,
            choice_from_json(data.get("quantization_choice"), "quantization_choice"),
        )


def _check_promise(verification: VerificationRecord | None, *, promised: bool) -> None:
    """An entry carries the verification it promises: `verified_with` (which `serves` matches
    against what a build wants) comes with a verification, and that verification passed (this
    tool stores no other). One without `verified_with` promises nothing and serves only builds
    that verify nothing."""
    if verification is None:
        if promised:
            raise InvalidData("verified_with", "is set, but the entry carries no verification")
        return
    if not verification.passed:
        raise InvalidData(
            "verification.passed", "is false: only outputs whose verification passed are stored"
        )


UNSIGNED = "unsigned"
MISMATCHED = "mismatched"


class SignatureRefused(Exception):
    """An entry refused because a signature key is set: UNSIGNED or MISMATCHED."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def sign(data: Mapping[str, Any], signature_key: str) -> str:
    """HMAC-SHA256 of an entry's canonical JSON (without its signature). The entry lists every
    file's sha256, so the signature covers the blobs too."""
    message = canonical_json(dict(data)).encode("utf-8")
    return hmac.new(signature_key.encode("utf-8"), message, hashlib.sha256).hexdigest()


def _entry_files(value: Any) -> tuple[OutputFile, ...]:
    files = []
    seen: set[str] = set()
    for index, item in enumerate(readback.as_list(value, "files")):
        at = f"files[{index}]"
        data = readback.as_dict(item, at)
        path = readback.safe_relative_path(data.get("path"), f"{at}.path")
        if path in seen:
            raise InvalidData(f"{at}.path", f"{path!r} is listed twice")
        seen.add(path)
        files.append(
            OutputFile(
                path,
                readback.as_int(data.get("size"), f"{at}.size"),
                readback.as_sha256(data.get("sha256"), f"{at}.sha256"),
            )
        )
    if MODEL_JSON not in seen:
        raise InvalidData("files", f"lists no {MODEL_JSON}")
    return tuple(files)


def serves(entry: CacheEntry, wanted: VerificationRequest | None) -> bool:
    """Whether a restore of `entry` is the build wanted: any entry when no verification is
    (`wanted` None), else only one that passed that very verification."""
    if wanted is None:
        return True
    return (
        entry.verification is not None
        and entry.verification.passed
        and entry.verified_with == wanted
        and not skipped_runnable(entry.verification, wanted)
    )
