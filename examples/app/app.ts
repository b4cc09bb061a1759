// TypeScript: a model, signature, input or output name the build does not have does not compile.
import * as tf from "@tensorflow/tfjs";
import { loadModel } from "../web/models/tfjs-build.js";

const scorer = await loadModel(tf, "scorer", "serving_default");
const { contour, note, onset } = await scorer.run({ x: tf.ones([2, 8]) });
const classes: tf.Tensor = contour.add(note).add(onset).argMax(-1);
console.log(await classes.data());
