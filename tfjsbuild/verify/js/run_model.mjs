#!/usr/bin/env node
// The TensorFlow.js side of tfjs-build's verification: a long-lived process that runs converted
// models (graph or layers models) from disk and answers with their outputs, so that tfjs-build
// can compare them with TensorFlow's, signature key by signature key. It loads the pinned, pure-JS
// @tensorflow/tfjs (no tfjs-node, no network) once, and its WebAssembly backend, whose .wasm files
// ship in the npm package.
//
// Usage: node run_model.mjs RUNTIME_DIR
//   RUNTIME_DIR: a folder whose node_modules holds @tensorflow/tfjs and
//   @tensorflow/tfjs-backend-wasm (tfjs-build installs one).
//
// Protocol: one JSON request per line on stdin, one JSON answer per line on stdout, in order.
// Request: {"model_dir": "...", "backend": "auto"|"cpu"|"wasm",
//           "samples": [{"inputs": {"<signature input key>": TENSOR}}, ...],
//           "outputs": ["<signature output key>", ...]}   ("outputs" optional: all keys)
// TENSOR:  {"dtype": "float32"|"int32"|"bool", "shape": [..], "base64": "<little-endian bytes:
//           float32, int32, or one byte per bool>"} or {"dtype": "string", "shape": [..],
//           "data": ["...", ...]}
// Answer:  {"samples": [{"outputs": {"<key>": TENSOR}}, ...], "backend": "wasm"|"cpu",
//           "fallback": null | "why auto did not run it on wasm",
//           "seconds": {"backend": s, "load": s, "run": s, "startup": s (first answer only)}}
//          or {"error": "message"}; after an unexpected error ("fatal": true) the process exits.
// "auto" runs the model on the WebAssembly backend, and on the CPU backend when WebAssembly
// cannot run it (it lacks one of its kernels, or a kernel refuses its inputs). A layers model has
// no signature: its inputs and outputs are keyed by the model's input and output names.

import { Console } from 'node:console';
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import readline from 'node:readline';
import { pathToFileURL } from 'node:url';

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
const BACKENDS = ['auto', 'cpu', 'wasm'];
// How TF.js says a backend has no kernel for an op (tfjs-core's engine and KernelBackend).
const MISSING_KERNEL = [
  /Kernel '([^']+)' not registered for backend/,
  /'([^']+)' not yet implemented or not found in the registry/,
];

class UserError extends Error {}

function fail(message) {
  throw new UserError(message);
}

function isPlainObject(v) {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

// Bytes per element of a weight as stored in the shard (null: not computable).
function storedBytesPerElement(spec) {
  if (spec.quantization != null) {
    const q = spec.quantization.dtype;
    return { uint8: 1, uint16: 2, float16: 2 }[q] ?? null;
  }
  return { float32: 4, int32: 4, bool: 1, complex64: 8 }[spec.dtype] ?? null;
}

// Minimal tf.io.IOHandler reading model.json and its shards from disk.
function fileSystemHandler(modelDir, modelJson) {
  return {
    load: async () => {
      const manifest = modelJson.weightsManifest ?? [];
      if (!Array.isArray(manifest)) fail('model.json: "weightsManifest" is not an array');
      const weightSpecs = [];
      const buffers = [];
      for (const [g, group] of manifest.entries()) {
        if (!isPlainObject(group) || !Array.isArray(group.paths) || !Array.isArray(group.weights)) {
          fail(`model.json: weightsManifest[${g}] must have "paths" and "weights" arrays`);
        }
        weightSpecs.push(...group.weights);
        for (const p of group.paths) {
          const file = path.resolve(modelDir, p);
          try {
            buffers.push(await readFile(file));
          } catch (e) {
            fail(`cannot read weight shard ${JSON.stringify(p)} listed in weightsManifest[${g}] ` +
                 `of ${path.join(modelDir, 'model.json')}: ${e.code === 'ENOENT' ? 'file not found' : e.message} (${file})`);
          }
        }
      }
      const total = buffers.reduce((n, b) => n + b.length, 0);
      const weightData = new ArrayBuffer(total);
      const view = new Uint8Array(weightData);
      let offset = 0;
      for (const b of buffers) {
        view.set(b, offset);
        offset += b.length;
      }
      // Check the size when every weight has a fixed size (string weights are
      // variable-length), to report truncated shards clearly.
      let expected = 0;
      for (const spec of weightSpecs) {
        const per = storedBytesPerElement(spec);
        if (per == null) { expected = null; break; }
        expected += per * (spec.shape ?? []).reduce((a, d) => a * d, 1);
      }
      if (expected != null && expected !== total) {
        fail(`weight shards of ${path.join(modelDir, 'model.json')} hold ${total} bytes, ` +
             `but weightsManifest describes ${expected} bytes`);
      }
      return {
        modelTopology: modelJson.modelTopology,
        weightSpecs,
        weightData,
        format: modelJson.format,
        generatedBy: modelJson.generatedBy,
        convertedBy: modelJson.convertedBy,
        signature: modelJson.signature,
        userDefinedMetadata: modelJson.userDefinedMetadata,
        modelInitializer: modelJson.modelInitializer,
        initializerSignature: modelJson.initializerSignature,
      };
    },
  };
}


const TYPED = { float32: Float32Array, int32: Int32Array, bool: Uint8Array };

function makeInputTensor(tf, key, spec) {
  const where = `request input ${JSON.stringify(key)}`;
  if (!isPlainObject(spec)) fail(`${where}: expected an object {"dtype", "shape", "base64"}`);
  const { dtype, shape } = spec;
  if (!Array.isArray(shape) || !shape.every((d) => Number.isInteger(d) && d >= 0)) {
    fail(`${where}: "shape" must be an array of non-negative integers, got ${JSON.stringify(shape)}`);
  }
  const size = shape.reduce((a, d) => a * d, 1);
  if (dtype === 'string') {
    const { data } = spec;
    if (!Array.isArray(data) || data.length !== size || !data.every((v) => typeof v === 'string')) {
      fail(`${where}: "data" must be ${size} strings for shape ${JSON.stringify(shape)}`);
    }
    return tf.tensor(data, shape, 'string');
  }
  const Typed = TYPED[dtype];
  if (Typed == null) fail(`${where}: unsupported dtype ${JSON.stringify(dtype)} (use float32, int32, bool or string)`);
  if (typeof spec.base64 !== 'string') fail(`${where}: "base64" must be a string`);
  const bytes = Buffer.from(spec.base64, 'base64');
  if (bytes.length !== size * Typed.BYTES_PER_ELEMENT) {
    fail(`${where}: ${bytes.length} bytes, but shape ${JSON.stringify(shape)} of ${dtype} needs ${size * Typed.BYTES_PER_ELEMENT}`);
  }
  // A copy: the Buffer's memory may be unaligned for the typed array.
  const values = new Typed(new Uint8Array(bytes).buffer);
  return tf.tensor(values, shape, dtype);
}

async function encodeOutput(key, t) {
  const data = await t.data();
  if (t.dtype === 'string') return { dtype: 'string', shape: t.shape.slice(), data: Array.from(data) };
  const Typed = TYPED[t.dtype];
  if (Typed == null) fail(`output ${JSON.stringify(key)}: unsupported dtype ${t.dtype}`);
  const typed = data instanceof Typed ? data : Typed.from(data);
  const base64 = Buffer.from(typed.buffer, typed.byteOffset, typed.byteLength).toString('base64');
  return { dtype: t.dtype, shape: t.shape.slice(), base64 };
}

function checkInputKeys(given, expected, what) {
  const unknown = Object.keys(given).filter((k) => !expected.includes(k));
  if (unknown.length) {
    fail(`request inputs ${JSON.stringify(unknown)} are not in the ${what}; ` +
         `its input keys: ${JSON.stringify(expected)}`);
  }
  const missing = expected.filter((k) => !(k in given));
  if (missing.length) {
    fail(`request is missing ${what} inputs ${JSON.stringify(missing)}; ` +
         `its input keys: ${JSON.stringify(expected)}`);
  }
}

async function graphModelRunner(tf, modelDir, modelJson, modelJsonPath, requestedOutputs) {
  // GraphModel uses userDefinedMetadata.signature over signature when present;
  // resolve keys against the same one.
  const signature = modelJson.userDefinedMetadata?.signature ?? modelJson.signature;
  const sigInputs = isPlainObject(signature?.inputs) ? signature.inputs : {};
  const sigOutputs = isPlainObject(signature?.outputs) ? signature.outputs : {};
  const outputKeys = Object.keys(sigOutputs).sort();
  if (outputKeys.length === 0) fail(`${modelJsonPath}: the signature has no outputs`);
  // Inputs backed by a resource (e.g. a hash table) are fed by the model itself.
  const feedable = Object.keys(sigInputs).filter((k) => sigInputs[k]?.resourceId == null).sort();

  let wanted = requestedOutputs ?? outputKeys;
  if (!Array.isArray(wanted) || wanted.length === 0 || !wanted.every((k) => typeof k === 'string')) {
    fail('request "outputs" must be a non-empty array of signature output keys');
  }
  wanted = [...new Set(wanted)];
  const unknownOutputs = wanted.filter((k) => !Object.hasOwn(sigOutputs, k));
  if (unknownOutputs.length) {
    fail(`requested outputs ${JSON.stringify(unknownOutputs)} are not in the model signature; ` +
         `signature output keys: ${JSON.stringify(outputKeys)}`);
  }

  const model = await tf.loadGraphModel(fileSystemHandler(modelDir, modelJson));
  const run = async (inputs) => {
    checkInputKeys(inputs, feedable, 'model signature');
    const feeds = {};
    for (const key of feedable) feeds[key] = makeInputTensor(tf, key, inputs[key]);
    // tfjs 4.22's GraphExecutor maps signature keys to tensor names itself
    // (mapInputs/mapOutputs look the key up in the model's signature), so the
    // keys are passed as they are; they were checked against that signature above.
    let result = await model.executeAsync(feeds, wanted);
    if (!Array.isArray(result)) result = [result];
    if (result.length !== wanted.length) {
      fail(`model returned ${result.length} tensors for ${wanted.length} requested outputs`);
    }
    const outputs = {};
    for (const [i, key] of wanted.entries()) outputs[key] = await encodeOutput(key, result[i]);
    tf.dispose([...Object.values(feeds), ...result]);
    return outputs;
  };
  return { run, model };
}

// A layers model has no signature: inputs are keyed by the model's input names and outputs
// by its output names (Keras layer names), as model.predict sees them.
async function layersModelRunner(tf, modelDir, modelJson) {
  const model = await tf.loadLayersModel(fileSystemHandler(modelDir, modelJson));
  // A Sequential model leaves inputNames/outputNames empty; its layers name them as Keras does.
  const layerNames = (tensors) => tensors.map((t) => t.sourceLayer.name);
  const inputNames = model.inputNames.length ? model.inputNames : layerNames(model.inputs);
  const outputNames = model.outputNames.length ? model.outputNames : layerNames(model.outputs);
  const run = async (inputs) => {
    checkInputKeys(inputs, inputNames, 'layers model');
    const feeds = inputNames.map((k) => makeInputTensor(tf, k, inputs[k]));
    let result = model.predict(feeds.length === 1 ? feeds[0] : feeds);
    if (!Array.isArray(result)) result = [result];
    const outputs = {};
    for (const [i, key] of outputNames.entries()) outputs[key] = await encodeOutput(key, result[i]);
    tf.dispose([...feeds, ...result]);
    return outputs;
  };
  return { run, model };
}


// One request: the model run on each sample, on the backend asked for.
async function answer(tf, request) {
  if (!isPlainObject(request)) fail('a request must be a JSON object');
  const unknown = Object.keys(request).filter((k) => !['model_dir', 'backend', 'samples', 'outputs'].includes(k));
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
  if (backend === 'cpu') return { ...(await runOrExplain(tf, 'cpu', modelDir, modelJson, request)), fallback: null };
  // auto or wasm: WebAssembly first.
  let why = await backendProblem(tf, 'wasm');
  let kernel = null;
  if (why == null) {
    try {
      return { ...(await runOn(tf, 'wasm', modelDir, modelJson, request)), fallback: null };
    } catch (e) {
      if (e instanceof UserError) throw e; // the request or the model files: no backend helps
      kernel = missingKernel(e);
      why = kernel != null
        ? `the WebAssembly backend has no kernel for ${kernel}`
        : `the WebAssembly backend could not run it: ${firstLine(e)}`;
    }
  }
  // Whether the model runs at all: if not on the CPU backend either, that is the error.
  const onCpu = await runOrExplain(tf, 'cpu', modelDir, modelJson, request);
  if (backend === 'auto') return { ...onCpu, fallback: why };
  fail(`${why}${kernel != null ? ', which the model uses' : ''}; the CPU backend runs it: verify ` +
       'it there (`verify: {backend: cpu}`, or `auto`), or avoid the op');
}

// `runOn`, a model TF.js cannot run (a shape it refuses, an op it lacks) being the request's
// error, not this process's: it goes on serving.
async function runOrExplain(tf, backend, modelDir, modelJson, request) {
  try {
    return await runOn(tf, backend, modelDir, modelJson, request);
  } catch (e) {
    if (e instanceof UserError) throw e;
    fail(`${firstLine(e)} (on the ${backend} backend)`);
  }
}

function firstLine(error) {
  return String(error?.message ?? error).split('\n')[0];
}

function missingKernel(error) {
  for (const pattern of MISSING_KERNEL) {
    const match = pattern.exec(String(error?.message ?? ''));
    if (match != null) return match[1];
  }
  return null;
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

async function loadTf(runtimeDir) {
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

async function readJson(file, what) {
  let text;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    fail(`cannot read ${what} ${JSON.stringify(file)}: ${e.message}`);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    fail(`${what} ${JSON.stringify(file)} is not valid JSON: ${e.message}`);
  }
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
