"""`python -m tfjsbuild`: the `tfjs-build` command (`tfjsbuild.cli.main`)."""

from __future__ import annotations

import sys

from tfjsbuild.cli.main import main

sys.exit(main())
