"""Learning curves of training runs: per-epoch validation metrics read from a run's history.csv,
and the figure that sets several runs side by side (against wall time or against epochs)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from kerasxai.runs import HISTORY, SUMMARY, RunError, run_config

METRICS = {"val_auc": "validation AUC", "val_accuracy": "validation accuracy"}
AXES = {"minutes": "training wall time (minutes)", "epoch": "epoch"}
# history.csv names a metric after the output it scores ("val_score_auc"); older runs without
# the prefix
_COLUMNS = {"val_auc": ("val_score_auc", "val_auc"), "val_accuracy": ("val_score_accuracy", "val_accuracy")}


def run_curve(label: str, run_dir: str | Path) -> list[dict]:
    """One row per completed epoch of `run_dir`: the epoch (from 1), cumulative minutes and
    tiles, the validation metrics and the learning rate. A run without a completed epoch is an
    error that names it."""
    run_dir = Path(run_dir)
    path = run_dir / HISTORY
    if not path.is_file():
        raise RunError(f"'{path}' not found: the run has no completed epoch")
    cfg = run_config(run_dir)
    with open(path, newline="") as f:
        history = list(csv.DictReader(f))
    summary = run_dir / SUMMARY
    steps = json.loads(summary.read_text())["steps_per_epoch"] if summary.is_file() else cfg.train.steps_per_epoch

    def pick(row, keys):
        return next((float(row[k]) for k in keys if row.get(k) not in (None, "")), None)

    rows, seconds = [], 0.0
    for row in history:
        seconds += float(row["epoch_seconds"])
        epoch = int(row["epoch"]) + 1
        rows.append({"recipe": label, "epoch": epoch, "minutes": round(seconds / 60, 3),
                     "tiles": epoch * int(steps or 0) * cfg.train.batch_size,
                     **{k: pick(row, cols) for k, cols in _COLUMNS.items()},
                     "learning_rate": pick(row, ("learning_rate",)), "run": str(run_dir)})
    return rows


def plot_curves(rows: list[dict], path: str | Path, title: str, x: str = "minutes",
                faint: frozenset[str] = frozenset()) -> None:
    """Validation AUC and accuracy against `x` ("minutes" or "epoch"), one line per label
    (`rows` as `run_curve` gives them, labels in order of first appearance). Labels in `faint`
    are drawn thin and dashed in the colour of the label before them (e.g. a search's other
    trials beside its best)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    if x not in AXES:
        raise ValueError(f"x must be one of {sorted(AXES)}, not {x!r}")
    fig = Figure(figsize=(11, 4.2))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    colour = None
    for label in dict.fromkeys(r["recipe"] for r in rows):
        mine = [r for r in rows if r["recipe"] == label]
        thin = label in faint
        for ax, key in zip(axes, METRICS):
            points = [(r[x], r[key]) for r in mine if r[key] is not None]
            if not points:
                continue
            style = dict(ls="--", lw=0.9, alpha=0.6, color=colour) if thin and colour else dict(marker="o", ms=3)
            line, = ax.plot(*zip(*points), label=None if thin else label, **style)
            if not thin:
                colour = line.get_color()
    for ax, name in zip(axes, METRICS.values()):
        ax.set_xlabel(AXES[x])
        if x == "epoch":
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize="small")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
