"""Running converted models in TensorFlow.js and comparing them with TensorFlow."""
