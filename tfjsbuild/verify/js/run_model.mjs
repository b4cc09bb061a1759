#!/usr/bin/env node
// The TensorFlow.js side of tfjs-build's verification: a long-lived process that runs converted
// models (graph or layers models) from disk and answers with their outputs, so that tfjs-build
// can compare them with TensorFlow's, signature key by signature key. It loads the pinned, pure-JS
// @tensorflow/tfjs (no tfjs-node, no network) once, and its WebAssembly backend, whose .wasm files
// ship in the npm package; WebGL runs in a headless Chromium it starts on first need (webgl.mjs).
//
// Usage: node run_model.mjs RUNTIME_DIR
//   RUNTIME_DIR: a folder whose node_modules holds @tensorflow/tfjs and
//   @tensorflow/tfjs-backend-wasm (tfjs-build installs one).
//
// Protocol: one JSON request per line on stdin, one JSON answer per line on stdout, in order.
// Request: {"model_dir": "...", "backend": "auto"|"cpu"|"wasm"|"webgl",
//           "samples": [{"inputs": {"<signature input key>": TENSOR}}, ...],
//           "outputs": ["<signature output key>", ...],   (optional: all keys)
//           "browser": "/usr/bin/chromium"}               (webgl only)
//   TENSOR: see runners.mjs.
// Answer:  {"samples": [{"outputs": {"<key>": TENSOR}}, ...], "backend": "wasm"|"cpu"|"webgl",
//           "fallback": null | "why auto did not run it on wasm",
//           "seconds": {"backend": s, "load": s, "run": s, "startup": s (first answer only)}}
//          or {"error": "message", "backend_failed": true}: that backend cannot run the model
//          (it lacks a kernel of the graph, found before running; a kernel refused its inputs;
//          no WebGL), or {"error": "message"}: the request or the model's files are at fault;
//          after an unexpected error ("fatal": true) the process exits.
// "auto" runs the model on the WebAssembly backend, and on the CPU backend when WebAssembly
// cannot run it. A layers model has no signature: its inputs and outputs are keyed by the
// model's input and output names.

import { Console } from 'node:console';
import { createRequire } from 'node:module';
import path from 'node:path';
import readline from 'node:readline';
import { pathToFileURL } from 'node:url';

import { missingKernelIn, missingKernels, missingKernelsText } from './kernels.mjs';
import { UserError, fail, isPlainObject, readJson } from './model_files.mjs';
import { graphModelRunner, layersModelRunner } from './runners.mjs';

// tfjs prints a banner and warnings through console.*: keep stdout for answers by sending every
// console method to stderr. This must happen before tfjs is imported, hence the dynamic import.
const stderrConsole = new Console({ stdout: process.stderr, stderr: process.stderr });
const NOISE = [
  // Banner suggesting tfjs-node, which is deliberately not used here.
  'Hi, looks like you are running TensorFlow.js in Node.js',
  // executeAsync on a graph without control flow; harmless.
  'This model execution did not contain any nodes with control flow',
];
for (const method of ['log', 'info', 'warn', 'debug', 'trace', 'dir', 'table']) {
  console[method] = (...args) => {
    if (typeof args[0] === 'string' && NOISE.some((n) => args[0].includes(n))) return;
    stderrConsole[method](...args);
  };
}

const USAGE = 'usage: node run_model.mjs RUNTIME_DIR  (then one JSON request per line on stdin)';
const BACKENDS = ['auto', 'cpu', 'wasm', 'webgl'];
const REQUEST_FIELDS = ['model_dir', 'backend', 'samples', 'outputs', 'browser'];

// A backend that cannot run the model: answered as that backend's failure.
class BackendFailure extends Error {}

// One request: the model run on each sample, on the backend asked for.
async function answer(tf, request) {
  if (!isPlainObject(request)) fail('a request must be a JSON object');
  const unknown = Object.keys(request).filter((k) => !REQUEST_FIELDS.includes(k));
  if (unknown.length) fail(`request has unknown fields: ${unknown.join(', ')}`);
  const { model_dir: modelDir, samples } = request;
  const backend = request.backend ?? 'auto';
  if (typeof modelDir !== 'string') fail('request "model_dir" must be a string');
  if (!BACKENDS.includes(backend)) fail(`request "backend" must be one of ${BACKENDS.join(', ')}`);
  if (!Array.isArray(samples) || samples.length === 0) fail('request "samples" must be a non-empty array');
  for (const [i, sample] of samples.entries()) {
    if (!isPlainObject(sample) || !isPlainObject(sample.inputs ?? {})) {
      fail(`request samples[${i}] must be {"inputs": {...}} keyed by input name`);
    }
  }
  const modelJsonPath = path.join(modelDir, 'model.json');
  const modelJson = await readJson(modelJsonPath, 'model file');
  if (!isPlainObject(modelJson) || !isPlainObject(modelJson.modelTopology)) {
    fail(`${modelJsonPath}: no "modelTopology" object; is this a TF.js model.json?`);
  }
  if (modelJson.format != null && !['graph-model', 'layers-model'].includes(modelJson.format)) {
    fail(`${modelJsonPath}: format is ${JSON.stringify(modelJson.format)}, expected "graph-model" or "layers-model"`);
  }
  if (backend !== 'auto') return { ...(await runOrRefuse(tf, backend, modelDir, modelJson, request)), fallback: null };
  // auto: WebAssembly, unless it lacks a kernel of the graph or refuses to run it.
  const missing = missingKernels(tf, modelJson, 'wasm');
  let why = missing.length ? missingKernelsText('wasm', missing, 'cpu') : await backendProblem(tf, 'wasm');
  if (why == null) {
    try {
      return { ...(await runOn(tf, 'wasm', modelDir, modelJson, request)), fallback: null };
    } catch (e) {
      if (e instanceof UserError) throw e; // the request or the model files: no backend helps
      why = whyNot('wasm', e);
    }
  }
  return { ...(await runOrRefuse(tf, 'cpu', modelDir, modelJson, request)), fallback: why };
}

// The model run on `backend`: refused before it runs when the graph has an op the backend has
// no kernel for. A backend that cannot run the model (no kernel, a kernel refusing its inputs,
// no browser) answers that as this backend's failure, not this process's: it goes on serving.
async function runOrRefuse(tf, backend, modelDir, modelJson, request) {
  const missing = missingKernels(tf, modelJson, backend);
  if (missing.length) throw new BackendFailure(missingKernelsText(backend, missing, others(backend)));
  try {
    if (backend === 'webgl') return await runInBrowser(modelDir, modelJson, request);
    return await runOn(tf, backend, modelDir, modelJson, request);
  } catch (e) {
    if (e instanceof UserError) throw e;
    throw new BackendFailure(whyNot(backend, e));
  }
}

function others(backend) {
  return BACKENDS.filter((b) => b !== backend && b !== 'auto').join(' or ');
}

// Why `backend` could not run the model, in one line.
function whyNot(backend, error) {
  const kernel = missingKernelIn(error);
  if (kernel != null) {
    return `the ${backend} backend of TensorFlow.js has no kernel for ${kernel}, which the model ` +
      `needs: verify on ${others(backend)} instead, or avoid the op`;
  }
  // webgl.mjs says "webgl: ..." itself.
  const why = firstLine(error).replace(/^webgl: /, '');
  // The browser found is at fault, not the model: say how to use another, or none.
  const browser = /Chromium (exited|was killed|did not get)|cannot start Chromium|WebGL is unavailable/.test(why)
    ? '. Point $TFJS_BUILD_CHROMIUM at a working Chromium, or set it empty to skip WebGL' : '';
  return `the ${backend} backend of TensorFlow.js could not run the model: ${why}${browser}`;
}

function firstLine(error) {
  return String(error?.message ?? error).split('\n')[0];
}

let browser = null;

// The model run on WebGL in headless Chromium (`webgl.mjs`), one browser kept for the process.
async function runInBrowser(modelDir, modelJson, request) {
  if (typeof request.browser !== 'string') fail('a webgl request needs "browser": the Chromium to run');
  if (browser == null || browser.chromium !== request.browser) {
    await browser?.close();
    const { BrowserRunner } = await import('./webgl.mjs');
    browser = new BrowserRunner({ chromium: request.browser, runtimeDir, log: (text) => console.error(text) });
  }
  const ran = await browser.run({ modelDir, modelJson, samples: request.samples, outputs: request.outputs });
  const { startup, ...seconds } = ran.seconds; // Chromium's start, when this request paid it
  return { samples: ran.samples, backend: 'webgl', seconds: startup == null ? seconds : { ...seconds, browser: startup } };
}

async function runOn(tf, backend, modelDir, modelJson, request) {
  const start = performance.now();
  const problem = await backendProblem(tf, backend);
  if (problem != null) fail(problem);
  const result = await runScoped(tf, backend, modelDir, modelJson, request);
  result.seconds.backend = (performance.now() - start) / 1000 - result.seconds.load - result.seconds.run;
  return result;
}

async function runLoaded(tf, backend, modelDir, modelJson, request) {
  const seconds = {};
  let start = performance.now();
  const layers = modelJson.format === 'layers-model';
  const { run, model } = layers
    ? await layersModelRunner(tf, modelDir, modelJson)
    : await graphModelRunner(tf, modelDir, modelJson, path.join(modelDir, 'model.json'), request.outputs);
  seconds.load = (performance.now() - start) / 1000;
  start = performance.now();
  try {
    const results = [];
    for (const sample of request.samples) results.push({ outputs: await run(sample.inputs ?? {}) });
    seconds.run = (performance.now() - start) / 1000;
    return { samples: results, backend, seconds };
  } finally {
    model.dispose();
  }
}

// `runOn` in a scope of its own: every tensor it made is freed, even after a failed run (the
// WebAssembly backend's memory never shrinks).
async function runScoped(tf, backend, modelDir, modelJson, request) {
  tf.engine().startScope();
  try {
    return await runLoaded(tf, backend, modelDir, modelJson, request);
  } finally {
    tf.engine().endScope();
  }
}

let wasmImported = null;

// Why `backend` cannot be used here (null: it is the current backend now).
async function backendProblem(tf, backend) {
  if (backend === 'wasm' && wasmImported == null) {
    try {
      await import(pathToFileURL(runtimeRequire.resolve('@tensorflow/tfjs-backend-wasm')).href);
      wasmImported = true;
    } catch (e) {
      wasmImported = `@tensorflow/tfjs-backend-wasm is not installed in the runtime (${e.code ?? e.message})`;
    }
  }
  if (backend === 'wasm' && wasmImported !== true) return wasmImported;
  if (tf.getBackend() === backend) return null;
  if (!(await tf.setBackend(backend))) return `the TensorFlow.js "${backend}" backend could not start`;
  await tf.ready();
  return null;
}

let runtimeRequire = null;
let runtimeDir = null;

async function loadTf(folder) {
  runtimeDir = path.resolve(folder);
  // Resolved from RUNTIME_DIR, not from this script's folder: the runtime is installed apart.
  runtimeRequire = createRequire(path.join(path.resolve(runtimeDir), 'package.json'));
  let entry;
  try {
    entry = runtimeRequire.resolve('@tensorflow/tfjs');
  } catch (e) {
    fail(`@tensorflow/tfjs is not installed in ${runtimeDir} (${e.code ?? e.message})`);
  }
  const tfModule = await import(pathToFileURL(entry).href);
  return tfModule.default ?? tfModule;
}


function send(value) {
  process.stdout.write(JSON.stringify(value) + '\n');
}

async function serve(argv) {
  if (argv.length !== 1) {
    process.stderr.write(`run_model: error: ${USAGE}\n`);
    process.exit(2);
  }
  let tf;
  try {
    tf = await loadTf(argv[0]);
    await backendProblem(tf, 'wasm'); // ready before the first request; `auto` starts there
  } catch (e) {
    tf = e;
  }
  // Seconds from this process's start to TF.js ready: said once, in the first answer.
  let startup = performance.now() / 1000;
  const lines = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
  // Nobody is left to read an answer (the worker closed its end, or died): stop now.
  process.stdin.on('end', () => process.exit(0));
  for await (const line of lines) {
    if (line.trim() === '') continue;
    try {
      if (tf instanceof Error) throw tf;
      let request;
      try {
        request = JSON.parse(line);
      } catch (e) {
        fail(`a request is not valid JSON: ${e.message}`);
      }
      const answered = await answer(tf, request);
      if (startup != null) [answered.seconds.startup, startup] = [startup, null];
      send(answered);
    } catch (e) {
      if (e instanceof BackendFailure) {
        send({ error: e.message, backend_failed: true });
        continue;
      }
      if (e instanceof UserError) {
        send({ error: e.message });
        continue;
      }
      exitAfter({ error: e?.stack ?? String(e), fatal: true });
      return;
    }
  }
}

// The last answer, then exit 1: stdout to a pipe is written asynchronously, so only once it is.
function exitAfter(value) {
  process.stdout.write(JSON.stringify(value) + '\n', () => process.exit(1));
}

process.on('unhandledRejection', (e) => exitAfter({ error: `unhandled rejection: ${e?.stack ?? e}`, fatal: true }));

await serve(process.argv.slice(2));
