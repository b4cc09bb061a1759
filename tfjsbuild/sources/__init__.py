"""Source kinds (SavedModel folders, Keras files, Python code): what each one is made of,
read without TensorFlow."""
