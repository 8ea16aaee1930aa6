"""Where pretrained weights come from: Keras' ImageNet cache or a local copy of its file,
a `.weights.h5` file, or a timm checkpoint for the transformers (`timm_weights`).

ImageNet weights are Keras' own files (downloaded once into ~/.keras/models by
keras.applications). Offline, Keras would fail only after long network timeouts; here the
attempt is bounded (DNS look-up in a thread, a socket timeout on the download) and skipped
entirely when KERASXAI_OFFLINE=1, and every failure is one clear error saying which file to
place where.
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path
from urllib.parse import urlsplit

# keras.applications' file names (keras/src/applications/{mobilenet_v3,efficientnet_v2}.py).
IMAGENET_FILES = {
    "MobileNetV3Large": "weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5",
    "EfficientNetV2S": "efficientnetv2-s_notop.h5",
}
IMAGENET_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"
TIMM_SUFFIXES = (".safetensors", ".npz")  # timm's hub file; the augreg ViT's big_vision file
TIMEOUT_S = float(os.environ.get("KERASXAI_DOWNLOAD_TIMEOUT", "20"))


class WeightsError(ValueError):
    """Weights cannot be found or loaded; the message says what to do."""


def keras_cache_dirs() -> list[Path]:
    """Folders keras.applications looks in for its weight files (KERAS_HOME, ~, /tmp)."""
    import keras

    dirs = []
    if os.environ.get("KERAS_HOME"):
        dirs.append(Path(os.environ["KERAS_HOME"]) / "models")
    try:
        dirs.append(Path(keras.src.backend.config.keras_home()) / "models")
    except AttributeError:  # private accessor moved: fall back to the documented default
        dirs.append(Path.home() / ".keras" / "models")
    dirs.append(Path("/tmp/.keras/models"))
    return list(dict.fromkeys(dirs))


def imagenet_cached(arch: str) -> bool:
    return any((d / IMAGENET_FILES[arch]).is_file() for d in keras_cache_dirs())


def _host_resolves(host: str, timeout: float) -> bool:
    """DNS look-up bounded in time (socket timeouts do not cover getaddrinfo)."""
    result = []

    def look_up():
        try:
            socket.getaddrinfo(host, 443)
            result.append(True)
        except OSError:
            pass

    worker = threading.Thread(target=look_up, daemon=True)
    worker.start()
    worker.join(timeout)
    return bool(result)


def _unavailable(arch: str, model_name: str, why: str) -> str:
    return (
        f"ImageNet weights for '{model_name}' are not in the Keras cache and could not be "
        f"downloaded ({why}). Place the file '{IMAGENET_FILES[arch]}' (from {IMAGENET_URL}) in "
        f"{keras_cache_dirs()[0]}, or pass weights=<path to a .weights.h5 file>, or weights=None."
    )


def offline() -> bool:
    return os.environ.get("KERASXAI_OFFLINE", "") not in ("", "0")


def imagenet_problem(arch: str, model_name: str) -> str | None:
    """Why the ImageNet weights of `arch` cannot be had, known without the network (not
    cached while KERASXAI_OFFLINE is set); None when they are cached or a download may work."""
    if imagenet_cached(arch) or not offline():
        return None
    return _unavailable(arch, model_name, "KERASXAI_OFFLINE is set")


def build_imagenet_backbone(constructor, arch: str, model_name: str, **kwargs):
    """keras.applications `constructor(weights="imagenet", **kwargs)`, never hanging offline."""
    if imagenet_cached(arch):
        return constructor(weights="imagenet", **kwargs)
    problem = imagenet_problem(arch, model_name)
    if problem:
        raise WeightsError(problem)
    help_text = _unavailable(arch, model_name, "{why}")
    host = urlsplit(IMAGENET_URL).hostname
    if not _host_resolves(host, TIMEOUT_S):
        raise WeightsError(help_text.format(why=f"cannot resolve {host} within {TIMEOUT_S:.0f} s"))
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(TIMEOUT_S)
    try:
        return constructor(weights="imagenet", **kwargs)
    except Exception as exc:  # urllib / hash / IO errors of the download
        raise WeightsError(help_text.format(why=f"{type(exc).__name__}: {exc}")) from exc
    finally:
        socket.setdefaulttimeout(old)


def weights_format(path, model_name: str, transformer: bool) -> str:
    """What a weights file is, told by its name (the one place), checked to exist:
    "keras" (`.weights.h5`, saved with model.save_weights from the same model), "timm"
    (`.safetensors` / `.npz`, transformers; kerasxai.models.timm_weights) or "applications"
    (another `.h5`: keras.applications' ImageNet file, CNNs)."""
    path = Path(path)
    if path.name.endswith(".weights.h5"):
        fmt = "keras"
    elif transformer and path.suffix in TIMM_SUFFIXES:
        fmt = "timm"
    elif not transformer and path.suffix == ".h5":
        fmt = "applications"
    else:
        files = ("a timm checkpoint (.safetensors, or the ViT's augreg .npz)" if transformer
                 else "keras.applications' ImageNet .h5 file (e.g. " + ", ".join(IMAGENET_FILES.values()) + ")")
        raise WeightsError(
            f"weights='{path}' for '{model_name}': expected None, 'imagenet', a path ending in "
            f"'.weights.h5' (saved with model.save_weights) or {files}."
        )
    if not path.is_file():
        raise WeightsError(f"weights file '{path}' for '{model_name}' not found: pass an existing file.")
    return fmt


def build_applications_backbone(constructor, arch: str, path, model_name: str, **kwargs):
    """keras.applications `constructor(weights=path, **kwargs)` from a local copy of its
    ImageNet file (machines without network), or one clear error naming the file."""
    try:
        return constructor(weights=str(path), **kwargs)
    except Exception as exc:  # h5py / layer-count / shape errors of keras' legacy .h5 loader
        raise WeightsError(
            f"weights file '{path}' does not fit '{model_name}' ({type(exc).__name__}: {exc}): pass "
            f"keras.applications' '{IMAGENET_FILES[arch]}' (from {IMAGENET_URL}), complete."
        ) from exc


def load_weights_file(model, path, model_name: str) -> None:
    """Load a `.weights.h5` saved from a model of the same name and input size."""
    path = Path(path)
    try:
        model.load_weights(str(path))
    except Exception as exc:
        raise WeightsError(
            f"weights file '{path}' does not fit '{model_name}' at input {tuple(model.input_shape[1:])}: "
            f"{type(exc).__name__}: {exc}. Save it from build_model('{model_name}', ...) with the same "
            "input size (transformers' position embeddings depend on it)."
        ) from exc
