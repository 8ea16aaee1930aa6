"""timm checkpoints into the transformers: timm's `model.safetensors` or the augreg `.npz`.

The transformers keep timm's layout (vit.py), so every tensor maps to one Keras weight:
PyTorch's OIHW patch kernel -> HWIO, (out, in) matrices -> (in, out), CLS (and distillation)
token -> `prefix_tokens`, norms and biases as they are. The classifier heads are not taken
(ours has one output). A checkpoint for another patch grid has its position embedding
resampled to ours as timm does when it loads one (`resample_abs_pos_embed`: bicubic,
antialiased, prefix tokens kept), so one file fine-tunes at any tile size.

Everything is read and checked before the first weight is assigned: a checkpoint of another
architecture, a truncated file or a missing tensor is one `WeightsError` naming the file and
the first tensor that does not fit, and the model is left as it was.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kerasxai.models.rollout import patch_grid
from kerasxai.models.weights import WeightsError

HEAD_PREFIXES = ("head.", "head_dist.")  # timm's classifier heads: ours has one output


def read_checkpoint(path) -> dict:
    """timm state-dict names -> float32 arrays, from a `.safetensors` or an augreg `.npz`."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.numpy import load_file

            tensors = load_file(str(path))
        else:
            with np.load(str(path)) as npz:
                tensors = _from_big_vision({k: npz[k] for k in npz.files}, path)
    except WeightsError:
        raise
    except Exception as exc:  # safetensors' SafetensorError, zipfile / numpy read errors
        raise WeightsError(
            f"cannot read the timm checkpoint '{path}' ({type(exc).__name__}: {exc}): it is truncated or "
            "not a timm .safetensors / .npz file; download it again."
        ) from exc
    out = {}
    for key, value in tensors.items():
        if not np.issubdtype(value.dtype, np.floating):
            raise WeightsError(f"timm checkpoint '{path}': tensor '{key}' is {value.dtype}, expected floats.")
        out[key] = np.asarray(value, dtype="float32")
    return out


def _from_big_vision(w: dict, path: Path) -> dict:
    """The augreg / big_vision `.npz` layout in timm's names (timm's `_load_weights`)."""
    prefix = next((p for p in ("", "opt/target/", "params/") if f"{p}embedding/kernel" in w), None)
    if prefix is None:
        raise WeightsError(f"'{path}' has no 'embedding/kernel': not a ViT .npz checkpoint (augreg / big_vision).")

    def get(key):
        if prefix + key not in w:
            raise WeightsError(f"timm checkpoint '{path}' lacks '{prefix + key}' (a ViT .npz of another layout).")
        return w[prefix + key]

    out = {
        "patch_embed.proj.weight": get("embedding/kernel").transpose(3, 2, 0, 1),  # HWIO -> OIHW
        "patch_embed.proj.bias": get("embedding/bias"),
        "cls_token": get("cls"),
        "norm.weight": get("Transformer/encoder_norm/scale"),
        "norm.bias": get("Transformer/encoder_norm/bias"),
    }
    pos = "pos_embedding" if prefix == "params/" else "Transformer/posembed_input/pos_embedding"
    out["pos_embed"] = get(pos)
    mha, mlp, ln2 = ("MultiHeadDotProductAttention_0", "MlpBlock_0", "LayerNorm_1") if prefix == "params/" else (
        "MultiHeadDotProductAttention_1", "MlpBlock_3", "LayerNorm_2")
    i = 0
    while f"{prefix}Transformer/encoderblock_{i}/LayerNorm_0/scale" in w:
        b, t = f"Transformer/encoderblock_{i}/", f"blocks.{i}."
        qkv = [get(f"{b}{mha}/{n}/kernel") for n in ("query", "key", "value")]  # (D, heads, head_dim)
        out[t + "norm1.weight"], out[t + "norm1.bias"] = get(b + "LayerNorm_0/scale"), get(b + "LayerNorm_0/bias")
        out[t + "attn.qkv.weight"] = np.concatenate([k.reshape(k.shape[0], -1).T for k in qkv])
        out[t + "attn.qkv.bias"] = np.concatenate([get(f"{b}{mha}/{n}/bias").reshape(-1) for n in ("query", "key", "value")])
        proj = get(f"{b}{mha}/out/kernel")  # (heads, head_dim, D)
        out[t + "attn.proj.weight"] = proj.reshape(-1, proj.shape[-1]).T
        out[t + "attn.proj.bias"] = get(f"{b}{mha}/out/bias")
        out[t + "norm2.weight"], out[t + "norm2.bias"] = get(f"{b}{ln2}/scale"), get(f"{b}{ln2}/bias")
        for r in range(2):
            out[f"{t}mlp.fc{r + 1}.weight"] = get(f"{b}{mlp}/Dense_{r}/kernel").T
            out[f"{t}mlp.fc{r + 1}.bias"] = get(f"{b}{mlp}/Dense_{r}/bias")
        i += 1
    for name in ("head/kernel", "head/bias"):
        if prefix + name in w:
            out["head." + ("weight" if name.endswith("kernel") else "bias")] = w[prefix + name]
    return out


def resample_pos_embed(posemb, new_grid, num_prefix_tokens=1, old_grid=None):
    """(1, prefix + h*w, D) -> (1, prefix + H*W, D): the patch part resampled bicubically
    (antialiased) from the (h, w) grid (square if None) to `new_grid`, prefix tokens kept.
    timm's `resample_abs_pos_embed` with its defaults (PyTorch's antialiased bicubic)."""
    posemb = np.asarray(posemb, dtype="float32")
    new_grid = (int(new_grid[0]), int(new_grid[1]))
    old_grid = patch_grid(posemb.shape[1], num_prefix_tokens, old_grid)
    if tuple(old_grid) == new_grid:
        return posemb
    prefix, grid = posemb[:, :num_prefix_tokens], posemb[0, num_prefix_tokens:]
    grid = grid.reshape(old_grid[0], old_grid[1], -1).astype("float64")
    rows, cols = _resize_matrix(old_grid[0], new_grid[0]), _resize_matrix(old_grid[1], new_grid[1])
    grid = np.einsum("ih,jw,hwd->ijd", rows, cols, grid).reshape(1, new_grid[0] * new_grid[1], -1)
    return np.concatenate([prefix, grid.astype("float32")], axis=1)


def _resize_matrix(n_in, n_out):
    """(n_out, n_in) weights of the antialiased bicubic resize along one axis (PIL's and
    PyTorch's `antialias=True`: Keys cubic a=-0.5, stretched by the scale when shrinking, each
    row normalized to sum 1). NumPy rather than `keras.ops.image.resize`, which computes the same
    but compiles one program per grid shape under JAX, a cost larger than the whole load."""
    scale = n_in / n_out
    stretch = max(scale, 1.0)
    centers = (np.arange(n_out) + 0.5) * scale
    x = np.abs((np.arange(n_in)[None, :] + 0.5 - centers[:, None]) / stretch)
    a = -0.5
    w = np.where(x <= 1, ((a + 2) * x - (a + 3)) * x * x + 1, np.where(x < 2, (((x - 5) * x + 8) * x - 4) * a, 0.0))
    return w / w.sum(axis=1, keepdims=True)


def _targets(model, num_prefix_tokens, grid):
    """(timm key(s), Keras variable, convert) for every weight of a transformer, in graph order."""
    targets = []

    def add(keys, variable, convert=lambda a: a):
        targets.append((keys if isinstance(keys, tuple) else (keys,), variable, convert))

    conv = model.get_layer("patch_embed")
    add("patch_embed.proj.weight", conv.kernel, lambda a: a.transpose(2, 3, 1, 0))  # OIHW -> HWIO
    add("patch_embed.proj.bias", conv.bias)
    tokens = ("cls_token", "dist_token")[:num_prefix_tokens]
    add(tokens, model.get_layer("prefix_tokens").tokens, lambda *a: np.concatenate(a, axis=1))
    add("pos_embed", model.get_layer("pos_embed").embedding, lambda a: resample_pos_embed(a, grid, num_prefix_tokens))
    depth = sum(1 for layer in model.layers if layer.name.endswith("_attn") and layer.name.startswith("block_"))
    for i in range(depth):
        t = f"blocks.{i}."
        for ours, theirs in (("norm1", "norm1"), ("norm2", "norm2")):
            norm = model.get_layer(f"block_{i}_{ours}")
            add(t + theirs + ".weight", norm.gamma)
            add(t + theirs + ".bias", norm.beta)
        attn = model.get_layer(f"block_{i}_attn")
        add(t + "attn.qkv.weight", attn.qkv_kernel, np.transpose)
        add(t + "attn.qkv.bias", attn.qkv_bias)
        add(t + "attn.proj.weight", attn.proj_kernel, np.transpose)
        add(t + "attn.proj.bias", attn.proj_bias)
        for fc in ("fc1", "fc2"):
            dense = model.get_layer(f"block_{i}_{fc}")
            add(f"{t}mlp.{fc}.weight", dense.kernel, np.transpose)
            add(f"{t}mlp.{fc}.bias", dense.bias)
    norm = model.get_layer("norm")
    add("norm.weight", norm.gamma)
    add("norm.bias", norm.beta)
    return targets


def load_timm_weights(model, path, model_name: str | None = None) -> str:
    """Assign a timm checkpoint to a transformer built by `build_vit`; returns the report line
    (tensors loaded, tensors skipped).

    Every tensor is converted and shape-checked first; the model changes only when all fit.
    """
    path = Path(path)
    model_name = model_name or model.name
    num_prefix_tokens = model.get_layer("prefix_tokens").num_tokens
    grid = tuple(model.get_layer("patch_embed").output.shape[1:3])

    def mismatch(what):
        return WeightsError(
            f"timm checkpoint '{path}' does not fit '{model_name}' ({what}): use the checkpoint of "
            f"timm's '{model_name}' (model.safetensors from the hub, or the augreg .npz for the ViT)."
        )

    state = read_checkpoint(path)
    for extra in ("cls_token", "dist_token")[num_prefix_tokens:]:
        if extra in state:
            raise mismatch(f"tensor '{extra}' has no place in ours: a checkpoint with more prefix tokens")
    targets = _targets(model, num_prefix_tokens, grid)
    values, used = [], set()
    for keys, variable, convert in targets:
        missing = [k for k in keys if k not in state]
        if missing:
            raise mismatch(f"tensor '{missing[0]}' is missing")
        try:
            value = convert(*(state[k] for k in keys))
        except ValueError as exc:  # e.g. a position embedding that is no grid, tokens of another width
            raise mismatch(f"tensor '{keys[-1]}' {[tuple(state[k].shape) for k in keys]}: {exc}") from exc
        if tuple(value.shape) != tuple(variable.shape):
            shapes = ", ".join(str(tuple(state[k].shape)) for k in keys)
            raise mismatch(f"tensor '{keys[-1]}' has shape {shapes}, ours needs {tuple(variable.shape)} after conversion")
        values.append(value)
        used.update(keys)
    skipped = sorted(k for k in state if k not in used)
    unexpected = [k for k in skipped if not k.startswith(HEAD_PREFIXES)]
    if unexpected:
        raise mismatch(f"tensor '{unexpected[0]}' has no place in ours ({len(unexpected)} such)")
    for (_, variable, _), value in zip(targets, values):
        variable.assign(value)
    return (
        f"{model_name}: loaded {len(used)} tensors from timm checkpoint '{path}'; skipped "
        f"{len(skipped)} ({', '.join(skipped) or 'none'}: timm's classifier head, ours has one output)"
    )
