#!/usr/bin/env node
// Run a converted TF.js model (graph model or layers model) from disk with the pure-JS
// @tensorflow/tfjs package (CPU backend, no tfjs-node, no network), so that tfjs-build can
// compare its outputs with TensorFlow's, signature key by signature key.
//
// Usage: node run_model.mjs RUNTIME_DIR MODEL_DIR REQUEST.json   ("-": read REQUEST from stdin)
//
// RUNTIME_DIR: a folder whose node_modules holds @tensorflow/tfjs (tfjs-build installs one).
// REQUEST: {"samples": [{"inputs": {"<signature input key>": {"dtype": "float32"|"int32"|
//           "bool"|"string", "shape": [..], "data": [flat values]}}}, ...],
//           "outputs": ["<signature output key>", ...]}   (optional; default: all keys)
//          or one sample as {"inputs": {...}}.
// stdout:  {"samples": [{"outputs": {"<key>": {"dtype", "shape", "data"}}}, ...]}
//          (or {"outputs": {...}} for a one-sample request). A layers model has no signature:
//          its inputs and outputs are keyed by the model's input and output names.
//
// Non-finite floats are written as the strings "NaN", "Infinity", "-Infinity" (JSON has no
// literal for them); the same strings are accepted in float32 input data. bool data is
// written as JSON true/false. On any error: a message on stderr, nothing on stdout, exit 1.

import { Console } from 'node:console';
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

// tfjs prints a banner and warnings through console.*: keep stdout pure JSON by
// sending every console method to stderr. This must happen before tfjs is
// imported, hence the dynamic import below.
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

const USAGE = 'usage: node run_model.mjs RUNTIME_DIR MODEL_DIR REQUEST.json  (or "-" to read REQUEST from stdin)';

class UserError extends Error {}

function fail(message) {
  throw new UserError(message);
}

async function readStdin() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  return Buffer.concat(chunks).toString('utf8');
}

async function readJson(file, what) {
  let text;
  try {
    text = file === '-' ? await readStdin() : await readFile(file, 'utf8');
  } catch (e) {
    fail(`cannot read ${what} ${file === '-' ? '(stdin)' : JSON.stringify(file)}: ${e.message}`);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    fail(`${what} ${file === '-' ? '(stdin)' : JSON.stringify(file)} is not valid JSON: ${e.message}`);
  }
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

function parseFloatValue(v, where) {
  if (typeof v === 'number') return v;
  if (v === 'NaN') return NaN;
  if (v === 'Infinity' || v === 'inf') return Infinity;
  if (v === '-Infinity' || v === '-inf') return -Infinity;
  fail(`${where}: expected a number (or "NaN"/"Infinity"/"-Infinity"), got ${JSON.stringify(v)}`);
}

function makeInputTensor(tf, key, spec) {
  const where = `request input ${JSON.stringify(key)}`;
  if (!isPlainObject(spec)) fail(`${where}: expected an object {"dtype", "shape", "data"}`);
  const { dtype, shape, data } = spec;
  if (!Array.isArray(shape) || !shape.every((d) => Number.isInteger(d) && d >= 0)) {
    fail(`${where}: "shape" must be an array of non-negative integers, got ${JSON.stringify(shape)}`);
  }
  if (!Array.isArray(data)) fail(`${where}: "data" must be a flat array`);
  const size = shape.reduce((a, d) => a * d, 1);
  if (data.length !== size) {
    fail(`${where}: "data" has ${data.length} values but shape ${JSON.stringify(shape)} needs ${size}`);
  }
  if (data.some((v) => Array.isArray(v))) fail(`${where}: "data" must be flat (row-major), not nested`);
  switch (dtype) {
    case 'float32':
      return tf.tensor(Float32Array.from(data, (v, i) => parseFloatValue(v, `${where} data[${i}]`)), shape, 'float32');
    case 'int32':
      return tf.tensor(Int32Array.from(data, (v, i) => {
        if (!Number.isInteger(v) || v < -2147483648 || v > 2147483647) {
          fail(`${where} data[${i}]: expected an int32, got ${JSON.stringify(v)}`);
        }
        return v;
      }), shape, 'int32');
    case 'bool':
      return tf.tensor(Uint8Array.from(data, (v, i) => {
        if (v === true || v === 1) return 1;
        if (v === false || v === 0) return 0;
        fail(`${where} data[${i}]: expected true/false, got ${JSON.stringify(v)}`);
      }), shape, 'bool');
    case 'string':
      data.forEach((v, i) => {
        if (typeof v !== 'string') fail(`${where} data[${i}]: expected a string, got ${JSON.stringify(v)}`);
      });
      return tf.tensor(data, shape, 'string');
    default:
      fail(`${where}: unsupported dtype ${JSON.stringify(dtype)} (use float32, int32, bool or string)`);
  }
}

function encodeFloat(v) {
  if (Number.isFinite(v)) return v;
  return Number.isNaN(v) ? 'NaN' : (v > 0 ? 'Infinity' : '-Infinity');
}

async function encodeOutput(key, t) {
  const data = await t.data();
  let values;
  switch (t.dtype) {
    case 'float32':
    case 'complex64': // interleaved real/imag
      values = Array.from(data, encodeFloat);
      break;
    case 'int32':
      values = Array.from(data);
      break;
    case 'bool':
      values = Array.from(data, (v) => v !== 0);
      break;
    case 'string':
      values = Array.from(data);
      break;
    default:
      fail(`output ${JSON.stringify(key)}: unsupported dtype ${t.dtype}`);
  }
  return { dtype: t.dtype, shape: t.shape.slice(), data: values };
}

async function main(argv) {
  if (argv.length !== 3) fail(USAGE);
  const [runtimeDir, modelDir, requestFile] = argv;

  const modelJsonPath = path.join(modelDir, 'model.json');
  const modelJson = await readJson(modelJsonPath, 'model file');
  if (!isPlainObject(modelJson) || !isPlainObject(modelJson.modelTopology)) {
    fail(`${modelJsonPath}: no "modelTopology" object; is this a TF.js model.json?`);
  }
  const layers = modelJson.format === 'layers-model';
  if (!layers && modelJson.format != null && modelJson.format !== 'graph-model') {
    fail(`${modelJsonPath}: format is ${JSON.stringify(modelJson.format)}, expected "graph-model" or "layers-model"`);
  }

  const request = await readJson(requestFile, 'request');
  if (!isPlainObject(request)) fail('request must be a JSON object {"samples": [...], "outputs": [...]}');
  const unknownFields = Object.keys(request).filter((k) => !['inputs', 'samples', 'outputs'].includes(k));
  if (unknownFields.length) fail(`request has unknown fields: ${unknownFields.join(', ')}`);
  const single = request.samples == null;
  const samples = single ? [{ inputs: request.inputs ?? {} }] : request.samples;
  if (!Array.isArray(samples) || samples.length === 0) fail('request "samples" must be a non-empty array');
  for (const [i, sample] of samples.entries()) {
    if (!isPlainObject(sample) || !isPlainObject(sample.inputs ?? {})) {
      fail(`request samples[${i}] must be {"inputs": {...}} keyed by input name`);
    }
  }

  const tf = await loadTf(runtimeDir);
  const run = layers
    ? await layersModelRunner(tf, modelDir, modelJson)
    : await graphModelRunner(tf, modelDir, modelJson, modelJsonPath, request.outputs);
  const results = [];
  for (const sample of samples) {
    results.push({ outputs: await run(sample.inputs ?? {}) });
  }
  return single ? results[0] : { samples: results };
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
  return async (inputs) => {
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
}

// A layers model has no signature: inputs are keyed by the model's input names and outputs
// by its output names (Keras layer names), as model.predict sees them.
async function layersModelRunner(tf, modelDir, modelJson) {
  const model = await tf.loadLayersModel(fileSystemHandler(modelDir, modelJson));
  // A Sequential model leaves inputNames/outputNames empty; its layers name them as Keras does.
  const layerNames = (tensors) => tensors.map((t) => t.sourceLayer.name);
  const inputNames = model.inputNames.length ? model.inputNames : layerNames(model.inputs);
  const outputNames = model.outputNames.length ? model.outputNames : layerNames(model.outputs);
  return async (inputs) => {
    checkInputKeys(inputs, inputNames, 'layers model');
    const feeds = inputNames.map((k) => makeInputTensor(tf, k, inputs[k]));
    let result = model.predict(feeds.length === 1 ? feeds[0] : feeds);
    if (!Array.isArray(result)) result = [result];
    const outputs = {};
    for (const [i, key] of outputNames.entries()) outputs[key] = await encodeOutput(key, result[i]);
    tf.dispose([...feeds, ...result]);
    return outputs;
  };
}

async function loadTf(runtimeDir) {
  // Resolved from RUNTIME_DIR, not from this script's folder: the runtime is installed apart.
  let entry;
  try {
    entry = createRequire(path.join(path.resolve(runtimeDir), 'package.json')).resolve('@tensorflow/tfjs');
  } catch (e) {
    fail(`@tensorflow/tfjs is not installed in ${runtimeDir} (${e.code ?? e.message})`);
  }
  const tfModule = await import(pathToFileURL(entry).href);
  const tf = tfModule.default ?? tfModule;
  if (!(await tf.setBackend('cpu'))) fail('could not initialise the tfjs "cpu" backend');
  await tf.ready();
  if (tf.getBackend() !== 'cpu') fail(`tfjs backend is ${tf.getBackend()}, expected cpu`);
  return tf;
}

process.on('unhandledRejection', (e) => {
  process.stderr.write(`run_model: unhandled rejection: ${e?.stack ?? e}\n`);
  process.exit(1);
});

try {
  const out = await main(process.argv.slice(2));
  const text = JSON.stringify(out) + '\n';
  process.stdout.write(text);
  process.exitCode = 0;
} catch (e) {
  const msg = e instanceof UserError ? e.message : (e?.stack ?? String(e));
  process.stderr.write(`run_model: error: ${msg}\n`);
  process.exitCode = 1;
}
