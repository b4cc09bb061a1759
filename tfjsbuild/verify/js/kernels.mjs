// Which kernels a converted graph needs that a TF.js backend lacks: found from TF.js itself
// (`tf.getKernelsForBackend`, for every backend registered in this process) and the graph's
// ops, not from a list kept by hand, so a model is refused before it runs on that backend.
//
// TF.js names its kernels after TensorFlow's ops (`Einsum`, `FFT`, `UnsortedSegmentSum`); a
// graph op named like a kernel of some backend runs that kernel. Ops named like no kernel
// (`MatMul`, `AddV2`, `Const`) run through kernels of other names, which only a run finds: a run
// that stops at a kernel missing there is reported the same way (`missingKernelIn`).

import { isPlainObject } from './model_files.mjs';

// How TF.js says a backend has no kernel for an op (tfjs-core's engine and KernelBackend).
const MISSING_KERNEL = [
  /Kernel '([^']+)' not registered for backend/,
  /'([^']+)' not yet implemented or not found in the registry/,
];
const BACKENDS = ['cpu', 'wasm', 'webgl'];
const SHOWN_NODES = 3;

// Every node of a graph model, its functions' included: [{name, op}].
function graphNodes(modelJson) {
  const topology = modelJson.modelTopology;
  const nodes = Array.isArray(topology?.node) ? [...topology.node] : [];
  const functions = topology?.library?.function;
  for (const fn of Array.isArray(functions) ? functions : []) {
    if (Array.isArray(fn?.nodeDef)) nodes.push(...fn.nodeDef);
  }
  return nodes.filter((n) => isPlainObject(n) && typeof n.op === 'string');
}

// A graph op's kernel name: the op's own, without the leading underscore of a fused op
// (`_FusedConv2D` runs `FusedConv2D`), and the converter's name for fused depthwise convolutions.
function kernelNamesOf(op) {
  const names = [op, op.replace(/^_/, '')];
  if (op === 'FusedDepthwiseConv2dNative') names.push('FusedDepthwiseConv2D');
  return names;
}

function kernelSet(tf, backend) {
  return new Set(tf.getKernelsForBackend(backend).map((k) => k.kernelName));
}

// The kernels `backend` lacks that the graph's ops are, with the nodes using each:
// [{kernel, op, nodes: [name, ...]}]. A layers model is not checked: its layers run ops, not
// graph nodes (a run reports what it lacks).
export function missingKernels(tf, modelJson, backend) {
  if (modelJson.format === 'layers-model') return [];
  const here = kernelSet(tf, backend);
  const known = new Set(BACKENDS.filter((b) => b !== backend).flatMap((b) => [...kernelSet(tf, b)]));
  const missing = new Map();
  for (const node of graphNodes(modelJson)) {
    const names = kernelNamesOf(node.op);
    if (names.some((k) => here.has(k))) continue;
    const kernel = names.find((k) => known.has(k));
    if (kernel == null) continue; // not a kernel's name: dispatched through others
    if (!missing.has(kernel)) missing.set(kernel, { kernel, op: node.op, nodes: [] });
    missing.get(kernel).nodes.push(String(node.name));
  }
  return [...missing.values()];
}

// One line for kernels a backend lacks: which, the nodes using them, and what to do.
export function missingKernelsText(backend, missing, others) {
  const parts = missing.map(({ kernel, op, nodes }) => {
    const shown = nodes.slice(0, SHOWN_NODES).map((n) => `'${n}'`).join(', ');
    const more = nodes.length > SHOWN_NODES ? ` and ${nodes.length - SHOWN_NODES} more` : '';
    const opText = op === kernel ? `op ${op}` : `op ${op} (kernel ${kernel})`;
    return `${opText} at node${nodes.length > 1 ? 's' : ''} ${shown}${more}`;
  });
  return `the ${backend} backend of TensorFlow.js has no kernel for ${parts.join('; ')}: ` +
    `the model cannot run there. Verify on ${others} instead, or avoid the op`;
}

// The kernel a failed run stopped at for want of it on its backend (null: another failure).
export function missingKernelIn(error) {
  for (const pattern of MISSING_KERNEL) {
    const match = pattern.exec(String(error?.message ?? error ?? ''));
    if (match != null) return match[1];
  }
  return null;
}
