"""The planner is pure: plain values in, items with reasons out."""

from __future__ import annotations

import json
import math
import os
from dataclasses import replace
from pathlib import Path

from conftest import VERIFY_REQUEST
from tfjsbuild.manifest.types import ConverterOptions, SavedModelSource
from tfjsbuild.planning.fingerprint import fingerprint_signature
from tfjsbuild.planning.plan import PlanItem, plan_build, select
from tfjsbuild.planning.reasons import option_changes
from tfjsbuild.planning.targets import Target
from tfjsbuild.stores.recorded_options import RecordedOptions
from tfjsbuild.stores.records import SignatureRecord
from tfjsbuild.verify.record import BackendRecord, VerificationRecord
from tfjsbuild.verify.request import request_from_json

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
        options=RecordedOptions.of(fp.options),
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


VERIFY = VERIFY_REQUEST
WEBGL = {"webgl": {"atol": 1e-3, "rtol": 1e-3, "required": False}}
PASSED = VerificationRecord(3, "generated", (BackendRecord("wasm", True, 1e-4, 1e-3, 0.0),))


def verified_plan(
    record_verify: dict[str, object] | None,
    now_verify: dict[str, object],
    *,
    verify: bool = True,
    recorded: VerificationRecord = PASSED,
    browser: bool = True,
    **kwargs: object,
) -> list[tuple[str, tuple[str, ...]]]:
    """(action, reasons) of one signature recorded with `record_verify` (None: not verified)
    and `recorded`, planned where a browser is found or not."""
    wanted = request_from_json(now_verify, "now") if now_verify else None
    t = target("a")
    fp = fingerprint_signature(
        source="src1",
        source_kind="graph",
        signature="a",
        tags=("serve",),
        options=t.options,
        output=t.output,
        tools=TOOLS,
        verify=None if wanted is None else replace(wanted, browser=browser),
    )
    old = replace(
        record(t),
        verification=None if record_verify is None else recorded,
        verified_with=request_from_json(record_verify, "record"),
    )
    changes = kwargs.pop("changes", {})
    items = plan_build(MANIFEST, [t], {t.key: fp}, changes, {t.key: old}, verify=verify, **kwargs)  # type: ignore[arg-type]
    return [(i.action, i.reasons) for i in items]


def test_verification_is_planned_apart_from_conversion() -> None:
    not_yet = "not verified yet (built with --no-verify or verify.enabled false)"
    # Built with --no-verify: up to date for --no-verify runs, verified (not built) by the next.
    assert verified_plan(None, VERIFY, verify=False) == [("up-to-date", ())]
    assert verified_plan(None, VERIFY) == [("verify", (not_yet,))]
    # Verified as wanted: up to date; other settings, sample inputs or TF.js: verified again.
    assert verified_plan(VERIFY, VERIFY) == [("up-to-date", ())]
    loose = {**VERIFY, "backends": {"auto": {"atol": 0.5, "rtol": 1e-3}}}
    assert verified_plan(VERIFY, loose) == [
        ("verify", ("verification changed: backends.auto.atol",))
    ]
    two = {**VERIFY, "backends": {"cpu": {"atol": 1e-4, "rtol": 1e-3}, **WEBGL}}
    assert verified_plan(VERIFY, two) == [
        ("verify", ("verification changed: backends.auto, backends.cpu, backends.webgl",))
    ]
    # WebGL skipped where no browser was found: it stands while none is; verified once one is.
    cpu = BackendRecord("cpu", True, 1e-4, 1e-3, 0.0)
    skipped = BackendRecord("webgl", False, 1e-3, 1e-3, math.nan, skipped=True, note="none")
    partly = VerificationRecord(3, "generated", (cpu, skipped))
    assert verified_plan(two, two, recorded=partly, browser=False) == [("up-to-date", ())]
    assert verified_plan(two, two, recorded=partly) == [
        ("verify", ("not verified on webgl yet: a browser is found now",))
    ]
    # Nothing could run (webgl alone, no browser): not passed, yet not verified again and again.
    webgl_only = {**VERIFY, "backends": WEBGL}
    nothing = VerificationRecord(3, "generated", (skipped,))
    assert not nothing.passed
    assert verified_plan(webgl_only, webgl_only, recorded=nothing, browser=False) == [
        ("up-to-date", ())
    ]
    assert verified_plan(webgl_only, webgl_only, recorded=nothing) == [
        ("verify", ("not verified on webgl yet: a browser is found now",))
    ]
    # A WebGL run recorded where a browser was found answers a build planned without one.
    ran = VerificationRecord(3, "generated", (cpu, replace(cpu, backend="webgl", atol=1e-3)))
    assert verified_plan(two, two, recorded=ran, browser=False) == [("up-to-date", ())]
    # Recorded before `backends` (tolerances and `backend` at the top): the same verification.
    older = {"samples": 3, "atol": 1e-4, "rtol": 1e-3, "inputs": None, "tfjs": "4.22.0"}
    assert verified_plan({**older, "backend": "auto"}, VERIFY) == [("up-to-date", ())]
    assert verified_plan(older, VERIFY) == [
        ("verify", ("verification changed: backends.auto, backends.cpu",))
    ]
    assert verified_plan(VERIFY, {**VERIFY, "inputs": "s.npz", "inputs_sha256": "ab"}) == [
        ("verify", ("verification changed: inputs, inputs_sha256",))
    ]
    # Verification turned off (in the manifest or by --no-verify): nothing to do.
    assert verified_plan(VERIFY, {}) == [("up-to-date", ())]
    assert verified_plan(VERIFY, loose, verify=False) == [("up-to-date", ())]
    # A rebuild verifies anyway: a changed setting is said, "not verified yet" is not.
    assert verified_plan(VERIFY, loose, changes={"m:a": "output missing: x"}) == [
        ("build", ("output missing: x", "verification changed: backends.auto.atol"))
    ]
    assert verified_plan(None, VERIFY, changes={"m:a": "output missing: x"}) == [
        ("build", ("output missing: x",))
    ]
    assert verified_plan(None, VERIFY, force=True) == [("build", (not_yet, "forced"))]


def test_a_record_of_an_older_fingerprint_scheme_rebuilds_once_saying_so() -> None:
    """Scheme 1 hashed the verification settings into the fingerprint, as `parts.verify`."""
    t = target("a")
    now = fingerprint(t)
    old = replace(
        record(t),
        fingerprint="0" * 64,
        parts={**now.parts, "scheme": "1", "verify": "9" * 64},
        options=RecordedOptions({**now.options.as_dict(), "verify": {"samples": 3, "atol": 1e-4}}),
        verification=PASSED,
    )
    items = plan_build(MANIFEST, [t], {t.key: now}, {}, {t.key: old})
    assert [(i.action, i.reasons) for i in items] == [
        ("build", ("fingerprint scheme changed: 1 -> 2",))
    ]
    # A record without any scheme (or parts) at all says as much, and does not crash either.
    bare = replace(old, parts={})
    (item,) = plan_build(MANIFEST, [t], {t.key: now}, {}, {t.key: bare})
    assert item.reasons == ("fingerprint scheme changed: ? -> 2",)


def test_a_recorded_verification_of_another_shape_is_verified_again_not_a_crash() -> None:
    """The state is read back, not trusted: whatever it holds, the plan verifies again."""
    t = target("a")
    now = fingerprint_signature(
        source="src1",
        source_kind="graph",
        signature="a",
        tags=("serve",),
        options=t.options,
        output=t.output,
        tools=TOOLS,
        verify=request_from_json(VERIFY, "now"),
    )
    for verification, verified_with in [
        (5, request_from_json(VERIFY, "record")),
        (
            replace(PASSED, backends=(replace(PASSED.backends[0], passed=False),)),
            request_from_json(VERIFY, "record"),
        ),
        (PASSED, 5),
        (PASSED, ["atol"]),
    ]:
        odd = replace(record(t), verification=verification, verified_with=verified_with)
        (item,) = plan_build(MANIFEST, [t], {t.key: now}, {}, {t.key: odd})
        assert (item.action, item.reasons) == (
            "verify",
            ("not verified yet (built with --no-verify or verify.enabled false)",),
        )


def test_a_planned_verification_request_reads_back_equal(tmp_path: Path) -> None:
    """What the planner asks for is what the state records and reads back: else a signature is
    verified again on every build ("verification changed: settings")."""
    from tfjsbuild.manifest.types import BackendCheck, Checks, VerifySettings
    from tfjsbuild.planning.planner import _verification_inputs
    from tfjsbuild.sources.digest import StatCache

    checks = (BackendCheck("cpu", atol=0.5), BackendCheck("webgl", required=True))
    for browser in ("", "chromium"):
        os.environ["TFJS_BUILD_CHROMIUM"] = browser
        try:
            wanted = _verification_inputs(
                replace(target("a"), checks=Checks(VerifySettings(backends=checks))),
                tmp_path,
                StatCache({}),
            )
        finally:
            del os.environ["TFJS_BUILD_CHROMIUM"]
        assert wanted is not None
        assert request_from_json(json.loads(json.dumps(wanted.to_json_dict())), "r") == wanted


def test_a_layers_model_recorded_before_its_output_named_its_tensors_rebuilds_once() -> None:
    """Layers outputs of before LAYERS_OUTPUT_VERSION 2 have no inputs or outputs in model.json
    (nor in the asset index): they rebuild once, saying why; graph models do not."""
    layers = replace(target("serving_default"), model="legacy")
    now = fingerprint_signature(
        source="src1",
        source_kind="keras-content",
        signature="serving_default",
        tags=(),
        options=DEFAULT_OPTIONS,
        output=layers.output,
        tools=TOOLS,
        format="layers_model",
    )
    assert (now.parts["format"], now.parts["layers_output"]) == ("layers_model", "2")
    parts = {k: v for k, v in now.parts.items() if k != "layers_output"}
    old = replace(record(layers), model="legacy", fingerprint="0" * 64, parts=parts)
    (item,) = plan_build(MANIFEST, [layers], {layers.key: now}, {}, {layers.key: old})
    assert (item.action, item.reasons) == (
        "build",
        ("layers model output version changed: 1 -> 2",),
    )
    graph = target("a")
    assert "layers_output" not in fingerprint(graph).parts
    assert reasons_for([graph], {"m:a": record(graph)}) == {"up-to-date m:a": ()}
