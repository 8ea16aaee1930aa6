"""kerasxai: turn a defect classifier into a defect locator in one forward pass.

JAX is the default Keras backend; set KERAS_BACKEND before importing to choose another.

The Python API (README, "Python API"); each name is imported on first use, so
``import kerasxai`` imports no framework:

- ``load_config(path, overrides)``: a validated :class:`~kerasxai.config.Config`;
- ``build_model(name, input_shape=...)``: a model with {"score", "heatmap"} outputs;
- ``train_run(cfg)`` / ``resume_run(run_dir)``: one training run into a new run folder, or an
  interrupted one continued (:func:`kerasxai.training.train` / :func:`~kerasxai.training.resume`);
- ``search(cfg)``: the KerasTuner search of ``cfg.tune``;
- ``load_run(run_dir)`` / ``load_pretrained(name)``: ``(Config, model)`` of a run or a shipped model;
- ``Localizer`` and ``load_image``: defects located on full images of any size;
- ``export_run(run_dir, out_dir)`` / ``export_model(model, out_dir, ...)``: a TF Serving SavedModel.
"""

import importlib
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

# public name -> (module, its name there); `train` and `tune` would clash with the command modules
_API = {
    "load_config": ("kerasxai.config", "load_config"),
    "build_model": ("kerasxai.models", "build_model"),
    "train_run": ("kerasxai.training", "train"),
    "resume_run": ("kerasxai.training", "resume"),
    "search": ("kerasxai.tuning", "search"),
    "load_run": ("kerasxai.runs", "load_run"),
    "load_pretrained": ("kerasxai.pretrained", "load_pretrained"),
    "Localizer": ("kerasxai.localize", "Localizer"),
    "load_image": ("kerasxai.localize", "load_image"),
    "export_run": ("kerasxai.serving", "export_run"),
    "export_model": ("kerasxai.serving", "export_model"),
}
__all__ = sorted(_API)


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module 'kerasxai' has no attribute {name!r}")
    module, attr = _API[name]
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
