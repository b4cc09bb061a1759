"""Latency of `tfjs-build watch`: from the last write of a re-export to "outputs ready".

    python benchmarks/bench_watch.py [--quiet-period 1.0] [--rounds 3]

A small three-signature SavedModel is watched; each round re-exports it with one head
retrained (`rm -rf model && mv export model`, the way export scripts replace a model) and
reads the cycle's JSON line. Latency minus the cycle's own build time is what watch adds:
the quiet period plus event and planning overhead (target: quiet period + 0.5 s).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

BIN = Path(sys.executable).parent

EXPORT = textwrap.dedent(
    """
    import os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    import numpy as np
    import tensorflow as tf

    seed = int(sys.argv[2])

    class Heads(tf.Module):
        def __init__(self):
            super().__init__()
            rng = np.random.RandomState(1)
            self.backbone = tf.Variable(rng.uniform(-1, 1, [64, 256]).astype("float32"))
            self.head_a = tf.Variable(rng.uniform(-1, 1, [256, 10]).astype("float32"))
            self.head_b = tf.Variable(np.random.RandomState(seed).uniform(-1, 1, [256, 1]).astype("float32"))

        def _features(self, x):
            return tf.nn.relu(tf.matmul(x, self.backbone))

        @tf.function(input_signature=[tf.TensorSpec([None, 64], tf.float32, name="x")])
        def features(self, x):
            return {"features": self._features(x)}

        @tf.function(input_signature=[tf.TensorSpec([None, 64], tf.float32, name="x")])
        def classify(self, x):
            return {"probs": tf.nn.softmax(tf.matmul(self._features(x), self.head_a))}

        @tf.function(input_signature=[tf.TensorSpec([None, 64], tf.float32, name="x")])
        def regress(self, x):
            return {"value": tf.matmul(self._features(x), self.head_b)}

    m = Heads()
    tf.saved_model.save(m, sys.argv[1], signatures={"features": m.features, "classify": m.classify, "regress": m.regress})
    """
)


def export(path: Path, seed: int) -> None:
    subprocess.run(
        [sys.executable, "-c", EXPORT, str(path), str(seed)], check=True, capture_output=True
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quiet-period", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tfjs-build-watch-bench-"))
    export(work / "model", seed=2)
    (work / "tfjs-build.yaml").write_text("version: 1\nmodels:\n  heads:\n    saved_model: model\n")
    watch = subprocess.Popen(
        [str(BIN / "tfjs-build"), "watch", "--json", "--quiet-period", str(args.quiet_period)],
        cwd=work,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    assert watch.stdout is not None
    try:
        first = json.loads(watch.stdout.readline())
        print(f"initial build: {first['report']['seconds']:.2f}s")
        print(f"{'round':<7}{'latency':>9}{'build':>9}{'overhead':>10}  rebuilt")
        overheads = []
        for round_number in range(1, args.rounds + 1):
            export(work / "staged", seed=10 + round_number)  # written elsewhere, then swapped in
            shutil.rmtree(work / "model")
            os.rename(work / "staged", work / "model")
            last_write = time.monotonic()
            cycle = json.loads(watch.stdout.readline())
            latency = time.monotonic() - last_write
            build = cycle["report"]["seconds"]
            rebuilt = [
                s["signature"] for s in cycle["report"]["signatures"] if s["status"] == "built"
            ]
            overheads.append(latency - build)
            print(
                f"{round_number:<7}{latency:>8.2f}s{build:>8.2f}s{latency - build:>9.2f}s  {rebuilt}"
            )
        worst = max(overheads)
        target = args.quiet_period + 0.5
        verdict = "within" if worst <= target else "OVER"
        print(
            f"worst overhead {worst:.2f}s: {verdict} the target of quiet period + 0.5 s = {target:.2f}s"
        )
    finally:
        os.killpg(watch.pid, signal.SIGTERM)
        watch.wait(timeout=60)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
