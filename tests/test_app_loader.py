"""The app's side of a build: the asset index, and the loader generated beside it (tfjs-build.js
and tfjs-build.d.ts), used as apps use them: the README's example build, real Node.js, headless
Chromium and the TypeScript compiler."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest

import tfjsbuild
from browser import run_page
from conftest import REPO, TFJS_RUNTIME

pytestmark = pytest.mark.slow

APP = REPO / "examples" / "app"
TSC = REPO / "tests" / "js" / "node_modules" / ".bin" / "tsc"
VITE = REPO / "tests" / "js" / "node_modules" / "vite" / "bin" / "vite.js"
MODELS = "web/models"
# Every signature in Node.js: inputs from a JSON file, outputs by name into another (stdout has
# TensorFlow.js's own banner), and the error each bad input gives.
RUN_ALL = """
import * as tf from "@tensorflow/tfjs";
import { readFileSync, writeFileSync } from "node:fs";
import { loadModel, models } from "./web/models/tfjs-build.js";

const given = JSON.parse(readFileSync(process.argv[2], "utf8"));
const results = {};
for (const [model, signatures] of Object.entries(models)) {
  for (const signature of Object.keys(signatures)) {
    const loaded = await loadModel(tf, model, signature);
    const inputs = {};
    for (const [name, { shape, data }] of Object.entries(given[`${model}:${signature}`])) {
      inputs[name] = tf.tensor(data, shape, "float32");
    }
    const outputs = await loaded.run(inputs);
    results[`${model}:${signature}`] = Object.fromEntries(await Promise.all(
      Object.entries(outputs).map(async ([name, t]) => [name, { shape: t.shape, data: Array.from(await t.data()) }])));
    loaded.dispose();
  }
}
// The same files through baseUrl: a folder path (relative or not), a file: URL.
const again = [];
for (const baseUrl of ["web/models", `${process.cwd()}/web/models/`, new URL("./web/models", import.meta.url)]) {
  const loaded = await loadModel(tf, "legacy", "serving_default", { baseUrl });
  const { x } = given["legacy:serving_default"];
  const { probs } = await loaded.run({ x: tf.tensor(x.data, x.shape, "float32") });
  again.push({ probs: { shape: probs.shape, data: Array.from(await probs.data()) } });
}
const errors = [];
const attempt = async (what) => {
  try { await what(); errors.push("no error"); } catch (error) { errors.push(error.message); }
};
const scorer = await loadModel(tf, "scorer", "serving_default");
const legacy = await loadModel(tf, "legacy", "serving_default");
await attempt(() => scorer.run({ x: tf.ones([1, 8]), y: tf.ones([1, 8]) }));
await attempt(() => scorer.run({}));
await attempt(() => scorer.run({ x: tf.ones([1, 8], "int32") }));
await attempt(() => scorer.run({ x: tf.ones([1, 9]) }));
await attempt(() => scorer.run({ x: tf.ones([8]) }));
await attempt(() => scorer.run({ x: [1, 2] }));
await attempt(() => legacy.run({ input: tf.ones([1, 8]) }));
await attempt(() => loadModel(tf, "scorer", "serving"));
await attempt(() => loadModel(tf, "scorers", "serving_default"));
writeFileSync(process.argv[3], JSON.stringify({ results, again, errors }));
"""
# TensorFlow's answers, by name, from each source as its own library loads it (Keras kept out
# of the test process).
TENSORFLOW = """
import json, sys
from pathlib import Path
import numpy as np
import tensorflow as tf

root, given = Path(sys.argv[1]), json.loads(Path(sys.argv[2]).read_text())
def arrays(key):
    return {k: np.array(v["data"], "float32").reshape(v["shape"]) for k, v in given[key].items()}
def plain(outputs):
    return {k: {"shape": list(np.shape(v)), "data": np.ravel(v).tolist()} for k, v in outputs.items()}
answers = {}
for model in ("classifier", "scorer"):
    loaded = tf.saved_model.load(str(root / "models" / model))
    for name, function in loaded.signatures.items():
        answers[f"{model}:{name}"] = plain(function(**arrays(f"{model}:{name}")))
import keras
tagger = keras.saving.load_model(root / "models/tagger.keras")
answers["tagger:serving_default"] = plain(tagger(arrays("tagger:serving_default")["embedding"]))
import tf_keras
legacy = tf_keras.models.load_model(root / "models/legacy.h5", compile=False)
probs = legacy(arrays("legacy:serving_default")["x"])
answers["legacy:serving_default"] = plain(dict(zip(legacy.output_names, [probs])))
sys.path.insert(0, str(root))
from preprocess.normalize import build
normalizer = build()
for name in ("normalize", "denormalize"):
    answers[f"normalizer:{name}"] = plain(getattr(normalizer, name)(**arrays(f"normalizer:{name}")))
print(json.dumps(answers))
"""


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The README's first command: the example models made and built (into web/models), with
    @tensorflow/tfjs where an app's node_modules would have it."""
    root = tmp_path_factory.mktemp("example")
    shutil.copytree(REPO / "examples", root, dirs_exist_ok=True, ignore=ignored)
    subprocess.run(
        [sys.executable, str(REPO / "examples/make_models.py"), str(root / "models")],
        check=True,
        capture_output=True,
    )
    result = tfjsbuild.build([root / "tfjs-build.yaml"])
    assert result.ok, [r.error for r in result.failed]
    (root / "node_modules").symlink_to(TFJS_RUNTIME / "node_modules")
    return root


def ignored(folder: str, names: list[str]) -> set[str]:
    return {name for name in names if name in ("models", "web", "node_modules", "__pycache__")}


def test_the_index_matches_its_schema_and_describes_every_format(example: Path) -> None:
    schema = json.loads((REPO / "schemas/asset-index.schema.json").read_text())
    index = json.loads((example / MODELS / "tfjs-build.json").read_text())
    jsonschema.Draft202012Validator(schema).validate(index)
    legacy = index["models"]["legacy"]["serving_default"]
    assert (legacy["format"], legacy["inputs"], legacy["outputs"]) == (
        "layers_model",
        [{"name": "x", "dtype": "float32", "shape": [None, 8]}],
        [{"name": "probs", "dtype": "float32", "shape": [None, 3]}],
    )
    scorer = index["models"]["scorer"]["serving_default"]
    assert scorer["format"] == "graph_model"
    assert [o["name"] for o in scorer["outputs"]] == ["contour", "note", "onset"]
    # The loader carries the same models: no second fetch, and its types agree.
    module = (example / MODELS / "tfjs-build.js").read_text()
    embedded = re.search(r"^export const models = (\{.*?^\});$", module, re.M | re.S)
    assert embedded is not None
    assert json.loads(embedded.group(1)) == index["models"]


def test_every_signature_runs_in_node_by_name_as_in_tensorflow(
    example: Path, tmp_path: Path
) -> None:
    index = json.loads((example / MODELS / "tfjs-build.json").read_text())
    random = np.random.RandomState(5)
    given = {
        f"{model}:{signature}": {
            spec["name"]: {
                "shape": [2 if size is None else size for size in spec["shape"]],
                "data": random.uniform(-1, 1, [2 if s is None else s for s in spec["shape"]])
                .ravel()
                .tolist(),
            }
            for spec in entry["inputs"]
        }
        for model, signatures in index["models"].items()
        for signature, entry in signatures.items()
    }
    assert len(given) == 8
    (tmp_path / "inputs.json").write_text(json.dumps(given))
    (example / "run_all.mjs").write_text(RUN_ALL)
    node = subprocess.run(
        ["node", "run_all.mjs", str(tmp_path / "inputs.json"), str(tmp_path / "out.json")],
        cwd=example,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert node.returncode == 0, node.stderr
    ran = json.loads((tmp_path / "out.json").read_text())
    answers = json.loads(
        subprocess.run(
            [sys.executable, "-c", TENSORFLOW, str(example), str(tmp_path / "inputs.json")],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        ).stdout
    )
    assert sorted(ran["results"]) == sorted(answers) == sorted(given)
    for key, outputs in answers.items():
        assert sorted(ran["results"][key]) == sorted(outputs), key
        # Within the tolerance the build verified it with (uint8 weights: classifier:logits).
        model, signature = key.split(":")
        (checked,) = index["models"][model][signature]["verification"]["backends"].values()
        for name, expected in outputs.items():
            got = ran["results"][key][name]
            assert got["shape"] == expected["shape"], (key, name)
            np.testing.assert_allclose(
                got["data"], expected["data"], rtol=checked["rtol"], atol=checked["atol"]
            )
    assert ran["again"] == [ran["results"]["legacy:serving_default"]] * 3
    inputs = "its inputs: x float32 [-1,8]"
    assert ran["errors"] == [
        f"scorer:serving_default has no input 'y'; {inputs}",
        f"scorer:serving_default is missing input 'x'; {inputs}",
        f"scorer:serving_default input 'x' is int32, not float32; {inputs}",
        f"scorer:serving_default input 'x' has shape [1,9], not [-1,8]; {inputs}",
        f"scorer:serving_default input 'x' has shape [8], not [-1,8]; {inputs}",
        f"scorer:serving_default input 'x' is not a tensor; {inputs}",
        f"legacy:serving_default has no input 'input'; {inputs}",
        "model 'scorer' has no signature 'serving'; its signatures: serving_default",
        "tfjs-build.js has no model 'scorers'; its models: "
        "classifier, legacy, normalizer, scorer, tagger",
    ]


def test_the_readme_node_app(example: Path) -> None:
    shutil.copytree(APP, example / "app", dirs_exist_ok=True)
    node = subprocess.run(
        ["node", "app/node.mjs"], cwd=example, capture_output=True, text=True, timeout=300
    )
    assert node.returncode == 0, node.stderr
    assert "Warning" not in node.stderr  # examples/package.json: "type": "module"
    # TensorFlow.js's advice to install tfjs-node aside, what the app prints.
    printed = [
        line for line in node.stdout.splitlines() if line.startswith(("classifier", "sc", "leg"))
    ]
    assert printed == [
        "classifier:logits [ 1, 10 ] true",
        "scorer [ 2, 8 ] [ 2, 8 ] [ 2, 8 ]",
        "legacy layers_model [ 2, 3 ]",
        "classifier:logits has no input 'x'; its inputs: image float32 [-1,32,32,3]",
    ]


@pytest.mark.parametrize("page", ["index.html", "raw.html"])
def test_the_readme_pages_run_in_headless_chromium(
    example: Path, on_ones: dict[str, Any], tmp_path: Path, page: str
) -> None:
    """The README's pages, as a browser gets them over HTTP: a graph and a layers model, with
    the loader (the second through `baseUrl`) and without it (TensorFlow.js served locally: no
    network here)."""
    text = (APP / page).read_text()
    cdn = "https://cdn.jsdelivr.net/npm/@tensorflow/tfjs@4.22.0/dist/tf.fesm.min.js"
    assert cdn in text
    (example / "app").mkdir(exist_ok=True)
    (example / "app/test.html").write_text(text.replace(cdn, "/tf.fesm.min.js") + REPORT_BACK)
    shutil.copyfile(
        TFJS_RUNTIME / "node_modules/@tensorflow/tfjs/dist/tf.fesm.min.js",
        example / "tf.fesm.min.js",
    )
    reported, requests = in_chromium(example, "/app/test.html", tmp_path)
    check_page(example, on_ones, reported, requests, "/web/models/")


def test_the_readme_vite_app_bundles_and_runs_in_headless_chromium(
    example: Path, on_ones: dict[str, Any], tmp_path: Path
) -> None:
    """examples/vite built by Vite (tests/js pins it): the loader bundled, the models served
    from Vite's public folder, found through `baseUrl`."""
    if not VITE.exists():
        pytest.fail("Vite is not installed: run `npm ci --prefix tests/js` (.ci/run does)")
    built = subprocess.run(
        ["node", str(VITE), "build", "--logLevel", "error"],
        cwd=example / "vite",
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    dist = example / "vite/dist"
    assert not (dist / "tfjs-build.js").exists()  # bundled, not served
    (dist / "index.html").write_text((dist / "index.html").read_text() + REPORT_BACK)
    reported, requests = in_chromium(dist, "/index.html", tmp_path)
    check_page(example, on_ones, reported, requests, "/models/")


@pytest.fixture(scope="module")
def on_ones(example: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """TensorFlow's answers to tf.ones([2, 8]), what the pages give."""
    inputs = ones_inputs(example, tmp_path_factory.mktemp("ones"))
    answers = subprocess.run(
        [sys.executable, "-c", TENSORFLOW, str(example), str(inputs)],
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(json.loads(answers.stdout))


def in_chromium(root: Path, page: str, profile: Path) -> tuple[dict[str, Any], list[str]]:
    """What the page at `page` under `root` reports in headless Chromium, and every path the
    browser asked for."""
    requests: list[str] = []
    reported = run_page(root, page.lstrip("/"), profile, requests=requests)
    assert "error" not in reported, reported["error"]
    return reported, requests


def check_page(
    example: Path,
    on_ones: dict[str, Any],
    reported: dict[str, Any],
    requests: list[str],
    models: str,
) -> None:
    """The page asked for each signature's files with its content hash (no stale cache), and
    got TensorFlow's answers by name."""
    index = json.loads((example / MODELS / "tfjs-build.json").read_text())
    for model in ("scorer", "legacy"):
        version = index["models"][model]["serving_default"]["hash"][:16]
        asked = [r for r in requests if r.startswith(f"{models}{model}/")]
        assert len(asked) == 2 and all(r.endswith(f"?v={version}") for r in asked), asked
    expected = {**on_ones["scorer:serving_default"], **on_ones["legacy:serving_default"]}
    assert sorted(reported) == sorted(expected) == ["contour", "note", "onset", "probs"]
    for name, values in expected.items():
        got = np.array(reported[name], "float32")
        assert list(got.shape) == values["shape"], name
        np.testing.assert_allclose(got.ravel(), values["data"], rtol=1e-4, atol=1e-5)


REPORT_BACK = """
<script type="module">
  const output = document.querySelector("#output");
  const report = (body) => fetch("/result", { method: "POST", body });
  window.addEventListener("error", (event) => report(JSON.stringify({ error: String(event.message) })));
  window.addEventListener("unhandledrejection", (event) => report(JSON.stringify({ error: String(event.reason) })));
  const wait = setInterval(() => {
    if (output.textContent) { clearInterval(wait); report(output.textContent); }
  }, 50);
</script>
"""


def ones_inputs(example: Path, folder: Path) -> Path:
    """tf.ones([2, 8]) for every signature's inputs, as the page gives them."""
    index = json.loads((example / MODELS / "tfjs-build.json").read_text())
    given = {
        f"{model}:{signature}": {
            spec["name"]: {
                "shape": [2 if s is None else s for s in spec["shape"]],
                "data": np.ones([2 if s is None else s for s in spec["shape"]]).ravel().tolist(),
            }
            for spec in entry["inputs"]
        }
        for model, signatures in index["models"].items()
        for signature, entry in signatures.items()
    }
    path = folder / "ones.json"
    path.write_text(json.dumps(given))
    return path


def test_typescript_apps_compile_against_the_generated_types_and_wrong_names_do_not(
    example: Path,
) -> None:
    """`tsc --noEmit` (tests/js's pinned TypeScript) over the README's app, then over one with a
    signature and an input the build does not have."""
    if not TSC.exists():
        pytest.fail("TypeScript is not installed: run `npm ci --prefix tests/js` (.ci/run does)")
    shutil.copytree(APP, example / "app", dirs_exist_ok=True)
    app = (APP / "app.ts").read_text()
    wrong = app.replace('"serving_default")', '"serve")').replace("{ x: tf", "{ image: tf")
    assert wrong.count('serve"') == 1 and "{ image: tf" in wrong
    (example / "app/wrong.ts").write_text(wrong)
    options = {
        "target": "ES2022",
        "module": "ES2022",
        "moduleResolution": "Bundler",
        "lib": ["ES2022", "DOM"],
        "strict": True,
        "noEmit": True,
        "skipLibCheck": True,  # TensorFlow.js's own declarations are not this test's business
    }
    for name in ("app", "wrong"):
        config = {"compilerOptions": options, "files": [f"app/{name}.ts"]}
        (example / f"tsconfig.{name}.json").write_text(json.dumps(config))
    good = subprocess.run(
        [str(TSC), "-p", "tsconfig.app.json"], cwd=example, capture_output=True, text=True
    )
    assert good.returncode == 0, good.stdout
    bad = subprocess.run(
        [str(TSC), "-p", "tsconfig.wrong.json"], cwd=example, capture_output=True, text=True
    )
    assert bad.returncode == 2
    assert bad.stdout.splitlines() == [
        "app/wrong.ts(5,46): error TS2345: Argument of type '\"serve\"' is not assignable to "
        "parameter of type '\"serving_default\"'.",
        "app/wrong.ts(6,53): error TS2353: Object literal may only specify known properties, "
        "and 'image' does not exist in type '{ x: Tensor<Rank>; }'.",
    ]


@pytest.mark.parametrize(
    "name", ["app/node.mjs", "app/index.html", "app/raw.html", "app/app.ts", "vite/main.js"]
)
def test_the_readme_shows_the_example_apps_as_they_are(name: str) -> None:
    """The README's snippets are these files, which the tests above run."""
    text = (REPO / "examples" / name).read_text()
    assert text in (REPO / "README.md").read_text()


def test_the_loader_is_the_index_owners_and_never_a_file_it_did_not_write(
    project: Callable[..., Path], model_store: Callable[..., Path]
) -> None:
    manifest = project(
        "version: 1\nmodels:\n  m:\n    saved_model: m\n    signatures: [first]\n",
        {"m": model_store("constants")},
    )
    dist = manifest.parent / "dist"
    dist.mkdir()
    (dist / "tfjs-build.d.ts").write_text("// my own types\n")
    with pytest.warns(UserWarning) as caught:
        assert tfjsbuild.build([manifest], jobs=1).ok
    assert [str(w.message) for w in caught if "tfjs-build.d.ts" in str(w.message)] == [
        f"{dist / 'tfjs-build.d.ts'} was not generated by tfjs-build: it is left as it is; move "
        "it away to get the one tfjs-build generates beside the asset index"
    ]
    assert (dist / "tfjs-build.d.ts").read_text() == "// my own types\n"
    generated = (dist / "tfjs-build.js").read_text()
    assert generated.startswith("// Generated by tfjs-build from tfjs-build.json")
    assert '"first": {' in generated
    # Written again only when it changed; put back when deleted.
    mtime = (dist / "tfjs-build.js").stat().st_mtime_ns
    with pytest.warns(UserWarning):
        assert tfjsbuild.build([manifest], jobs=1).ok
    assert (dist / "tfjs-build.js").stat().st_mtime_ns == mtime
    (dist / "tfjs-build.js").unlink()
    with pytest.warns(UserWarning):
        tfjsbuild.build([manifest], jobs=1)
    assert (dist / "tfjs-build.js").read_text() == generated
    # `clean` removes the index and the loader it generated, and leaves the user's file.
    with pytest.warns(UserWarning, match="tfjs-build.d.ts was not generated by tfjs-build"):
        tfjsbuild.clean([manifest])
    assert sorted(p.name for p in dist.iterdir()) == ["tfjs-build.d.ts"]


TABLE_APP = """
import * as tf from "@tensorflow/tfjs";
import { loadModel } from "./dist/tfjs-build.js";

const encode = await loadModel(tf, "table", "encode");
const inputs = { words: tf.tensor(["dog", "cow", "cat"]) };
const { ids } = await encode.run(inputs);
const errors = [];
for (const bad of [{ words: tf.tensor([1, 2]) }, { words: inputs.words, "unknown:0": tf.scalar(0) }]) {
  try { await encode.run(bad); } catch (error) { errors.push(error.message); }
}
console.log(JSON.stringify({ ids: Array.from(await ids.data()), given: Object.keys(inputs), errors }));
"""


def test_a_lookup_table_is_the_models_own_input_and_strings_go_in(
    project: Callable[..., Path], model_store: Callable[..., Path]
) -> None:
    """A signature whose table TensorFlow.js feeds itself: its resource input is neither asked
    for nor typed, nor added to the caller's object."""
    manifest = project(
        "version: 1\nmodels:\n  table:\n    saved_model: t\n", {"t": model_store("table")}
    )
    assert tfjsbuild.build([manifest], jobs=1).ok
    root = manifest.parent
    (root / "node_modules").symlink_to(TFJS_RUNTIME / "node_modules")
    (root / "app.mjs").write_text(TABLE_APP)
    node = subprocess.run(
        ["node", "app.mjs"], cwd=root, capture_output=True, text=True, timeout=120
    )
    assert node.returncode == 0, node.stderr
    inputs = "its inputs: words string [-1]"
    assert json.loads(node.stdout.splitlines()[-1]) == {
        "ids": [2, 0, 1],
        "given": ["words"],
        "errors": [
            f"table:encode input 'words' is float32, not string; {inputs}",
            f"table:encode has no input 'unknown:0'; {inputs}",
        ],
    }
    types = (root / "dist/tfjs-build.d.ts").read_text()
    assert (
        '"encode": {\n      format: "graph_model";\n      inputs: {\n        /** string [-1] */\n        "words": "string";\n      };'
        in types
    )
