"""Code that runs in worker processes: the only code that imports TensorFlow, tensorflowjs
or keras."""
