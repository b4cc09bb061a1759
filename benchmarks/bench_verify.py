"""What verification costs on each TensorFlow.js backend, measured in one run.

    python benchmarks/bench_verify.py [--work DIR]

The MobileNetV2-sized SavedModel of bench_build.py (three signatures: features, classify,
embed; seeded weights, batch norm statistics from a random batch, nothing downloaded):
1. a `tensorflowjs_converter` loop (no verification: it has none), and `tfjs-build run` from
   scratch with its default verification (`auto`: WebAssembly, CPU where it cannot run a model);
2. then the same outputs verified again (not converted: only `verify.backends` changes) on
   `[cpu]`, `[wasm]`, `[webgl]` and `[cpu, wasm, webgl]`: per signature and backend, TF.js's own
   seconds (loading the model and running three samples), the signature's whole verification in
   its worker (TensorFlow's side, TF.js's, and for webgl Chromium's start when that worker paid
   it), and the run's wall time.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_build import BIN, converter_loop, make_mobilenet, timed

MANIFEST = """
version: 1
output_dir: web
defaults:
  verify: {VERIFY}
models:
  mobilenet:
    saved_model: model
    signatures: [features, classify, embed]
"""
CHOICES = ("[cpu]", "[wasm]", "[webgl]", "[cpu, wasm, webgl]")


def verified(work: Path, backends: str) -> tuple[float, list[dict]]:
    """Wall time of a `run --json` verifying on `backends`, and its signatures."""
    (work / "tfjs-build.yaml").write_text(MANIFEST.replace("{VERIFY}", f"{{backends: {backends}}}"))
    start = time.perf_counter()
    done = subprocess.run(
        [str(BIN / "tfjs-build"), "run", "--json"], cwd=work, capture_output=True, text=True
    )
    seconds = time.perf_counter() - start
    report = json.loads(done.stdout)
    if not report["ok"]:
        raise SystemExit(f"verifying on {backends} failed:\n{done.stdout}\n{done.stderr}")
    return seconds, report["signatures"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", type=Path, default=None, help="work folder (default: temporary)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="tfjs-build-bench-verify-"))
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    make_mobilenet(work / "model")
    loop = converter_loop(work, ["features", "classify", "embed"])
    (work / "tfjs-build.yaml").write_text(MANIFEST.replace("{VERIFY}", "{backend: auto}"))
    default = timed([str(BIN / "tfjs-build"), "run", "-q"], work)
    print(f"tensorflowjs_converter loop, 3 signatures, not verified: {loop:6.1f} s")
    print(
        f"tfjs-build run, verified (auto), from scratch:          {default:6.1f} s  "
        f"({loop / default:.2f}x faster)"
    )
    print()
    print("verified again on (not converted)  signature  backend  TF.js load+run  whole verify")
    for backends in CHOICES:
        wall, signatures = verified(work, backends)
        for signature in signatures:
            verify = signature["timings"]["verify"]
            for name, run in signature["verification"]["backends"].items():
                print(
                    f"{backends:<34} {signature['signature']:<10} {name:<7} "
                    f"{run['seconds']:>13.2f}s  {verify:>11.2f}s  (max abs error "
                    f"{run['max_abs_error']:.1e})"
                )
        print(f"{backends:<34} the run, wall time: {wall:.1f} s")


if __name__ == "__main__":
    main()
