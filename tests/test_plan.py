"""The planner is pure: plain values in, items with reasons out."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from tfjsbuild.fingerprint import fingerprint_signature
from tfjsbuild.manifest import ConverterOptions, SavedModelSource
from tfjsbuild.plan import PlanItem, Target, option_changes, plan_build, select
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
        source_kind="graph",
        signature=t.signature,
        tags=("serve",),
        options=t.options,
        output=t.output,
        tools=tools,
    )


def record(t: Target, details: dict[str, str] | None = None, **kwargs) -> SignatureRecord:  # type: ignore[no-untyped-def]
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
        details=details or {},
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


def blocked(model: str, signature: str) -> PlanItem:
    return PlanItem(MANIFEST, model, signature, "", "build", ("cannot build",), blocked="error")


def test_a_model_with_errors_prunes_nothing_and_says_so() -> None:
    # `probs:` renamed to `prob:`: prob is blocked (not in the SavedModel), probs is kept.
    logits, probs = target("logits"), target("probs")
    other = replace(target("x"), model="other")
    records = {"m:logits": record(logits), "m:probs": record(probs), "other:x": record(other)}
    kept = ("kept: model 'm' has errors; fix them to prune",)
    assert reasons_for([logits], records, blocked=[blocked("m", "prob")]) == {
        "build m:prob": ("cannot build",),
        "up-to-date m:logits": (),
        "up-to-date m:probs": kept,
        # A model gone from the manifest has no errors of its own: still pruned.
        "remove other:x": ("removed from the manifest",),
    }
    # A source that cannot be read blocks the whole model ("*"): all its outputs stay.
    assert reasons_for([], records, blocked=[blocked("m", "*")]) == {
        "build m:*": ("cannot build",),
        "up-to-date m:logits": kept,
        "up-to-date m:probs": kept,
        "remove other:x": ("removed from the manifest",),
    }
    # Once the model resolves without errors, what it no longer names is pruned.
    assert reasons_for([logits], records) == {
        "up-to-date m:logits": (),
        "remove m:probs": ("removed from the manifest",),
        "remove other:x": ("removed from the manifest",),
    }


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


def explain(
    before: dict[str, str], now: dict[str, str], now_kind: str = "graph"
) -> tuple[str, ...]:
    t = target("a")
    fp = fingerprint_signature(
        source="new",
        source_kind=now_kind,
        signature="a",
        tags=("serve",),
        options=t.options,
        output=t.output,
        tools=TOOLS,
        details=now,
    )
    (item,) = plan_build(MANIFEST, [t], {t.key: fp}, {}, {t.key: record(t, before, source="old")})
    return item.reasons


def test_graph_changes_are_explained_by_what_changed() -> None:
    before = {
        "graph": "g1",
        "variable backbone": "v1",
        "variable head_b": "v2",
        "asset vocab.txt": "a1",
    }
    assert explain(before, {**before, "variable head_b": "v3"}) == ("weights changed: head_b",)
    assert explain(before, {**before, "graph": "g2"}) == ("graph changed",)
    assert explain(before, {**before, "asset vocab.txt": "a2", "graph": "g2"}) == (
        "graph changed",
        "assets changed: vocab.txt",
    )
    # Keras renames variables between exports: a renamed, unchanged weight is not "changed".
    renamed = {
        "graph": "g1",
        "variable dense_7": "v1",
        "variable head_b": "v3",
        "asset vocab.txt": "a1",
    }
    assert explain(before, renamed) == ("weights changed: head_b",)
    assert explain(before, {"graph": "g1"}) == ("captured inputs changed",)


def test_whole_model_fallback_says_why() -> None:
    now = {"whole model": "a TF1 SavedModel without an object graph"}
    assert explain({"graph": "g1"}, now, now_kind="whole-model") == (
        "fingerprint kind changed: graph -> whole-model",
    )
