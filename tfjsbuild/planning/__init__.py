"""Deciding what to build and why, without building anything or importing TensorFlow."""
