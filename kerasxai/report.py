"""Evaluation report: tables (CSV, Markdown, JSON), figures (PNG) and one offline report.html.

Input: a list of :class:`kerasxai.evaluation.ModelEvaluation`. Output folder:

- ``metrics.{csv,md}``   one row per model (transformers: one per head fusion at the run's
  discard ratio, like thesis tables 3.4 / 3.6), pooled metrics, tile classification
  accuracy, threshold-free metrics, then the per-tile (macro) means;
- ``ranking.{csv,md}``   ranks per thesis metric inside the CNN and transformer groups and
  the average rank (tables 3.5 / 3.7), plus the average over all nine map metrics;
- ``baselines.{csv,md}`` each model's own map next to its post-hoc and trivial baselines;
- ``sweep.csv``          transformers: every fusion x discard ratio;
- ``summary.{csv,md}``   one row per model: score accuracy, F1, pointing game, PxAP, with
  the thesis' PCB figures beside them where it has them (:mod:`kerasxai.thesis`);
- ``results.json``       everything above in one document;
- ``figures/*.png``      pixel precision-recall curves (the curves behind PxAP), overlays
  (3.4 / 3.5), full vs downscaled CNN bars (3.6 / 3.8), fusion x discard grids (3.10);
- ``report.html``        the summary table first, the PR curves, then the wide tables folded
  and the figures; PNGs embedded as base64 (offline); fits a 1280 px wide window.

Every file is written to a temporary name and moved into place (``os.replace``).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from kerasxai.metrics import METRIC_LABELS, UNGATED_KEYS, rank_models
from kerasxai.metrics.protocol import defect_mask, score_gate, tile_maps
from kerasxai.runtime import atomic_write_bytes, atomic_write_text
from kerasxai.tables import csv_table, markdown_table
from kerasxai.thesis import thesis_summary

__all__ = ["write_report", "summary_rows", "metrics_rows", "ranking_rows", "baseline_rows", "THESIS_METRICS", "MAP_METRICS"]

# The six map metrics of thesis tables 3.4-3.7 (pooled), in the thesis' column order.
THESIS_METRICS = ["pooled_f1", "pooled_precision", "pooled_jaccard", "pooled_accuracy", "pooled_recall", "pointing_game"]
MAP_METRICS = THESIS_METRICS + ["pxap", "pixel_auroc", "relevance_mass"]
TABLE_METRICS = MAP_METRICS[:6] + ["classification_accuracy"] + MAP_METRICS[6:] + [
    "macro_f1", "macro_precision", "macro_jaccard", "macro_accuracy", "macro_recall",
]


# ------------------------------------------------------------------------------ writing


def _fmt(v, rank: bool = False) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return ""
        return f"{v:.2f}".rstrip("0").rstrip(".") if rank else f"{v:.4f}"
    return str(v)


def _cells(rows: list[dict], columns: list[str], rank: bool) -> list[list[str]]:
    return [[_fmt(r.get(c, ""), rank) for c in columns] for r in rows]


def _csv(rows: list[dict], columns: list[str], rank: bool = False) -> str:
    return csv_table(columns, _cells(rows, columns, rank))


def _markdown(rows: list[dict], columns: list[str], headers: list[str], rank: bool = False) -> str:
    return markdown_table(headers, _cells(rows, columns, rank)) + "\n"


def _html_table(rows: list[dict], columns: list[str], headers: list[str], rank: bool = False) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in _cells(rows, columns, rank))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _json_safe(obj):
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return None if math.isnan(float(obj)) else float(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


# ------------------------------------------------------------------------------- tables


def _sweep_at(ev, fusion: str, ratio: float) -> dict | None:
    if not ev.sweep:
        return None
    ratios = ev.sweep["discard_ratios"]
    if fusion not in ev.sweep["metrics"] or ratio not in ratios:
        return None
    return ev.sweep["metrics"][fusion][ratios.index(ratio)]


SUMMARY_METRICS = ["classification_accuracy", "pooled_f1", "pointing_game", "pxap"]
# each metric, then the thesis' figure beside it where the thesis reports one
SUMMARY_COLUMNS = ["model", "tiles", "classification_accuracy", "thesis_classification_accuracy", "pooled_f1",
                   "thesis_pooled_f1", "pointing_game", "thesis_pointing_game", "pxap"]
SUMMARY_HEADERS = ["Model", "Tiles", "Score accuracy", "thesis", "F1 (pooled)", "thesis", "Pointing game", "thesis",
                   "PxAP"]


def summary_rows(evaluations) -> list[dict]:
    """One row per model (transformers: at their own fusion and discard ratio): the summary
    metrics, each followed by the thesis' figure as ``thesis_<metric>`` where it has one."""
    rows = []
    for ev in evaluations:
        thesis = thesis_summary(ev.model, ev.fusion if ev.kind == "transformer" else None)
        row = {"model": ev.label, "tiles": ev.tiles}
        for m in SUMMARY_METRICS:
            row[m] = ev.metrics.get(m, float("nan"))
            if f"thesis_{m}" in SUMMARY_COLUMNS:
                row[f"thesis_{m}"] = thesis.get(m, "")
        rows.append(row)
    return rows


def metrics_rows(evaluations) -> list[dict]:
    """Table 3.4-style rows: CNNs once, transformers once per fusion at the run's discard ratio."""
    rows = []
    for ev in evaluations:
        base = {"model": ev.label, "kind": ev.kind, "run": ev.run, "tiles": ev.tiles}
        if ev.kind == "transformer" and ev.sweep:
            for f in ev.sweep["fusions"]:
                m = _sweep_at(ev, f, ev.discard_ratio)
                own = " (model)" if f == ev.fusion else ""
                rows.append({**base, **m, "model": f"{ev.label}_f{f}{own}", "fusion": f, "discard_ratio": ev.discard_ratio})
        else:
            rows.append({**base, **ev.metrics, "fusion": ev.fusion or "", "discard_ratio": ev.discard_ratio})
    return rows


def ranking_rows(rows: list[dict]) -> list[dict]:
    """Table 3.5-style ranks inside the CNN / transformer groups; lower average is better."""
    if not rows:
        return []
    table = {r["model"]: r for r in rows}
    groups = {r["model"]: r["kind"] for r in rows}
    thesis = rank_models(table, THESIS_METRICS, groups=groups)
    every = rank_models(table, MAP_METRICS, groups=groups)
    out = []
    for r in rows:
        n = r["model"]
        out.append({"model": n, "kind": r["kind"], **{m: thesis[n][m] for m in MAP_METRICS if m in thesis[n]},
                    **{m: every[n][m] for m in MAP_METRICS[6:]},
                    "average_rank": thesis[n]["average_rank"], "average_rank_all": every[n]["average_rank"]})
    return out


def baseline_rows(evaluations) -> list[dict]:
    """Each model's own single-pass map, then its baselines on the same tiles and scores."""
    rows = []
    for ev in evaluations:
        own = "CAM (single pass)" if ev.kind == "cnn" else f"rollout f{ev.fusion} d{ev.discard_ratio} (single pass)"
        rows.append({"model": ev.label, "method": own, **ev.metrics})
        for name, m in ev.baselines.items():
            rows.append({"model": ev.label, "method": name, **m})
    return rows


def sweep_rows(evaluations) -> list[dict]:
    rows = []
    for ev in evaluations:
        if not ev.sweep:
            continue
        for f in ev.sweep["fusions"]:
            for r, m in zip(ev.sweep["discard_ratios"], ev.sweep["metrics"][f]):
                rows.append({"model": ev.label, "fusion": f, "discard_ratio": r, **m})
    return rows


def _labels(columns):
    return [METRIC_LABELS.get(c, c.replace("_", " ")) for c in columns]


# ------------------------------------------------------------------------------ figures


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def _normalized(heat: np.ndarray, size: int, valid: np.ndarray) -> np.ndarray:
    """One tile's protocol map before the score gate (the overlay shows it either way)."""
    return tile_maps(None, np.asarray(heat)[None], np.asarray(valid, bool)[None], size, score_threshold=None).ungated[0]


def pr_figure(evaluations) -> bytes | None:
    """Pixel precision-recall curves per model (the curves whose area is PxAP): gated as in
    the protocol, and ungated (every tile's map as if its score passed the gate)."""
    kinds = [k for k in ("gated", "ungated") if any(k in ev.pr_curves for ev in evaluations)]
    if not kinds:
        return None
    fig = Figure(figsize=(5.2 * len(kinds), 4.2), layout="constrained")
    key = {"gated": "pxap", "ungated": "pxap_ungated"}
    for i, kind in enumerate(kinds):
        ax = fig.add_subplot(1, len(kinds), i + 1)
        for ev in evaluations:
            c = ev.pr_curves.get(kind)
            if c is None or not len(c["recall"]):
                continue
            recall = np.concatenate([[0.0], c["recall"]])
            precision = np.concatenate([[c["precision"][0]], c["precision"]])
            ap = ev.metrics.get(key[kind], float("nan"))
            ax.plot(recall, precision, drawstyle="steps-post", lw=1.2, label=f"{ev.label} (PxAP {ap:.3f})")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("pixel recall", fontsize=8)
        ax.set_ylabel("pixel precision", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        ax.set_title("score-gated maps (protocol)" if kind == "gated" else "ungated maps", fontsize=9)
        ax.legend(fontsize=6.5, loc="upper right")
    return _png(fig)


def overlay_figure(evaluations, pixel_threshold: float = 127, score_threshold: float = 0.5) -> bytes | None:
    """Figures 3.4 / 3.5: the same defective tiles across models (GT outline in white)."""
    keys = [t.key for t in evaluations[0].overlays] if evaluations else []
    keys = [k for k in keys if all(any(t.key == k for t in ev.overlays) for ev in evaluations)]
    if not keys:
        return None
    cols = 1 + len(evaluations)
    fig = Figure(figsize=(2.2 * cols, 2.3 * len(keys) + 0.4), layout="constrained")
    for i, key in enumerate(keys):
        ref = next(t for t in evaluations[0].overlays if t.key == key)
        size = ref.mask.shape[-1]
        for j in range(cols):
            ax = fig.add_subplot(len(keys), cols, i * cols + j + 1)
            ax.imshow(ref.image)
            if j == 0:
                ax.set_title(f"{Path(key[0]).name[:18]} y{key[1]} x{key[2]}", fontsize=7)
            else:
                ev = evaluations[j - 1]
                t = next(t for t in ev.overlays if t.key == key)
                norm = _normalized(t.heatmap, size, t.valid)
                ax.imshow(norm, cmap="jet", alpha=0.45, vmin=0, vmax=1)
                if score_gate(t.score, score_threshold)[0]:
                    ax.contour(defect_mask(norm, pixel_threshold), levels=[0.5], colors="yellow", linewidths=0.8)
                if i == 0:
                    ax.set_title(ev.label.replace("@", "\n@"), fontsize=7)
                ax.text(2, size - 4, f"score {t.score:.2f}", color="white", fontsize=6,
                        bbox={"facecolor": "black", "alpha": 0.5, "pad": 1})
            if ref.mask.any():
                ax.contour(ref.mask, levels=[0.5], colors="white", linewidths=1.0)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle("Maps on the same defective tiles (white: ground truth, yellow: predicted mask)", fontsize=9)
    return _png(fig)


def downscale_pairs(evaluations) -> list[tuple]:
    """(full, downscaled) evaluation pairs: model X and X_d both present."""
    by_model = {ev.model: ev for ev in evaluations if ev.kind == "cnn"}
    return [(by_model[m], by_model[m + "_d"]) for m in sorted(by_model) if m + "_d" in by_model]


def downscale_figure(evaluations) -> bytes | None:
    """Figures 3.6 / 3.8: full vs downscaled CNN, grouped bars over the map metrics."""
    pairs = downscale_pairs(evaluations)
    if not pairs:
        return None
    fig = Figure(figsize=(7.5, 3.0 * len(pairs)))
    x = np.arange(len(MAP_METRICS))
    for i, (full, down) in enumerate(pairs):
        ax = fig.add_subplot(len(pairs), 1, i + 1)
        for k, (ev, name) in enumerate([(full, full.model), (down, down.model)]):
            vals = [np.nan_to_num(ev.metrics.get(m, np.nan)) for m in MAP_METRICS]
            bars = ax.bar(x + (k - 0.5) * 0.38, vals, 0.38, label=name)
            ax.bar_label(bars, fmt="%.2f", fontsize=6)
        ax.set_xticks(x, _labels(MAP_METRICS), rotation=30, ha="right", fontsize=7)
        ax.set_ylim(0, 1.1)
        ax.legend(fontsize=7, loc="upper left")
        ax.set_title(f"{full.model}: full vs downscaled (last stage removed)", fontsize=9)
    return _png(fig)


def sweep_figure(ev) -> bytes | None:
    """Figure 3.10: each metric over fusion (rows) x discard ratio (columns), one model."""
    if not ev.sweep:
        return None
    fusions, ratios = ev.sweep["fusions"], ev.sweep["discard_ratios"]
    fig = Figure(figsize=(3.6 * 3, 1.0 + 0.55 * len(fusions) * 3 + 1.2))
    for k, m in enumerate(MAP_METRICS):
        ax = fig.add_subplot(3, 3, k + 1)
        grid = np.array([[ev.sweep["metrics"][f][j].get(m, np.nan) for j in range(len(ratios))] for f in fusions], float)
        ax.imshow(np.nan_to_num(grid), cmap="viridis", aspect="auto")
        lo, hi = np.nanmin(grid) if np.isfinite(grid).any() else 0, np.nanmax(grid) if np.isfinite(grid).any() else 1
        for a in range(len(fusions)):
            for b in range(len(ratios)):
                bright = hi > lo and (grid[a, b] - lo) / (hi - lo) > 0.6
                ax.text(b, a, "" if np.isnan(grid[a, b]) else f"{grid[a, b]:.2f}", ha="center", va="center",
                        fontsize=5.5, color="black" if bright else "white")
        ax.set_yticks(range(len(fusions)), fusions, fontsize=7)
        ax.set_xticks(range(len(ratios)), [f"{r:g}" for r in ratios], fontsize=6)
        ax.set_title(METRIC_LABELS.get(m, m), fontsize=8)
        if k >= 6:
            ax.set_xlabel("discard ratio", fontsize=7)
    fig.suptitle(f"{ev.label}: head fusion x discard ratio (one trained model)", fontsize=9)
    fig.tight_layout()
    return _png(fig)


# ------------------------------------------------------------------------------- report


_CSS = """*{box-sizing:border-box}body{font-family:sans-serif;margin:1em auto;padding:0 1em;max-width:1240px}
table{border-collapse:collapse;font-size:12px;margin:0.5em 0}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}
td:first-child,th:first-child{text-align:left}th{background:#f2f2f2}table.summary{font-size:14px}
table.summary td:first-child{font-weight:bold}table.summary .thesis{color:#777}
.scroll{overflow-x:auto;max-width:100%}details{margin:0.6em 0;border:1px solid #ddd;border-radius:4px;padding:0.3em 0.6em}
summary{cursor:pointer;font-weight:bold;font-size:15px}img{max-width:100%;height:auto;border:1px solid #ddd}
.note{color:#555;font-size:13px;overflow-wrap:anywhere}h2{font-size:18px;margin-top:1.2em}"""


SUMMARY_NOTE = (
    "Score accuracy: share of tiles classified right (defective when the score is above the score threshold). F1 and pointing game follow the "
    "thesis protocol; PxAP is threshold-free. Transformers at their own head fusion and discard ratio. 'thesis': the "
    "study's figures on its own PCB dataset with ImageNet-pretrained models (tables 3.2 / 3.4): another dataset and "
    "budget, so compare trends, not values; empty where it reports none."
)


def _summary_html(rows: list[dict], columns: list[str]) -> str:
    """The summary table; thesis cells greyed so the measured values stand out."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in SUMMARY_HEADERS)
    body = "".join(
        "<tr>" + "".join(f"<td{' class=thesis' if c.startswith('thesis_') else ''}>{html.escape(_fmt(r.get(c, '')))}</td>"
                         for c in columns) + "</tr>" for r in rows)
    return f"<div class='scroll'><table class='summary'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"


def write_report(
    evaluations,
    out_dir,
    *,
    title: str = "kerasxai evaluation",
    context: dict | None = None,
    score_threshold: float = 0.5,
    pixel_threshold: float = 127,
) -> dict:
    """Write every table, figure and report.html for ``evaluations`` into ``out_dir``.

    The thresholds only decide the predicted-mask outline drawn in the overlay figure.

    Returns {artifact name: path}.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}

    def put(name: str, data: bytes | str) -> None:
        path = out / name
        (atomic_write_text if isinstance(data, str) else atomic_write_bytes)(path, data)
        written[name] = path

    mrows = metrics_rows(evaluations)
    rrows = ranking_rows(mrows)
    brows = baseline_rows(evaluations)
    srows = sweep_rows(evaluations)
    ungated = [f"{k}_ungated" for k in UNGATED_KEYS]
    mcols = ["model"] + TABLE_METRICS + ungated
    rcols = ["model"] + MAP_METRICS + ["average_rank", "average_rank_all"]
    bcols = ["model", "method"] + MAP_METRICS + ungated
    scols = ["model", "fusion", "discard_ratio"] + MAP_METRICS
    tables = {
        "summary": (summary_rows(evaluations), SUMMARY_COLUMNS, SUMMARY_HEADERS),
        "metrics": (mrows, mcols, ["Model"] + _labels(mcols[1:])),
        "ranking": (rrows, rcols, ["Model"] + _labels(MAP_METRICS) + ["Average rank", "Average rank (all 9)"]),
        "baselines": (brows, bcols, ["Model", "Map"] + _labels(bcols[2:])),
    }
    for name, (rows, cols, heads) in tables.items():
        put(f"{name}.csv", _csv(rows, cols, name == "ranking"))
        put(f"{name}.md", _markdown(rows, cols, heads, name == "ranking"))
    if srows:
        put("sweep.csv", _csv(srows, scols))
    doc = {"title": title, "context": context or {}, "models": [ev.to_dict() for ev in evaluations],
           "summary": tables["summary"][0], "metrics": mrows, "ranking": rrows, "baselines": brows}
    put("results.json", json.dumps(_json_safe(doc), indent=2) + "\n")

    pr_png = pr_figure(evaluations)
    if pr_png:
        put("figures/pr_curves.png", pr_png)
    figures: list[tuple[str, str, bytes]] = []
    png = overlay_figure(evaluations, pixel_threshold, score_threshold)
    if png:
        figures.append(("figures/overlays.png", "Maps on the same defective test tiles (cf. thesis figures 3.4 / 3.5)", png))
    png = downscale_figure(evaluations)
    if png:
        figures.append(("figures/full_vs_downscaled.png", "Full vs downscaled CNNs (cf. figures 3.6 / 3.8)", png))
    for ev in evaluations:
        png = sweep_figure(ev)
        if png:
            safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in ev.label)
            figures.append((f"figures/sweep_{safe}.png", f"{ev.label}: fusion x discard ratio (cf. figure 3.10)", png))
    for name, _, data in figures:
        put(name, data)

    notes = (
        "Pooled metrics use one confusion matrix over all valid pixels of all tiles (as in the thesis); "
        "'per tile' columns average each defective tile's value. A tile's map counts only when its score is "
        "above the score threshold (otherwise its predicted mask is empty); predicted defect pixels are where "
        "the upsampled, min-max normalized map is >= the pixel threshold on 0..255. Pointing game: defective "
        "tiles whose map peak lies in the mask (ties share the hit). PxAP / pixel AUROC: threshold-free, "
        "histogram with 0.25-wide bins on 0..255. Relevance mass: share of the normalized map inside the mask. "
        "'Ungated' columns score every tile's map as if its score passed the gate: the map apart from the classifier. "
        "Ranks are computed within the CNN and transformer groups, as in thesis tables 3.5 / 3.7."
    )

    def img(caption: str, data: bytes) -> str:
        b64 = base64.b64encode(data).decode("ascii")
        return f"<img alt='{html.escape(caption)}' src='data:image/png;base64,{b64}'>"

    parts = [f"<!doctype html><html><head><meta charset='utf-8'>"
             "<meta name='viewport' content='width=device-width, initial-scale=1'>"
             f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"]
    if context:
        parts.append("<p class='note'>" + "<br>".join(f"<b>{html.escape(str(k))}</b>: {html.escape(str(v))}"
                                                       for k, v in context.items()) + "</p>")
    parts.append("<h2>Summary</h2>" + _summary_html(*tables["summary"][:2]) + f"<p class='note'>{html.escape(SUMMARY_NOTE)}</p>")
    if pr_png:
        caption = "Pixel precision-recall curves (PxAP is the area under each)"
        parts.append(f"<h2>{caption}</h2>" + img(caption, pr_png))
    for name, heading in [("metrics", "All map metrics per model (cf. tables 3.4 / 3.6)"),
                          ("ranking", "Ranking by average rank (cf. tables 3.5 / 3.7)"),
                          ("baselines", "Single-pass maps vs post-hoc and trivial baselines")]:
        rows, cols, heads = tables[name]
        parts.append(f"<details><summary>{heading}</summary><div class='scroll'>"
                     + _html_table(rows, cols, heads, name == "ranking") + "</div></details>")
    parts.append(f"<details><summary>How the metrics are computed</summary><p class='note'>{html.escape(notes)}</p></details>")
    for _, caption, data in figures:
        parts.append(f"<h2>{html.escape(caption)}</h2>" + img(caption, data))
    parts.append("</body></html>\n")
    put("report.html", "".join(parts))
    return {k: v for k, v in written.items()}
