"""Where a signature's conversion time goes, pass by pass, for five architectures.

    python benchmarks/profile_convert.py [--work DIR] [--size full|small] [--only NAME ...]

For MobileNetV2, ResNet50, a Transformer block, an LSTM and a PReLU network, each exported
by Keras 3 (`keras`) and by Keras 2 (`tf_keras`) as a SavedModel (tests/architectures.py;
seeded weights, nothing downloaded), a fresh process times: importing TensorFlow and
tensorflowjs, loading the SavedModel, freezing its signature, each pass of tensorflowjs's
graph optimization (its own passes, then tfjs-build's fast ones), and writing the files. Then
`tfjs-build` builds the model three times, verified with `verify.backend` auto (WebAssembly, or
the CPU backend where WebAssembly cannot run the model: each column says which ran), cpu and
webgl (headless Chromium, started for that build: its start-up is in the time), and the
worker's verification times are reported. That both ways give the same files is the tests' job (tests/test_fast_passes.py);
this prints times.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
KERAS_VERSIONS = ("3", "2")

MAKE = """
import sys
sys.path.insert(0, {tests!r})
import architectures
architectures.save_architecture({name!r}, __import__("pathlib").Path({path!r}), size={size!r},
                                keras_version={keras!r})
"""

# Runs in a fresh process: everything tfjs-build's worker does for one signature, timed.
PROFILE = """
import json, tempfile, time
start = time.perf_counter()
import tfjsbuild.worker.environment
import tensorflow as tf
from google.protobuf.json_format import MessageToDict
from tensorflowjs.converters import tf_saved_model_conversion_v2 as tfjs_v2
from tfjsbuild.worker.optimize import optimize_graph
times = {{"import": time.perf_counter() - start}}
start = time.perf_counter()
model = tf.saved_model.load({path!r})
function = model.signatures["serving_default"]
times["load"] = time.perf_counter() - start
passes = {{}}
for fast in (False, True):
    start = time.perf_counter()
    frozen = tfjs_v2._freeze_saved_model_v2(function, True)
    signature = tfjs_v2._build_signature_def(frozen, function.inputs, function.outputs)
    times["freeze"] = time.perf_counter() - start
    seconds = {{}}
    optimized = optimize_graph(frozen, signature, fast=fast, pass_seconds=seconds)
    passes["fast" if fast else "stock"] = seconds
start = time.perf_counter()
weights = tfjs_v2.extract_weights(optimized, None)
tfjs_v2.write_artifacts(MessageToDict(optimized), weights, tempfile.mkdtemp() + "/model.json",
                        tf.__version__, signature)
times["write"] = time.perf_counter() - start
print(json.dumps({{"times": times, "passes": passes}}))
"""

BACKENDS = {
    "auto": "verify, auto (on: see below)",
    "cpu": "verify, CPU",
    "webgl": "verify, WebGL (browser start included)",
}

VERIFY = """
import json, tfjsbuild
result = tfjsbuild.build(force=True, jobs=1)
print(json.dumps([[r.timings,
                   r.verification and ", ".join(b.backend for b in r.verification.backends),
                   r.error] for r in result.results]))
"""


def run_python(code: str, cwd: Path | None = None) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"failed:\n{code}\n{done.stderr[-3000:]}")
    lines = done.stdout.strip().splitlines()
    return lines[-1] if lines else ""


def profile(work: Path, name: str, keras: str, size: str) -> dict[str, float]:
    """One architecture's row: seconds per phase, optimize broken into its passes."""
    project = work / f"{name}-keras{keras}"
    model = project / "model"
    if not model.exists():
        tests = str(REPO / "tests")
        run_python(MAKE.format(tests=tests, name=name, path=str(model), size=size, keras=keras))
    measured = json.loads(run_python(PROFILE.format(path=str(model))))
    verified = {}
    for backend in BACKENDS:
        (project / "tfjs-build.yaml").write_text(
            f"version: 1\ndefaults: {{verify: {{backend: {backend}}}}}\nmodels:\n"
            "  model:\n    saved_model: model\n    signatures: [serving_default]\n"
        )
        timings, ran_on, error = json.loads(run_python(VERIFY, cwd=project))[0]
        verified[backend] = (timings["verify"], ran_on, error)
    times = measured["times"]
    stock, fast = measured["passes"]["stock"], measured["passes"]["fast"]
    row = {phase: times[phase] for phase in ("import", "load", "freeze")}
    row["optimize, tensorflowjs's passes"] = sum(stock.values())
    row.update({f"  {name}": seconds for name, seconds in stock.items()})
    row["optimize, fast passes"] = sum(fast.values())
    row["  fold_batch_norms, fast"] = fast["fold_batch_norms"]
    row["write"] = times["write"]
    for backend, label in BACKENDS.items():
        seconds, ran_on, error = verified[backend]
        row[label] = seconds
        print(f"{name} Keras {keras}, verify {backend}: ran on {ran_on}; error: {error}")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", type=Path, default=None, help="work folder (default: temporary)")
    parser.add_argument("--size", choices=("full", "small"), default="full")
    parser.add_argument("--only", nargs="*", default=None, help="architectures to profile")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="tfjs-build-profile-"))
    work.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(REPO / "tests"))
    names = args.only or ["mobilenet_v2", "resnet", "transformer", "lstm", "prelu"]

    columns = [(name, keras) for name in names for keras in KERAS_VERSIONS]
    rows = {column: profile(work, *column, args.size) for column in columns}
    phases = list(next(iter(rows.values())))
    print(f"seconds per signature ({args.size} size, one process per column)")
    print(f"| phase | {' | '.join(f'{n} (Keras {k})' for n, k in columns)} |")
    print(f"|---|{'---:|' * len(columns)}")
    for phase in phases:
        cells = " | ".join(f"{rows[column].get(phase, 0.0):.2f}" for column in columns)
        print(f"| {phase.replace('  ', '&nbsp;&nbsp;')} | {cells} |")
    print(textwrap.fill(f"work folder: {work}", 100))
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
