"""Settings TensorFlow and tensorflowjs read once, when they are imported.

Every worker module that imports them imports this module first (above an `# isort: split`),
so the settings hold whichever module a process imports first. It only sets defaults in
`os.environ`: it imports nothing, and a setting the user made wins.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# tensorflow_decision_forests (imported by tensorflowjs) imports IPython to print a welcome
# message whenever stdout is not a terminal, and fails where IPython is not installed.
os.environ.setdefault("TFDF_DISABLE_WELCOME_MESSAGE", "1")
