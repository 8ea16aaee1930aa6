"""kerasxai: turn a defect classifier into a defect locator in one forward pass.

JAX is the default Keras backend; set KERAS_BACKEND before importing to choose another.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")
# tensorflow-cpu is only used for tf.data / SavedModel: keep its logs quiet.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
