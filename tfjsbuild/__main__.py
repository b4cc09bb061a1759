from __future__ import annotations

import sys

from tfjsbuild.cli import main

sys.exit(main())
