import * as tf from "@tensorflow/tfjs";
import { loadModel } from "../web/models/tfjs-build.js";

// Bundled, the module's own URL is the bundle's: baseUrl says where the models are served.
const scorer = await loadModel(tf, "scorer", "serving_default", { baseUrl: "/models/" });
const { contour, note, onset } = await scorer.run({ x: tf.ones([2, 8]) });
const legacy = await loadModel(tf, "legacy", "serving_default", { baseUrl: "/models/" });
const { probs } = await legacy.run({ x: tf.ones([2, 8]) });
document.querySelector("#output").textContent = JSON.stringify({
  contour: await contour.array(),
  note: await note.array(),
  onset: await onset.array(),
  probs: await probs.array(),
});
