// Reading a converted TF.js model from disk: its model.json and the weight shards it lists,
// checked as they are read, so a damaged output is reported with the file at fault. Also the one
// error type of a request that cannot be answered (`UserError`): the request's or the model's
// fault, not this process's.

import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';

export class UserError extends Error {}

export function fail(message) {
  throw new UserError(message);
}

export function isPlainObject(v) {
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
export function fileSystemHandler(modelDir, modelJson) {
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

export async function readJson(file, what) {
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

// The shard files of a model by the name model.json gives them (for a server handing out only
// those): a path leaving the model's folder, or a missing shard, is the model files' fault.
export async function shardFiles(modelDir, modelJson) {
  const files = new Map();
  for (const [g, group] of (modelJson.weightsManifest ?? []).entries()) {
    for (const name of group.paths ?? []) {
      if (typeof name !== 'string' || path.isAbsolute(name) || name.split(/[\\/]/).includes('..')) {
        fail(`weightsManifest[${g}] of ${path.join(modelDir, 'model.json')} lists ${JSON.stringify(name)}, which is not a path inside the model folder`);
      }
      const file = path.join(modelDir, name);
      try {
        await stat(file);
      } catch (e) {
        fail(`cannot read weight shard ${JSON.stringify(name)} listed in weightsManifest[${g}] of ${path.join(modelDir, 'model.json')}: ${e.code === 'ENOENT' ? 'file not found' : e.message} (${file})`);
      }
      files.set(name, file);
    }
  }
  return files;
}
