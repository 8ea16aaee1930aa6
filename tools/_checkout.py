"""Imported first by every tool: kerasxai from this checkout, so ``python tools/X.py`` works
without installing it, and kerasxai's environment defaults (JAX backend, quiet TensorFlow logs)
set before anything imports Keras. Tools start their ``main`` through ``kerasxai.cli.run``,
like the commands."""

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import kerasxai  # noqa: E402,F401  (environment defaults; imports no framework)
