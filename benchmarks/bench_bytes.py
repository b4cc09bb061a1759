"""What `share_weights` saves a web app: bytes on disk and requests, measured in one run.

    python benchmarks/bench_bytes.py [--work DIR]

The MobileNetV2 SavedModel of bench_build.py (three signatures: `features`, the pooled
backbone; `classify`, head A with 1,000 classes; `embed`, head B) built twice, without and with
`share_weights`; then the shared build's three signatures loaded by the generated loader in
headless Chromium (TF.js 4.22, CPU backend) from a local HTTP server that serves the shared
shards as immutable, counting the requests for each file, and each signature's outputs compared
with TensorFlow's on the same input.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]

from bench_build import make_mobilenet  # noqa: E402

from browser import run_page  # noqa: E402

SIGNATURES = ("features", "classify", "embed")
MANIFEST = """
version: 1
output_dir: web
defaults:
  share_weights: {share}
  verify: {{enabled: false}}
models:
  mobilenet:
    saved_model: model
    signatures: [features, classify, embed]
"""
TENSORFLOW = """
import json, sys
import numpy as np, tensorflow as tf
model = tf.saved_model.load(sys.argv[1])
image = tf.constant(np.load(sys.argv[2]))
print(json.dumps({name: {key: value.numpy().ravel().tolist()
                         for key, value in model.signatures[name](image=image).items()}
                  for name in sys.argv[3:]}))
"""
PAGE = """<!doctype html>
<script type="importmap">{ "imports": { "@tensorflow/tfjs": "/tf.js" } }</script>
<script type="module">
  import * as tf from "@tensorflow/tfjs";
  import { loadModel } from "/tfjs-build.js";
  const report = (body) => fetch("/result", { method: "POST", body: JSON.stringify(body) });
  try {
    await tf.setBackend("cpu");
    const image = tf.tensor(await (await fetch("/image.json")).json(), [1, 224, 224, 3]);
    const results = {};
    await Promise.all(SIGNATURES.map(async (signature) => {
      const loaded = await loadModel(tf, "mobilenet", signature);
      const outputs = await loaded.run({ image });
      results[signature] = Object.fromEntries(
        Object.entries(outputs).map(([name, t]) => [name, Array.from(t.dataSync())]));
    }));
    await report(results);
  } catch (error) {
    await report({ error: String((error && error.stack) || error) });
  }
</script>
"""


def build(work: Path, share: bool) -> Path:
    folder = work / ("shared" if share else "own")
    folder.mkdir()
    (folder / "model").symlink_to(work / "model")
    (folder / "tfjs-build.yaml").write_text(MANIFEST.format(share=str(share).lower()))
    subprocess.run(
        [sys.executable, "-m", "tfjsbuild", "run", "-q"],
        cwd=folder,
        check=True,
        capture_output=True,
    )
    return folder / "web"


def sizes(web: Path) -> tuple[dict[str, int], int]:
    """Each signature's bytes (its files, as the asset index lists them), and all distinct
    files' bytes under output_dir."""
    index = json.loads((web / "tfjs-build.json").read_text())
    each = {name: entry["bytes"] for name, entry in index["models"]["mobilenet"].items()}
    files = {f for entry in index["models"]["mobilenet"].values() for f in entry["files"]}
    return each, sum((web / f).stat().st_size for f in files)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, help="keep the files here (default: a temp dir)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-bytes-"))
    work.mkdir(parents=True, exist_ok=True)
    make_mobilenet(work / "model")

    own, own_total = sizes(build(work, share=False))
    web = build(work, share=True)
    each, total = sizes(web)
    largest = max(each.values())
    print("| signature | bytes, own shards | bytes, shared shards |")
    print("|---|---:|---:|")
    for name in SIGNATURES:
        print(f"| {name} | {own[name]:,} | {each[name]:,} |")
    print(f"| all, each file once | {own_total:,} | {total:,} |")
    print(f"shared total / largest signature: {total / largest:.3f} (target <= 1.1)")
    print(f"own total / largest signature: {own_total / largest:.3f}")

    image = np.random.RandomState(0).uniform(-1, 1, (1, 224, 224, 3)).astype("float32")
    np.save(work / "image.npy", image)
    (web / "image.json").write_text(json.dumps(image.ravel().tolist()))
    runtime = HERE.parent / "tfjsbuild/verify/js/node_modules/@tensorflow/tfjs/dist"
    shutil.copyfile(runtime / "tf.fesm.min.js", web / "tf.js")
    (web / "page.html").write_text(PAGE.replace("SIGNATURES", json.dumps(list(SIGNATURES))))
    requests: list[str] = []
    reported = run_page(
        web,
        "page.html",
        work / "profile",
        requests=requests,
        immutable="/tfjs-build-weights/",
        timeout=600,
    )
    if "error" in reported:
        raise SystemExit(f"the page failed: {reported['error']}")
    counts = Counter(r.split("?")[0] for r in requests if r.split("?")[0].endswith(".bin"))
    print(f"weight files requested: {len(counts)}, each {sorted(set(counts.values()))} time(s)")
    expected = json.loads(
        subprocess.run(
            [
                sys.executable,
                "-c",
                TENSORFLOW,
                str(work / "model"),
                str(work / "image.npy"),
                *SIGNATURES,
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    for name in SIGNATURES:
        for key, values in expected[name].items():
            error = float(np.max(np.abs(np.array(reported[name][key]) - np.array(values))))
            print(f"{name}.{key}: max abs error against TensorFlow {error:.2e}")


if __name__ == "__main__":
    main()
