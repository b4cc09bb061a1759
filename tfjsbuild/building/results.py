"""What a build produced, as typed values: nothing here renders text or writes files.

`SignatureResult` is one signature's outcome in this build; `ReportRow` one recorded output as
`tfjs-build report` shows it; `Reporter` is what a build tells as it goes (render/ implements it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from tfjsbuild.planning.plan import PlanItem

Status = Literal["built", "restored", "verified", "up-to-date", "failed", "removed", "skipped"]


@dataclass(frozen=True)
class SignatureResult:
    item: PlanItem
    status: Status
    seconds: float = 0.0
    bytes: int = 0
    error: str | None = None
    timings: Mapping[str, float] | None = None
    model_json_bytes: int = 0
    weight_bytes: int = 0
    verification: Mapping[str, Any] | None = None
    cache: str | None = None  # restored: from which cache ("local" or "remote")


class Reporter(Protocol):
    def build_started(self, items: Sequence[PlanItem], jobs: int) -> None: ...

    def signature_finished(self, result: SignatureResult) -> None: ...


@dataclass(frozen=True)
class ReportRow:
    """One built signature as `tfjs-build report` shows it, from the recorded state."""

    manifest: Path
    model: str
    signature: str
    output: str
    model_json_bytes: int
    weight_bytes: int
    shards: int
    quantization: dict[str, list[str]]
    verification: dict[str, Any] | None
    seconds: float

    @property
    def bytes(self) -> int:
        return self.model_json_bytes + self.weight_bytes

    def as_dict(self) -> dict[str, Any]:
        return {
            "manifest": str(self.manifest),
            "model": self.model,
            "signature": self.signature,
            "output": self.output,
            "bytes": self.bytes,
            "model_json_bytes": self.model_json_bytes,
            "weight_bytes": self.weight_bytes,
            "shards": self.shards,
            "quantization": self.quantization,
            "verification": self.verification,
            "seconds": self.seconds,
        }
