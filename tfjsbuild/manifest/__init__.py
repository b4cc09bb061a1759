"""The manifest: read tfjs-build.yaml, validate it once, hand out frozen typed values."""
