"""How the driver scales: planning a generated monorepo of N models x S signatures.

    python benchmarks/bench_plan.py [--models 100] [--signatures 10] [--work DIR]

Exports one SavedModel with S signatures (TensorFlow, once), copies it N times, writes a
manifest naming every model, then times in fresh processes (the driver imports no TensorFlow):

1. a cold `tfjs-build plan` (every saved_model.pb parsed and fingerprinted per signature);
2. a warm plan (fingerprints cached in the manifest's state.json; only `stat` calls);
3. a warm plan that looks every signature up in a cache (an "all built elsewhere" CI cache),
   after seeding the local cache with an entry per signature;

and prints seconds and the driver's peak memory (max RSS) for each.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

EXPORT = """
import sys
import tensorflow as tf
count = int(sys.argv[2])

class Many(tf.Module):
    def __init__(self):
        super().__init__()
        self.w = tf.Variable(tf.random.stateless_normal([64, 64], seed=[1, 2]), name="shared")
        self.heads = [tf.Variable(tf.random.stateless_normal([64, 8], seed=[3, i]), name=f"head{i}")
                      for i in range(count)]

def head(module, i):
    @tf.function(input_signature=[tf.TensorSpec([None, 64], tf.float32, name="x")])
    def run(x):
        return {"y": tf.matmul(tf.nn.relu(tf.matmul(x, module.w)), module.heads[i])}
    return run

module = Many()
tf.saved_model.save(module, sys.argv[1], signatures={f"head{i}": head(module, i) for i in range(count)})
"""

PLAN = """
import json, resource, sys, time
start = time.perf_counter()
import tfjsbuild
plan = tfjsbuild.plan([sys.argv[1]])
seconds = time.perf_counter() - start
print(json.dumps({
    "seconds": seconds,
    "items": len(plan.items),
    "cached": sum(1 for i in plan.items if i.cached),
    "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "tensorflow": "tensorflow" in sys.modules,
}))
"""

SEED_CACHE = """
import sys, tfjsbuild
from tfjsbuild.planning.fingerprint import cache_key
from tfjsbuild.stores.cache_entry import CacheEntry
from tfjsbuild.stores.cache_store import Store
from tfjsbuild.verify.record import BackendRecord, VerificationRecord
store = Store(sys.argv[2], "rw", "local")
passed = VerificationRecord(3, "generated", (BackendRecord("wasm", True, 1e-4, 1e-3, 0.0),))
for item in tfjsbuild.plan([sys.argv[1]]).items:
    store.put(CacheEntry(cache_key(item.fingerprint), (), (), (), passed, 1.0), None)
"""


def run_json(code: str, *args: str, cwd: Path, env: dict[str, str] | None = None) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=100)
    parser.add_argument("--signatures", type=int, default=10)
    parser.add_argument("--work", type=Path)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="tfjs-build-bench-plan-"))
    work.mkdir(parents=True, exist_ok=True)

    template = work / "template"
    if not template.exists():
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
        subprocess.run(
            [sys.executable, "-c", EXPORT, str(template), str(args.signatures)],
            check=True,
            env=env,
            capture_output=True,
        )
    lines = ["version: 1", "models:"]
    for index in range(args.models):
        name = f"m{index:04d}"
        target = work / "models" / name
        if not target.exists():
            shutil.copytree(template, target)
        lines += [f"  {name}:", f"    saved_model: models/{name}"]
    manifest = work / "tfjs-build.yaml"
    manifest.write_text("\n".join(lines) + "\n")
    shutil.rmtree(work / ".tfjs-build", ignore_errors=True)

    signatures = args.models * args.signatures
    cold = run_json(PLAN, str(manifest), cwd=work)
    # `plan` writes nothing; a build records the fingerprint cache in the state. Record it
    # without converting 1,000 signatures: the planner `run` uses, then the state saved.
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, tfjsbuild.planning.manifests as ms, tfjsbuild.planning.planner as a,"
            " tfjsbuild.stores.state as s\n"
            "m = ms.load_manifests([sys.argv[1]])[0]\n"
            "p = a.plan_manifest(m, force=False, prune=True, paranoid=False)\n"
            "s.save_state(m.state_dir, p.state)\n",
            str(manifest),
        ],
        check=True,
        cwd=work,
    )
    warm = run_json(PLAN, str(manifest), cwd=work)
    cache_dir = work / "cache"
    shutil.rmtree(cache_dir, ignore_errors=True)
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", SEED_CACHE, str(manifest), str(cache_dir)], check=True, cwd=work
    )
    seeding = time.perf_counter() - start
    cached = run_json(
        PLAN, str(manifest), cwd=work, env={**os.environ, "TFJS_BUILD_CACHE": str(cache_dir)}
    )

    print(f"{args.models} models x {args.signatures} signatures = {signatures} signatures")
    print(f"{'case':<52}{'seconds':>9}{'max RSS MB':>12}  notes")
    for label, result in (
        ("plan, cold (every graph fingerprinted)", cold),
        ("plan, warm (fingerprints cached)", warm),
        ("plan, warm, every signature found in the cache", cached),
    ):
        print(
            f"{label:<52}{result['seconds']:>9.2f}{result['maxrss_mb']:>12.0f}  "
            f"{result['items']} items, {result['cached']} cached, "
            f"imports TensorFlow: {result['tensorflow']}"
        )
    print(f"(seeding {signatures} cache entries took {seeding:.1f} s)")


if __name__ == "__main__":
    main()
