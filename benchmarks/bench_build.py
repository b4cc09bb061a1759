"""tfjs-build against a `tensorflowjs_converter` loop, measured in the same run.

    python benchmarks/bench_build.py [--work DIR] [--skip-big]

1. A MobileNetV2 SavedModel (Keras 3 architecture, seeded random weights: nothing is
   downloaded) with three signatures (features, classify = head A, embed = head B), converted
   by a loop of `tensorflowjs_converter` calls and by `tfjs-build run` from scratch; prints the
   ratio.
2. A no-op `tfjs-build run` (nothing changed), and whether planning imports TensorFlow.
3. One signature's options changed: which signatures are rebuilt.
4. The model re-exported identically in a fresh process, then with one head retrained: which
   signatures are rebuilt (signature-level graph fingerprints).
5. Conversion speed: MobileNetV2 exported by Keras 3 (batch norms as multiplies and adds) and
   by Keras 2 (FusedBatchNormV3, which tensorflowjs folds in Python), with 3 and 10
   signatures: the converter loop against `tfjs-build run --force` with 1 and 2 workers, then
   verified (the default; converted again too), with each phase's seconds per signature; then
   the same two builds (`-j 2`) again with the fork server warm (TensorFlow imported by an
   earlier build's server, as on a developer's machine after the first build).
6. Planning an unchanged model with 1 GiB of variables (after one build recorded its stat data).

Every number is wall time of a fresh process, as a build script would see it; verification is
off except where a case says otherwise (the converter does not verify). Every case runs without
the fork server (`TFJS_BUILD_SERVER=off`: cold, as on CI) except the ones named "server warm".
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

BIN = Path(sys.executable).parent
# Verification is off for the comparisons: tensorflowjs_converter does not verify. Its cost is
# measured on its own at the end.
MANIFEST = """
version: 1
output_dir: web
defaults:
  verify: {enabled: false}
models:
  mobilenet:
    saved_model: model
    signatures:
      features: {}
      classify: {}
      embed: {}
"""


# float16 keeps the calibrated model within the default tolerances (uint8 does not: verified,
# `probs` differs by ~4e-4).
QUANTIZED_CLASSIFY = "      classify: {quantization: {float16: ['*']}}"


def timed(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    done = subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, env={**os.environ, **(env or {})}
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")
    return seconds


def make_mobilenet(path: Path, embed_seed: int = 2, extra_heads: int = 0) -> None:
    """MobileNetV2 backbone (seeded, so re-exports are identical) with three signatures:
    `features` (pooled backbone), `classify` (head A) and `embed` (head B, seeded separately
    to simulate retraining only that head), and `extra_heads` more (`head_0`, ...)."""
    script = textwrap.dedent(
        f"""
        import os
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
        import tensorflow as tf
        import keras
        import numpy as np
        tf.config.experimental.enable_op_determinism()  # re-exports give identical weights
        keras.utils.set_random_seed(1)
        backbone = keras.applications.MobileNetV2(weights=None, include_top=False, pooling="avg",
                                                  input_shape=(224, 224, 3))
        # Batch norm statistics from a random batch: untrained ones make every output ~1e-11,
        # and a parity check on those means nothing.
        for layer in backbone.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = 0.0
        backbone(np.random.RandomState(3).uniform(-1, 1, (8, 224, 224, 3)).astype("float32"), training=True)
        classify_head = keras.layers.Dense(1000, activation="softmax", name="classify_head")
        classify_head.build((None, 1280))
        heads = [keras.layers.Dense(16 * (i + 1), name=f"head_{{i}}") for i in range({extra_heads})]
        for head in heads:
            head.build((None, 1280))
        keras.utils.set_random_seed({embed_seed})
        embed_head = keras.layers.Dense(128, name="embed_head")
        embed_head.build((None, 1280))
        spec = [tf.TensorSpec([None, 224, 224, 3], tf.float32, name="image")]

        archive = keras.export.ExportArchive()
        archive.track(backbone)
        archive.track(classify_head)
        archive.track(embed_head)
        archive.add_endpoint("features", lambda image: {{"features": backbone(image)}}, input_signature=spec)
        archive.add_endpoint("classify", lambda image: {{"probs": classify_head(backbone(image))}}, input_signature=spec)
        archive.add_endpoint("embed", lambda image: {{"embedding": embed_head(backbone(image))}}, input_signature=spec)
        def endpoint(head):
            return lambda image: {{"y": head(backbone(image))}}
        for i, head in enumerate(heads):
            archive.track(head)
            archive.add_endpoint(f"head_{{i}}", endpoint(head), input_signature=spec)
        archive.write_out({str(path)!r}, verbose=False)
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True)


def make_mobilenet_keras2(path: Path, signatures: int) -> None:
    """The same shape in Keras 2 (tf_keras), whose BatchNormalization exports FusedBatchNormV3:
    the batch norms tensorflowjs folds in Python (Keras 3's exports are folded by grappler)."""
    script = textwrap.dedent(
        f"""
        import os
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
        import tensorflow as tf
        import tf_keras
        import numpy as np
        tf.config.experimental.enable_op_determinism()
        tf_keras.utils.set_random_seed(1)
        backbone = tf_keras.applications.MobileNetV2(weights=None, include_top=False,
                                                     pooling="avg", input_shape=(224, 224, 3))
        for layer in backbone.layers:  # batch norm statistics from a random batch
            if isinstance(layer, tf_keras.layers.BatchNormalization):
                layer.momentum = 0.0
        backbone(np.random.RandomState(3).uniform(-1, 1, (8, 224, 224, 3)).astype("float32"), training=True)
        module = tf.Module()
        module.backbone = backbone
        module.heads = [tf_keras.layers.Dense(16 * (i + 1)) for i in range({signatures} - 1)]
        spec = tf.TensorSpec([None, 224, 224, 3], tf.float32, name="image")
        signatures = {{"features": tf.function(lambda image: {{"features": backbone(image)}},
                                               input_signature=[spec])}}
        for i, head in enumerate(module.heads):
            head.build((None, 1280))
            signatures[f"head_{{i}}"] = tf.function(
                lambda image, head=head: {{"y": head(backbone(image))}}, input_signature=[spec])
        tf.saved_model.save(module, {str(path)!r}, signatures=signatures)
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True)


def make_big(path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import os
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
        import tensorflow as tf

        class Big(tf.Module):
            def __init__(self):
                super().__init__()
                self.table = tf.Variable(tf.zeros([16384, 16384]))  # 1 GiB of float32
                self.w = tf.Variable(tf.ones([4, 2]))

            @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
            def head(self, x):
                return {{"y": tf.matmul(x, self.w)}}

            @tf.function(input_signature=[tf.TensorSpec([None], tf.int32, name="ids")])
            def lookup(self, ids):
                return {{"rows": tf.gather(self.table, ids)}}

        module = Big()
        tf.saved_model.save(module, {str(path)!r}, signatures={{"head": module.head, "lookup": module.lookup}})
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True)


def converter_loop(work: Path, signatures: list[str]) -> float:
    """Seconds for one `tensorflowjs_converter` call per signature of work/model."""
    converter = BIN / "tensorflowjs_converter"
    return sum(
        timed(
            [
                str(converter),
                "--input_format=tf_saved_model",
                f"--signature_name={signature}",
                "model",
                f"converter-out/{signature}",
            ],
            work,
        )
        for signature in signatures
    )


def speed_case(work: Path, keras: str, count: int) -> list[tuple[str, float, str]]:
    """A MobileNetV2 of Keras `keras` with `count` signatures: the converter loop, then
    `tfjs-build run --force` (no cache, no verification) with 1 and 2 workers."""
    work.mkdir()
    if keras == "3":
        make_mobilenet(work / "model", extra_heads=count - 3)
        signatures = ["features", "classify", "embed", *(f"head_{i}" for i in range(count - 3))]
    else:
        make_mobilenet_keras2(work / "model", count)
        signatures = ["features", *(f"head_{i}" for i in range(count - 1))]
    (work / "tfjs-build.yaml").write_text(
        "version: 1\noutput_dir: web\ndefaults:\n  verify: {enabled: false}\nmodels:\n"
        f"  m:\n    saved_model: model\n    signatures: [{', '.join(signatures)}]\n"
    )
    loop = converter_loop(work, signatures)
    label = f"Keras {keras} MobileNetV2, {count} signatures"
    rows = [(f"tensorflowjs_converter loop, {label}", loop, "")]
    for jobs in (1, 2):
        seconds = timed([str(BIN / "tfjs-build"), "run", "-q", "--force", "-j", str(jobs)], work)
        rows.append(
            (f"tfjs-build run -j {jobs}, {label}", seconds, f"{loop / seconds:.2f}x faster")
        )
    # Verification on (the default), converting everything again: wall time of a fresh process,
    # and each signature's phases from the run's --json.
    (work / "tfjs-build.yaml").write_text(
        (work / "tfjs-build.yaml")
        .read_text()
        .replace("defaults:\n  verify: {enabled: false}\n", "")
    )
    start = time.perf_counter()
    done = subprocess.run(
        [str(BIN / "tfjs-build"), "run", "--force", "--json"],
        cwd=work,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - start
    report = json.loads(done.stdout)
    if not report["ok"]:
        raise SystemExit(f"the verified build failed:\n{done.stdout}\n{done.stderr}")
    backends = sorted({b for s in report["signatures"] for b in s["verification"]["backends"]})
    rows.append(
        (
            f"tfjs-build run, verified, {label}",
            seconds,
            f"{loop / seconds:.2f}x faster (verified on {', '.join(backends)})",
        )
    )
    PHASES[f"Keras {keras}, {count} signatures"] = phases(
        [s["timings"] for s in report["signatures"]]
    )
    return rows + warm_server_cases(work, loop, label)


def warm_server_cases(work: Path, loop: float, label: str) -> list[tuple[str, float, str]]:
    """`run --force -j 2`, unverified then verified, with a fork server that an earlier build
    started (this one's first build warms it up and is not counted)."""
    folder = Path(tempfile.mkdtemp(prefix="tfjs-srv-"))
    server = {"TFJS_BUILD_SERVER": "on", "TFJS_BUILD_SERVER_DIR": str(folder)}
    manifest = (work / "tfjs-build.yaml").read_text()
    unverified = manifest.replace(
        "models:\n", "defaults:\n  verify: {enabled: false}\nmodels:\n", 1
    )
    rows = []
    try:
        for name, text in (
            ("run -j 2, server warm", unverified),
            ("run, verified, server warm", manifest),
        ):
            (work / "tfjs-build.yaml").write_text(text)
            command = [str(BIN / "tfjs-build"), "run", "-q", "--force", "-j", "2"]
            timed(command, work, server)  # starts the server (or, the second time, only warms)
            seconds = timed(command, work, server)
            rows.append((f"tfjs-build {name}, {label}", seconds, f"{loop / seconds:.2f}x faster"))
    finally:
        (work / "tfjs-build.yaml").write_text(manifest)
        subprocess.run(
            [str(BIN / "tfjs-build"), "server", "stop"],
            env={**os.environ, **server},
            capture_output=True,
        )
        shutil.rmtree(folder, ignore_errors=True)
    return rows


# Per speed case: mean seconds per signature of each phase of the verified build.
PHASES: dict[str, dict[str, float]] = {}


def converting(phase: str) -> bool:
    """Whether a `--json` timing's phase is conversion (freeze, optimize: <pass>, write)."""
    return phase != "load" and not phase.startswith("verify")


def phases(timings: list[dict[str, float]]) -> dict[str, float]:
    """Mean seconds per signature: conversion (freeze, optimize, write), the whole
    verification, and its parts (each over the signatures that have it: Node.js's start-up
    only the first verification of each worker has, while that worker converts)."""

    def mean(select: Callable[[str], bool]) -> float:
        values = [sum(v for k, v in t.items() if select(k)) for t in timings]
        having = [v for v, t in zip(values, timings, strict=True) if any(map(select, t))]
        return sum(having) / max(1, len(having))

    parts = sorted({k for t in timings for k in t if k.startswith("verify: ")})
    return {
        "load (per worker, not per signature)": mean(lambda k: k == "load"),
        "convert": mean(converting),
        "verify": mean(lambda k: k == "verify"),
        **{f"  {k.removeprefix('verify: ')}": mean(lambda k, p=k: k == p) for k in parts},
    }


def statuses(cwd: Path) -> dict[str, str]:
    done = subprocess.run(
        [str(BIN / "tfjs-build"), "run", "--json"],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    )
    report = json.loads(done.stdout)
    return {f"{s['model']}:{s['signature']}": s["status"] for s in report["signatures"]}


def export_and_build(work: Path, embed_seed: int) -> tuple[float, list[str]]:
    """Re-export the model in a fresh process, swap it in, build; (seconds, rebuilt)."""
    make_mobilenet(work / "model-new", embed_seed=embed_seed)
    shutil.rmtree(work / "model")
    (work / "model-new").rename(work / "model")
    start = time.perf_counter()
    result = statuses(work)
    return time.perf_counter() - start, sorted(k for k, s in result.items() if s == "built")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--work", type=Path, default=None, help="work folder (default: a temporary one)"
    )
    parser.add_argument("--skip-big", action="store_true", help="skip the 1 GiB planning case")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="tfjs-build-bench-"))
    os.environ["TFJS_BUILD_SERVER"] = "off"  # cold builds, but for the "server warm" cases
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    print(f"work folder: {work}  (cores: {os.cpu_count()})")

    make_mobilenet(work / "model")
    size = sum(p.stat().st_size for p in (work / "model").rglob("*") if p.is_file())
    print(f"MobileNetV2-sized SavedModel: {size / 1e6:.1f} MB, 3 signatures")

    loop = converter_loop(work, ["features", "classify", "embed"])
    (work / "tfjs-build.yaml").write_text(MANIFEST)
    full = timed([str(BIN / "tfjs-build"), "run", "-q"], work)
    noop = min(timed([str(BIN / "tfjs-build"), "run", "-q"], work) for _ in range(5))
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, tfjsbuild; tfjsbuild.build(); print('tensorflow' in sys.modules)",
        ],
        cwd=work,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()

    (work / "tfjs-build.yaml").write_text(
        MANIFEST.replace("      classify: {}", QUANTIZED_CLASSIFY)
    )
    start = time.perf_counter()
    changed = statuses(work)
    one_option = time.perf_counter() - start
    rebuilt = sorted(key for key, status in changed.items() if status == "built")

    reexport_seconds, reexport_rebuilt = export_and_build(work, embed_seed=2)  # identical
    retrain_seconds, retrain_rebuilt = export_and_build(work, embed_seed=3)  # head B retrained

    # Verification on: every signature is run in TF.js as built (3 samples each); built with
    # verification off, none is converted again.
    (work / "tfjs-build.yaml").write_text(
        MANIFEST.replace("defaults:\n  verify: {enabled: false}\n", "").replace(
            "      classify: {}", QUANTIZED_CLASSIFY
        )
    )
    start = time.perf_counter()
    verified = statuses(work)
    verify_seconds = time.perf_counter() - start

    print()
    print(f"{'case':<58}{'seconds':>9}  ratio / result")
    print(f"{'tensorflowjs_converter loop, 3 signatures':<58}{loop:>9.2f}")
    print(
        f"{'tfjs-build run, 3 signatures from scratch':<58}{full:>9.2f}  {loop / full:.2f}x faster (target >= 2x)"
    )
    print(
        f"{'tfjs-build run, nothing changed (best of 5)':<58}{noop:>9.2f}  target <= 0.3 s; imports TensorFlow: {probe}"
    )
    print(
        f"{'tfjs-build run, classify quantization changed':<58}{one_option:>9.2f}  rebuilt {rebuilt}"
    )
    print(
        f"{'tfjs-build run, identical re-export (fresh process)':<58}{reexport_seconds:>9.2f}  rebuilt {reexport_rebuilt}"
    )
    print(
        f"{'tfjs-build run, head B (embed) retrained':<58}{retrain_seconds:>9.2f}  rebuilt {retrain_rebuilt}"
    )
    print(
        f"{'tfjs-build run, verification turned on (3 verified as built)':<58}{verify_seconds:>9.2f}  "
        f"{loop / verify_seconds:.2f}x the converter loop's speed; {sorted(set(verified.values()))}"
    )

    # Conversion speed: Keras 3 exports batch norms as multiplies and adds (grappler folds
    # them); Keras 2 as FusedBatchNormV3, which tensorflowjs folds in Python.
    for keras in ("3", "2"):
        for count in (3, 10):
            for case, seconds, result in speed_case(work / f"speed-k{keras}-{count}", keras, count):
                print(f"{case:<58}{seconds:>9.2f}  {result}")
    print()
    print("Verified builds, seconds per signature (means; a worker's start-up is not included):")
    labels = list(PHASES)
    print(f"{'phase':<40}" + "".join(f"{label[:28]:>30}" for label in labels))
    for phase in PHASES[labels[0]]:
        cells = "".join(f"{PHASES[label].get(phase, 0.0):>30.3f}" for label in labels)
        print(f"{phase:<40}{cells}")

    if not args.skip_big:
        big = work / "big"
        big.mkdir()
        make_big(big / "model")
        (big / "tfjs-build.yaml").write_text(
            "version: 1\nmodels:\n  big:\n    saved_model: model\n    signatures: [head]\n"
        )
        first = timed([str(BIN / "tfjs-build"), "run", "-q"], big)
        plan = min(timed([str(BIN / "tfjs-build"), "plan", "--json"], big) for _ in range(5))
        size = sum(p.stat().st_size for p in (big / "model").rglob("*") if p.is_file())
        print(
            f"{f'first build of a {size / 2**30:.2f} GiB SavedModel (hashes it once)':<58}{first:>9.2f}"
        )
        print(
            f"{'tfjs-build plan of it, unchanged (best of 5)':<58}{plan:>9.2f}  target <= 0.3 s (no rehash)"
        )
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
