"""tfjs-build's version, in a module of its own so any module may import it without the package
root (which imports the public API, and with it most of the package).

Keep it equal to `version` in pyproject.toml.
"""

from __future__ import annotations

__version__ = "0.1.0"
