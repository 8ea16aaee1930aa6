"""Reference outputs from timm itself for tests/test_timm_weights.py, and a full-size check.

Runs in its own environment with PyTorch and timm (neither is a kerasxai dependency):

    python3 -m venv /tmp/timmenv
    /tmp/timmenv/bin/pip install torch timm safetensors numpy
    /tmp/timmenv/bin/python tools/make_timm_fixtures.py --keras-python .venv/bin/python

For each transformer it makes a reduced timm model of the same layout (depth 2, width 48,
3 heads, 64 px input; seeded random init, scaled so attention is far from uniform) and writes
to tests/fixtures/timm/:
- `<name>.safetensors`: its state dict as timm saves it (float32), head included;
- `<name>_outputs.npz`: a fixed raw-pixel batch, timm's pre-head features (the tokens after
  the final norm), every block's attention probabilities (fused attention off, read at
  `attn_drop`), and the rollout of those attentions for fusion max / discard 0.9 and mean / 0;
- for the ViT, `vit_tiny_patch16_224.npz`: the same weights in the augreg / big_vision layout,
  checked by loading it with timm's own `.npz` reader;
- for the distilled DeiT, `<name>_96px.npz`: timm's features and attentions at 96 px after
  timm's checkpoint filter resampled the 4x4 position embedding to 6x6;
- `resample.npz`: `timm.layers.resample_abs_pos_embed` of a 14x14 (+1 prefix) embedding to
  10x10 (160 px) and 24x24 (384 px).

With --keras-python it then checks the full-size models (depth 12, width 192, 224 px, random
init): timm's outputs against kerasxai's after loading the same safetensors file, printing the
largest absolute differences and the load time.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

NAMES = ("vit_tiny_patch16_224", "deit_tiny_patch16_224", "deit_tiny_distilled_patch16_224")
SMALL = dict(depth=2, embed_dim=48, num_heads=3, img_size=64, num_classes=2)
OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "timm"
ROLLOUTS = (("max", 0.9), ("mean", 0.0))
SEED = 0


def import_timm():
    """timm with the CPU torch wheel: PyPI's torchvision (which timm imports) is built against
    CUDA torch, its C ops do not load, and its import fails registering fakes for nms/qnms.
    Defining those two schemas first lets it import; the ViTs use neither."""
    import torch

    try:
        import torchvision  # noqa: F401
    except (RuntimeError, ImportError):
        for mod in [m for m in sys.modules if m.startswith("torchvision")]:
            del sys.modules[mod]
        lib = torch.library.Library("torchvision", "DEF")  # noqa: F841  (kept alive below)
        for op in ("nms", "qnms"):
            try:
                lib.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
            except RuntimeError:
                pass
        import_timm.lib = lib
    import timm

    return torch, timm


def reinit(model, torch, seed):
    """Seeded weights with O(1) activations and peaked attention: timm's own init (std 0.02)
    leaves attention near uniform, where the discard's order would hang on rounding."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm1.weight") or name.endswith("norm2.weight") or name == "norm.weight":
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
            elif p.ndim >= 2 and "token" not in name and "pos_embed" not in name:
                fan_in = int(np.prod(p.shape[1:]))
                p.copy_(torch.randn(p.shape, generator=gen) / np.sqrt(fan_in))
            else:
                p.copy_(0.5 * torch.randn(p.shape, generator=gen))


def run_timm(model, torch, images):
    """(features (B,T,D), [attention (B,heads,T,T)] per block) for raw 0..255 NHWC images."""
    mean = np.asarray(model.pretrained_cfg["mean"], "float32")
    std = np.asarray(model.pretrained_cfg["std"], "float32")
    x = (images / 255.0 - mean) / std
    x = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    attentions = []
    hooks = []
    for block in model.blocks:
        block.attn.fused_attn = False
        hooks.append(block.attn.attn_drop.register_forward_hook(lambda m, i, o: attentions.append(o.detach().numpy())))
    model.eval()
    with torch.no_grad():
        features = model.forward_features(x).numpy()
    for h in hooks:
        h.remove()
    return features, attentions


def rollout_reference(attentions, fusion, discard_ratio, num_prefix_tokens):
    """Attention rollout by the full matrix product: per image, the k = floor(T*T*ratio)
    smallest fused entries (stable order) zeroed except [CLS, CLS], identity added, rows
    normalized, R = A_L ... A_1, CLS row over the patch grid."""
    b, _, t, _ = attentions[0].shape
    result = np.tile(np.eye(t), (b, 1, 1))
    k = int(np.floor(t * t * discard_ratio))
    for a in attentions:
        fused = {"max": a.max(1), "mean": a.mean(1), "min": a.min(1)}[fusion].astype("float64")
        flat = fused.reshape(b, -1).copy()
        for i in range(b):
            drop = np.argsort(flat[i], kind="stable")[:k]
            flat[i, drop[drop != 0]] = 0.0
        m = flat.reshape(b, t, t) + np.eye(t)
        m /= m.sum(-1, keepdims=True)
        result = m @ result
    side = int(round(np.sqrt(t - num_prefix_tokens)))
    return result[:, 0, num_prefix_tokens:].reshape(b, side, side).astype("float32")


def discard_margin(attentions, discard_ratio):
    """Smallest gap between the k-th and (k+1)-th smallest fused entry (fusion max), over
    images and blocks: rounding below it cannot change which entries the discard drops."""
    t = attentions[0].shape[-1]
    k = int(np.floor(t * t * discard_ratio))
    gaps = [np.diff(np.sort(a.max(1).reshape(a.shape[0], -1), axis=1)[:, k - 1 : k + 1], axis=1).min() for a in attentions]
    return float(min(gaps))


def to_big_vision(state):
    """timm state dict (numpy) -> the augreg `.npz` layout timm's `_load_weights` reads."""
    d = state["cls_token"].shape[-1]
    out = {
        "embedding/kernel": state["patch_embed.proj.weight"].transpose(2, 3, 1, 0),
        "embedding/bias": state["patch_embed.proj.bias"],
        "cls": state["cls_token"],
        "Transformer/posembed_input/pos_embedding": state["pos_embed"],
        "Transformer/encoder_norm/scale": state["norm.weight"],
        "Transformer/encoder_norm/bias": state["norm.bias"],
        "head/kernel": state["head.weight"].T,
        "head/bias": state["head.bias"],
    }
    i = 0
    while f"blocks.{i}.norm1.weight" in state:
        s, b = f"blocks.{i}.", f"Transformer/encoderblock_{i}/"
        mha = b + "MultiHeadDotProductAttention_1/"
        heads = 3
        qkv_w = state[s + "attn.qkv.weight"].reshape(3, d, d)  # (3, out, in)
        qkv_b = state[s + "attn.qkv.bias"].reshape(3, d)
        for j, n in enumerate(("query", "key", "value")):
            out[f"{mha}{n}/kernel"] = qkv_w[j].T.reshape(d, heads, d // heads)
            out[f"{mha}{n}/bias"] = qkv_b[j].reshape(heads, d // heads)
        out[mha + "out/kernel"] = state[s + "attn.proj.weight"].T.reshape(heads, d // heads, d)
        out[mha + "out/bias"] = state[s + "attn.proj.bias"]
        out[b + "LayerNorm_0/scale"], out[b + "LayerNorm_0/bias"] = state[s + "norm1.weight"], state[s + "norm1.bias"]
        out[b + "LayerNorm_2/scale"], out[b + "LayerNorm_2/bias"] = state[s + "norm2.weight"], state[s + "norm2.bias"]
        for r in range(2):
            out[f"{b}MlpBlock_3/Dense_{r}/kernel"] = state[f"{s}mlp.fc{r + 1}.weight"].T
            out[f"{b}MlpBlock_3/Dense_{r}/bias"] = state[f"{s}mlp.fc{r + 1}.bias"]
        i += 1
    return out


def make_fixtures(torch, timm, out: Path):
    from safetensors.torch import save_file
    from timm.layers import resample_abs_pos_embed
    from timm.models.vision_transformer import checkpoint_filter_fn

    out.mkdir(parents=True, exist_ok=True)
    images = np.random.default_rng(SEED).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    for n, name in enumerate(NAMES):
        torch.manual_seed(SEED)
        model = timm.create_model(name, pretrained=False, **SMALL)
        reinit(model, torch, SEED + n)
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(out / f"{name}.safetensors"))
        features, attentions = run_timm(model, torch, images)
        prefix = model.num_prefix_tokens
        arrays = {"images": images, "features": features}
        arrays.update({f"attention_{i}": a for i, a in enumerate(attentions)})
        for fusion, ratio in ROLLOUTS:
            arrays[f"rollout_{fusion}_{ratio}"] = rollout_reference(attentions, fusion, ratio, prefix)
        np.savez(out / f"{name}_outputs.npz", **arrays)
        print(f"{name}: {len(state)} tensors, discard margin {discard_margin(attentions, 0.9):.2e}")
        numpy_state = {k: v.numpy() for k, v in state.items()}
        if name == "vit_tiny_patch16_224":
            path = out / f"{name}.npz"
            np.savez(path, **to_big_vision(numpy_state))
            again = timm.create_model(name, pretrained=False, **SMALL)
            again.load_pretrained(str(path))  # timm's own reader of the augreg layout
            diff = np.abs(run_timm(again, torch, images)[0] - features).max()
            assert diff < 1e-5, f"the .npz does not round-trip through timm's reader ({diff})"
        if name == "deit_tiny_distilled_patch16_224":
            big = timm.create_model(name, pretrained=False, **{**SMALL, "img_size": 96})
            big.load_state_dict(checkpoint_filter_fn(dict(state), big))
            images96 = np.random.default_rng(SEED + 1).uniform(0, 255, (2, 96, 96, 3)).astype("float32")
            features96, attentions96 = run_timm(big, torch, images96)
            np.savez(out / f"{name}_96px.npz", images=images96, features=features96,
                     pos_embed=big.pos_embed.detach().numpy(),
                     **{f"attention_{i}": a for i, a in enumerate(attentions96)})
    posemb = torch.from_numpy(np.random.default_rng(SEED + 2).normal(size=(1, 1 + 14 * 14, 8)).astype("float32"))
    np.savez(
        out / "resample.npz",
        pos_embed=posemb.numpy(),
        **{f"grid_{g}": resample_abs_pos_embed(posemb, [g, g], num_prefix_tokens=1).numpy() for g in (10, 24)},
    )


def full_size_check(torch, timm, keras_python: str, keep: Path | None):
    """Full-size random-init models: timm vs kerasxai on the same safetensors file."""
    from safetensors.torch import save_file

    work = keep or Path(tempfile.mkdtemp(prefix="timm_full_"))
    work.mkdir(parents=True, exist_ok=True)
    images = np.random.default_rng(SEED + 3).uniform(0, 255, (2, 224, 224, 3)).astype("float32")
    for n, name in enumerate(NAMES):
        model = timm.create_model(name, pretrained=False)
        reinit(model, torch, 100 + n)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(work / f"{name}.safetensors"))
        features, attentions = run_timm(model, torch, images)
        np.savez(work / f"{name}_outputs.npz", images=images, features=features,
                 **{f"attention_{i}": a for i, a in enumerate(attentions)})
    result = subprocess.run([keras_python, __file__, "--compare", str(work)], check=True, capture_output=True, text=True)
    print(result.stdout.strip())


def compare(work: Path):
    """In kerasxai's environment: load each full-size file, compare with timm's outputs."""
    import keras

    from kerasxai.models import build_model, explain_model

    report = {}
    for name in NAMES:
        ref = np.load(work / f"{name}_outputs.npz")
        start = time.perf_counter()
        model = build_model(name, weights=str(work / f"{name}.safetensors"))
        seconds = time.perf_counter() - start
        features = keras.Model(model.inputs, model.get_layer("norm").output)(ref["images"])
        attentions = explain_model(model)(ref["images"])["attentions"]
        report[name] = {
            "build_and_load_s": round(seconds, 2),
            "features_max_abs_diff": float(np.abs(np.asarray(features) - ref["features"]).max()),
            "attention_max_abs_diff": float(max(
                np.abs(np.asarray(a) - ref[f"attention_{i}"]).max() for i, a in enumerate(attentions))),
        }
    print(json.dumps(report, indent=1))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help="fixture folder (default tests/fixtures/timm)")
    parser.add_argument("--keras-python", help="kerasxai's python: also check the full-size models")
    parser.add_argument("--keep", type=Path, help="keep the full-size checkpoints and outputs here")
    parser.add_argument("--compare", type=Path, help=argparse.SUPPRESS)  # the kerasxai side
    args = parser.parse_args(argv)
    if args.compare:
        return compare(args.compare)
    torch, timm = import_timm()
    torch.set_num_threads(1)
    print(f"timm {timm.__version__}, torch {torch.__version__}")
    make_fixtures(torch, timm, args.out)
    if args.keras_python:
        full_size_check(torch, timm, args.keras_python, args.keep)


if __name__ == "__main__":
    main()
