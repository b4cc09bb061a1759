// Node.js, after README command 1: npm ci --prefix examples && node examples/app/node.mjs
import * as tf from "@tensorflow/tfjs";
import { loadModel } from "../web/models/tfjs-build.js";

const logits = await loadModel(tf, "classifier", "logits");
const { logits: y } = await logits.run({ image: tf.zeros([1, 32, 32, 3]) });
console.log("classifier:logits", y.shape, logits.entry.verification.passed);

// Several outputs: by name, however many share a shape.
const scorer = await loadModel(tf, "scorer", "serving_default");
const { contour, note, onset } = await scorer.run({ x: tf.ones([2, 8]) });
console.log("scorer", contour.shape, note.shape, onset.shape);

// A layers model (format: layers_model) runs the same way.
const legacy = await loadModel(tf, "legacy", "serving_default");
const { probs } = await legacy.run({ x: tf.ones([2, 8]) });
console.log("legacy", legacy.entry.format, probs.shape);

try {
  await logits.run({ x: tf.zeros([1, 32, 32, 3]) });
} catch (error) {
  console.log(error.message);
}
for (const model of [logits, scorer, legacy]) model.dispose();
