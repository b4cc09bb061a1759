"""What a build produced, as typed values: nothing here renders text or writes files.

`SignatureResult` is one signature's outcome in this build; `ReportRow` one recorded output as
`tfjs-build report` shows it; `Reporter` is what a build tells as it goes (render/ implements it).
How they are shown (text, JSON, HTML) is render/'s business.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from tfjsbuild.files.artifacts import TensorSpec, size_parts, tensor_specs_json
from tfjsbuild.planning.plan import PlanItem
from tfjsbuild.stores.build_history import PreviousBuild
from tfjsbuild.stores.records import SignatureRecord
from tfjsbuild.verify.quantization import QuantizationChoice, choice_json
from tfjsbuild.verify.record import VerificationRecord, verification_json

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
    verification: VerificationRecord | None = None
    cache: str | None = None  # restored: from which cache ("local" or "remote")
    # What `quantization: auto` tried and kept (a failed build's too: what it tried).
    quantization: QuantizationChoice | None = None
    # The static check of quantized weights' ranges, said before verification.
    warnings: tuple[str, ...] = ()

    @classmethod
    def sized(
        cls,
        item: PlanItem,
        status: Status,
        files: Sequence[SizedFile],
        seconds: float = 0.0,
        *,
        error: str | None = None,
        timings: Mapping[str, float] | None = None,
        verification: VerificationRecord | None = None,
        cache: str | None = None,
        quantization: QuantizationChoice | None = None,
    ) -> SignatureResult:
        """A result for an output made of `files`: its bytes, model.json and weight sizes."""
        model_json, weights = size_parts(files)
        return cls(
            item,
            status,
            seconds,
            sum(f.size for f in files),
            error=error,
            timings=timings,
            model_json_bytes=model_json,
            weight_bytes=weights,
            verification=verification,
            cache=cache,
            quantization=quantization,
        )


class SizedFile(Protocol):
    """A file of an output, as recorded or as checked: where it is, how big."""

    @property
    def path(self) -> str: ...

    @property
    def size(self) -> int: ...


class Reporter(Protocol):
    def build_started(self, items: Sequence[PlanItem], jobs: int, starting: int, how: str) -> None:
        """`items` go to `jobs` workers, of which `starting` local processes start now (0 when
        kept workers are warm, or on Ray), `how` ("importing TensorFlow", "forked from the
        server, TensorFlow imported")."""
        ...

    def signature_finished(self, result: SignatureResult) -> None: ...

    def working(self, running: Mapping[str, str]) -> None:
        """What the workers are on now: signature key -> what is being done ("converting")."""
        ...

    def notice(self, text: str) -> None:
        """Something slow starts now that is no signature's (installing the TF.js runtime)."""
        ...


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
    verification: VerificationRecord | None
    seconds: float
    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()
    max_bytes: int | None = None  # the manifest's size budget for it, if it sets one
    content_hash: str = ""  # the output's, as the asset index gives it to web apps
    built_at: str | None = None  # UTC (`build_history.TIME_FORMAT`); None in older states
    # The distributions that shaped the output (and the TensorFlow.js that verified it).
    tools: Mapping[str, str] = field(default_factory=dict)
    previous: PreviousBuild | None = None  # the output this one replaced
    # What `quantization: auto` tried and kept; None for any other quantization.
    quantization_choice: QuantizationChoice | None = None
    # The weight shards it shares with other signatures (`share_weights`): path below
    # output_dir -> bytes. Counted in `weight_bytes`, and once in a total (`distinct_bytes`).
    shared_files: Mapping[str, int] = field(default_factory=dict)

    @property
    def bytes(self) -> int:
        return self.model_json_bytes + self.weight_bytes

    def as_dict(self) -> dict[str, Any]:
        """This row as JSON (`report --json` prints these; build scripts may too)."""
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
            "verification": verification_json(self.verification),
            "seconds": self.seconds,
            "inputs": tensor_specs_json(self.inputs),
            "outputs": tensor_specs_json(self.outputs),
            "max_bytes": self.max_bytes,
            "content_hash": self.content_hash,
            "built_at": self.built_at,
            "tools": dict(self.tools),
            "previous": None if self.previous is None else self.previous.to_json(),
            "quantization_choice": choice_json(self.quantization_choice),
            "shared_files": dict(self.shared_files),
        }

    @classmethod
    def from_record(
        cls, manifest: Path, record: SignatureRecord, max_bytes: int | None = None
    ) -> ReportRow:
        model_json, weights = size_parts(record.all_files)
        return cls(
            manifest=manifest,
            model=record.model,
            signature=record.signature,
            output=record.output,
            model_json_bytes=model_json,
            weight_bytes=weights,
            shards=sum(1 for f in record.all_files if f.path.endswith(".bin")),
            quantization=record.options.quantization,
            verification=record.verification,
            seconds=record.seconds,
            inputs=record.inputs,
            outputs=record.outputs,
            max_bytes=max_bytes,
            content_hash=record.content_hash,
            built_at=record.built_at,
            tools=_tools(record),
            previous=record.previous,
            quantization_choice=record.quantization_choice,
            shared_files={f.path: f.size for f in record.shared_files},
        )


def distinct_bytes(rows: Iterable[ReportRow]) -> int:
    """What all the rows' files take on disk (and a browser loading them all fetches): a shared
    shard counted once per output_dir (per manifest), not once per signature using it."""
    total = 0
    shared: dict[tuple[Path, str], int] = {}
    for row in rows:
        total += row.bytes - sum(row.shared_files.values())
        shared.update({(row.manifest, path): size for path, size in row.shared_files.items()})
    return total + sum(shared.values())


def _tools(record: SignatureRecord) -> dict[str, str]:
    """`name=version,...` as the fingerprint recorded them, and the TF.js that verified it."""
    tools = dict(
        pair.partition("=")[::2] for pair in record.parts.get("tools", "").split(",") if pair
    )
    if record.verified_with is not None:
        tools["@tensorflow/tfjs"] = record.verified_with.tfjs
    return tools
