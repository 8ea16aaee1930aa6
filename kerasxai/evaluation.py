"""Evaluate a model's maps on labelled tiles: one pass, streaming, constant memory.

:func:`evaluate_model` runs a model over batches of tiles (dicts with ``image``, ``mask``,
``valid``, ``label`` and optionally ``source``/``y``/``x``, as ``eval_batches`` yields) and
feeds :class:`kerasxai.metrics.LocalizationMetrics` accumulators for

- the model's own single-pass map (the product being evaluated);
- transformers: every head fusion x discard ratio of ``cfg.eval`` (thesis figure 3.10),
  from the *same* forward pass: the rollout is a pure function of the attention
  probabilities, so the grid needs no retraining and no extra forward pass (a test checks
  it equals ``set_rollout`` + predict);
- baselines on the same tiles, gated by the same score: Grad-CAM / Grad-CAM++ (CNNs),
  gradient-weighted rollout (transformers), uniform and centre-Gaussian maps.

Memory: accumulators are O(1); only ``overlay_tiles`` chosen tiles are kept for figures.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import keras
import numpy as np

from kerasxai.explain import GradCAMExplainer, GradRolloutExplainer, trivial_maps
from kerasxai.metrics import LocalizationMetrics
from kerasxai.models.rollout import rollout_sweep

__all__ = ["ModelEvaluation", "OverlayTile", "evaluate_model", "select_overlay_tiles", "tile_key"]


@dataclass
class OverlayTile:
    """One tile kept for the overlay figure (the same keys across models)."""

    key: tuple  # (source, y, x)
    image: np.ndarray  # (S, S, 3) uint8
    mask: np.ndarray  # (S, S) uint8
    valid: np.ndarray  # (S, S) uint8
    score: float
    heatmap: np.ndarray  # (h, w) the model's own map


@dataclass
class ModelEvaluation:
    """What one model's evaluation produced; ``to_dict`` is the JSON part."""

    label: str  # row name in tables (e.g. "mobilenetv3_large_d")
    model: str  # kerasxai model name
    run: str  # run folder
    kind: str  # "cnn" | "transformer"
    metrics: dict
    fusion: str | None = None
    discard_ratio: float | None = None
    baselines: dict[str, dict] = field(default_factory=dict)
    sweep: dict | None = None  # {"fusions", "discard_ratios", "metrics": {fusion: [dict per ratio]}}
    overlays: list[OverlayTile] = field(default_factory=list)
    seconds: float = 0.0
    tiles: int = 0
    # pixel precision-recall curves behind PxAP: {"gated" | "ungated": ThresholdFreeMetrics.curve()}
    pr_curves: dict[str, dict] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "label": self.label, "model": self.model, "run": self.run, "kind": self.kind,
            "fusion": self.fusion, "discard_ratio": self.discard_ratio, "tiles": self.tiles,
            "seconds": round(self.seconds, 2), "metrics": self.metrics, "baselines": self.baselines,
            "sweep": self.sweep,
        }


def tile_key(source, y, x) -> tuple:
    if isinstance(source, bytes):
        source = source.decode("utf-8", "replace")
    return (str(source), int(y), int(x))


def select_overlay_tiles(tiles: Iterable[dict], n: int, split: str | None = None, limit: int | None = None) -> list[tuple]:
    """Keys of ``n`` defective tiles for the overlay figure, one per source image first.

    ``tiles`` are manifest entries (``{"split", "source", "y", "x", "label"}``) in dataset
    order; ``limit`` considers only the first ``limit`` tiles of the split (eval.max_tiles).
    """
    chosen, seen, spare = [], set(), []
    count = 0
    for t in tiles:
        if split is not None and t.get("split") != split:
            continue
        count += 1
        if limit is not None and count > limit:
            break
        if float(t.get("label", 0)) < 0.5:
            continue
        key = tile_key(t["source"], t["y"], t["x"])
        if key[0] in seen:
            spare.append(key)
            continue
        seen.add(key[0])
        chosen.append(key)
        if len(chosen) == n:
            return chosen
    return (chosen + spare)[:n]


def _np(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def evaluate_model(
    model: keras.Model,
    batches: Iterable[dict],
    *,
    eval_cfg,
    model_name: str,
    label: str | None = None,
    run: str = "",
    overlay_keys: Iterable[tuple] = (),
    progress: bool = True,
    total_batches: int | None = None,
    host_parallel: str = "auto",
) -> ModelEvaluation:
    """Score ``model``'s maps (and the sweep and baselines ``eval_cfg`` asks for) on ``batches``.

    Args:
        model: a kerasxai model ({"score", "heatmap"} outputs; layers "cam_head"/"rollout").
        batches: iterable of NumPy batch dicts (``eval_batches(...).as_numpy_iterator()``).
        eval_cfg: ``cfg.eval`` (score/pixel thresholds, fusions, discard ratios, baselines).
        model_name: the kerasxai model name (decides CNN vs transformer).
        overlay_keys: (source, y, x) keys of tiles to keep for the overlay figure.
        host_parallel: split each forward pass over the CPU cores under JAX ("auto" | "on" |
            "off", ``cfg.model.host_parallel``); the numbers are the same.
    """
    from kerasxai.models import explain_model, is_transformer
    from kerasxai.models.host_parallel import HostParallelPredictor, resolve

    transformer = is_transformer(model_name)
    def new(ungated: bool = False) -> LocalizationMetrics:
        return LocalizationMetrics(eval_cfg.score_threshold, eval_cfg.pixel_threshold, ungated=ungated)

    main = new(ungated=True)  # the model's map and the baselines also without the score gate
    em = explain_model(model)
    extra_name = "attentions" if transformer else "features"
    combo = keras.Model(
        model.inputs,
        {"score": model.output["score"], "heatmap": model.output["heatmap"], extra_name: em.output[extra_name]},
        name="evaluate_view",
    )
    forward = HostParallelPredictor(combo, resolve(host_parallel))
    fusion = ratio = None
    sweep_acc: dict[tuple, LocalizationMetrics] = {}
    fusions, ratios = list(eval_cfg.fusions), sorted({float(r) for r in eval_cfg.discard_ratios})
    if transformer:
        layer = model.get_layer("rollout")
        fusion, ratio = layer.fusion, float(layer.discard_ratio)
        prefix, grid = layer.num_prefix_tokens, layer.grid_size
        if ratio not in ratios:
            ratios = sorted(set(ratios) | {ratio})
        for f in fusions:
            for r in ratios:
                sweep_acc[(f, r)] = new(ungated=(r == ratio))  # the table rows (model's ratio) also ungated
    base_acc: dict[str, LocalizationMetrics] = {}
    grad_rollout = GradRolloutExplainer(em) if (transformer and eval_cfg.baselines) else None
    grad_cam = GradCAMExplainer(em) if (not transformer and eval_cfg.baselines) else None

    keep = set(overlay_keys)
    overlays: list[OverlayTile] = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total_batches, desc=f"evaluate {label or model_name}", unit="batch")
    start = time.perf_counter()
    n_tiles = 0
    full = None
    for batch in batches:
        images = np.asarray(batch["image"], np.float32)
        masks, valid, labels = batch["mask"], batch["valid"], batch["label"]
        n = len(images)
        full = full or n
        if n < full:  # pad a short last batch: every compiled function keeps its shape
            images = np.concatenate([images, np.zeros((full - n, *images.shape[1:]), images.dtype)])
        out = forward.predict_on_batch(images)
        scores = _np(out["score"]).reshape(-1)[:n]
        heat = _np(out["heatmap"])[:n]
        main.update(scores, heat, masks, valid, labels)
        n_tiles += n
        if transformer:
            maps = rollout_sweep([_np(a)[:n] for a in out["attentions"]], fusions, ratios, prefix, grid)
            for key, acc in sweep_acc.items():
                acc.update(scores, maps[key], masks, valid, labels)
        if eval_cfg.baselines:
            maps = dict(trivial_maps(n, masks.shape[-1]))
            if transformer:
                extra = grad_rollout(images)
            else:
                extra = grad_cam.from_features(_np(out["features"]))
            maps.update({k: v[:n] for k, v in extra.items()})
            for name, m in maps.items():
                base_acc.setdefault(name, new(ungated=True)).update(scores, m, masks, valid, labels)
        if keep and "source" in batch:
            for i in range(len(scores)):
                key = tile_key(batch["source"][i], batch["y"][i], batch["x"][i])
                if key in keep:
                    overlays.append(OverlayTile(key, np.asarray(batch["image"][i]), np.asarray(masks[i]),
                                                np.asarray(valid[i]), float(scores[i]), heat[i].copy()))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    if n_tiles == 0:
        raise ValueError(f"no tiles to evaluate for '{label or model_name}': the split is empty")

    sweep = None
    if transformer:
        sweep = {
            "fusions": fusions,
            "discard_ratios": ratios,
            "metrics": {f: [sweep_acc[(f, r)].result() for r in ratios] for f in fusions},
        }
    order = {k: i for i, k in enumerate(overlay_keys)}
    overlays.sort(key=lambda t: order.get(t.key, math.inf))
    return ModelEvaluation(
        label=label or model_name, model=model_name, run=str(run), kind="transformer" if transformer else "cnn",
        metrics=main.result(), fusion=fusion, discard_ratio=ratio,
        baselines={k: v.result() for k, v in base_acc.items()}, sweep=sweep, overlays=overlays,
        seconds=time.perf_counter() - start, tiles=n_tiles,
        pr_curves={"gated": main.threshold_free.curve(), "ungated": main.ungated[1].curve()},
    )

