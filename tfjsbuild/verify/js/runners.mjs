// Running a loaded model on request samples: inputs made from the wire format, outputs encoded
// back to it, keyed by the signature's keys (graph models) or the model's input and output names
// (layers models).
//
// TENSOR:  {"dtype": "float32"|"int32"|"bool", "shape": [..], "base64": "<little-endian bytes:
//           float32, int32, or one byte per bool>"} or {"dtype": "string", "shape": [..],
//           "data": ["...", ...]}

import { fail, fileSystemHandler, isPlainObject } from './model_files.mjs';

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

// The signature output keys to run: those requested (null: all, sorted), checked against the
// signature GraphModel uses (userDefinedMetadata.signature over signature when present).
export function signatureOutputs(modelJson, modelJsonPath, requested) {
  const signature = modelJson.userDefinedMetadata?.signature ?? modelJson.signature;
  const sigOutputs = isPlainObject(signature?.outputs) ? signature.outputs : {};
  const outputKeys = Object.keys(sigOutputs).sort();
  if (outputKeys.length === 0) fail(`${modelJsonPath}: the signature has no outputs`);
  const wanted = requested ?? outputKeys;
  if (!Array.isArray(wanted) || wanted.length === 0 || !wanted.every((k) => typeof k === 'string')) {
    fail('request "outputs" must be a non-empty array of signature output keys');
  }
  const unknownOutputs = wanted.filter((k) => !Object.hasOwn(sigOutputs, k));
  if (unknownOutputs.length) {
    fail(`requested outputs ${JSON.stringify(unknownOutputs)} are not in the model signature; ` +
         `signature output keys: ${JSON.stringify(outputKeys)}`);
  }
  return [...new Set(wanted)];
}

export async function graphModelRunner(tf, modelDir, modelJson, modelJsonPath, requestedOutputs) {
  // GraphModel uses userDefinedMetadata.signature over signature when present;
  // resolve keys against the same one.
  const signature = modelJson.userDefinedMetadata?.signature ?? modelJson.signature;
  const sigInputs = isPlainObject(signature?.inputs) ? signature.inputs : {};
  const wanted = signatureOutputs(modelJson, modelJsonPath, requestedOutputs);
  // Inputs backed by a resource (e.g. a hash table) are fed by the model itself.
  const feedable = Object.keys(sigInputs).filter((k) => sigInputs[k]?.resourceId == null).sort();

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
export async function layersModelRunner(tf, modelDir, modelJson) {
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

