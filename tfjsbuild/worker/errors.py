"""The error a conversion raises in the worker; it names no TensorFlow type and imports none."""

from __future__ import annotations

from tfjsbuild.errors import BuildError


class ConversionError(BuildError):
    """A signature that could not be converted; the message is the converter's real error."""
