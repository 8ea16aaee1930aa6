"""kerasxai: turn a defect classifier into a defect locator in one forward pass.

JAX is the default Keras backend; set KERAS_BACKEND before importing to choose another.
"""

import os
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")
# tensorflow-cpu is only used for tf.data / SavedModel: keep its logs quiet.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# JAX's persistent compilation cache: building a model compiles one initializer per weight
# shape and every CLI call recompiles the same forward pass; with the cache a second
# `train` / `predict` / `evaluate` of the same model starts in seconds instead of a minute.
# Set JAX_COMPILATION_CACHE_DIR yourself to move it (or to "" to switch it off).
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(Path.home() / ".cache" / "kerasxai" / "jax"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

__version__ = "0.1.0"
