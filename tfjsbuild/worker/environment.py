"""Settings TensorFlow and tensorflowjs read once, when they are imported.

Every worker module that imports them imports this module first (above an `# isort: split`),
so the settings hold whichever module a process imports first. It sets defaults in
`os.environ` (a setting the user made wins) and hides one warning, and imports nothing else.
"""

from __future__ import annotations

import os
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# tensorflow_decision_forests (imported by tensorflowjs) imports IPython to print a welcome
# message whenever stdout is not a terminal, and fails where IPython is not installed.
os.environ.setdefault("TFDF_DISABLE_WELCOME_MESSAGE", "1")
# tensorflowjs imports tensorflow_hub, which imports pkg_resources: with setuptools 80 (what a
# Python 3.12 venv gets) that warns of its deprecation on every import, in inspect's and the
# Python API's output too. Only that warning, and only from tensorflow_hub.
warnings.filterwarnings(
    "ignore",
    message="pkg_resources is deprecated as an API",
    category=UserWarning,
    module="tensorflow_hub",
)
