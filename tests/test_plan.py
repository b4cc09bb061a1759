"""The planner is pure: plain values in, items with reasons out."""

from __future__ import annotations

from pathlib import Path

from tfjsbuild.fingerprint import fingerprint_signature
from tfjsbuild.manifest import ConverterOptions, SavedModelSource
from tfjsbuild.plan import Target, option_changes, plan_build, select
from tfjsbuild.state import SignatureRecord

MANIFEST = Path("/p/tfjs-build.yaml")
DEFAULT_OPTIONS = ConverterOptions()
TOOLS = {"tensorflow": "2.19.0", "tensorflowjs": "4.22.0", "tfjs-build": "0.1.0"}


def target(
    signature: str, options: ConverterOptions = DEFAULT_OPTIONS, output: str | None = None
) -> Target:
    return Target(
        manifest=MANIFEST,
        model="m",
        signature=signature,
        source=SavedModelSource(Path("/p/m"), ("serve",)),
        options=options,
        output=output or f"dist/m/{signature}",
    )


def fingerprint(t: Target, source: str = "src1", tools: dict[str, str] = TOOLS):  # type: ignore[no-untyped-def]
    return fingerprint_signature(
        source=source,
        signature=t.signature,
        tags=("serve",),
        options=t.options,
        output=t.output,
        tools=tools,
    )


def record(t: Target, **kwargs) -> SignatureRecord:  # type: ignore[no-untyped-def]
    fp = fingerprint(t, **kwargs)
    return SignatureRecord(
        model=t.model,
        signature=t.signature,
        output=t.output,
        fingerprint=fp.digest,
        parts=dict(fp.parts),
        options=dict(fp.options),
        files=(),
        inputs=(),
        outputs=(),
        content_hash="",
        seconds=1.0,
    )


def reasons_for(
    targets: list[Target], records: dict[str, SignatureRecord], **kwargs
) -> dict[str, tuple[str, ...]]:  # type: ignore[no-untyped-def]
    fps = {t.key: fingerprint(t) for t in targets}
    changes = kwargs.pop("changes", {})
    items = plan_build(MANIFEST, targets, fps, changes, records, **kwargs)
    return {f"{i.action} {i.key}": i.reasons for i in items}


def test_first_build_and_up_to_date() -> None:
    a, b = target("a"), target("b")
    assert reasons_for([a, b], {"m:a": record(a)}) == {
        "up-to-date m:a": (),
        "build m:b": ("first build",),
    }


def test_each_part_of_the_fingerprint_explains_itself() -> None:
    t = target(
        "a", ConverterOptions(quantization=(("uint8", ("*",)),), weight_shard_size_bytes=1024)
    )
    old = target("a", ConverterOptions(quantization=(("float16", ("*",)),)), output="dist/old")
    records = {"m:a": record(old, source="src0", tools={**TOOLS, "tensorflowjs": "4.21.0"})}
    assert reasons_for([t], records) == {
        "build m:a": (
            "converter upgraded: tensorflowjs 4.21.0 -> 4.22.0",
            "source changed",
            "options changed: quantization.float16, quantization.uint8, weight_shard_size_bytes",
            "output moved: dist/old -> dist/m/a",
        )
    }


def test_output_changes_and_force_add_reasons() -> None:
    a, b = target("a"), target("b")
    records = {"m:a": record(a), "m:b": record(b)}
    assert reasons_for(
        [a, b], records, changes={"m:a": "output missing: dist/m/a"}, force=True
    ) == {
        "build m:a": ("output missing: dist/m/a", "forced"),
        "build m:b": ("forced",),
    }


def test_removed_signatures_are_pruned_unless_building_a_selection() -> None:
    a, gone = target("a"), target("gone")
    records = {"m:a": record(a), "m:gone": record(gone)}
    assert reasons_for([a], records) == {
        "up-to-date m:a": (),
        "remove m:gone": ("removed from the manifest",),
    }
    assert reasons_for([a], records, prune=False) == {"up-to-date m:a": ()}


def test_select_by_model_or_signature() -> None:
    a, b = target("a"), target("b")
    items = plan_build(MANIFEST, [a, b], {t.key: fingerprint(t) for t in (a, b)}, {}, {})
    assert [i.key for i in select(items, ["m:b"])] == ["m:b"]
    assert [i.key for i in select(items, ["m"])] == ["m:a", "m:b"]
    assert [i.key for i in select(items, [])] == ["m:a", "m:b"]


def test_option_changes_name_dotted_keys() -> None:
    before = {"quantization": {"float16": ["*"]}, "metadata": {}, "strip_debug_ops": True}
    now = {"quantization": {"float16": ["dense/*"]}, "metadata": {"a": 1}, "strip_debug_ops": True}
    assert option_changes(before, now) == ["metadata", "quantization.float16"]
