"""Time-to-accuracy curves: validation AUC and accuracy against training wall time, recipes side by side.

    # train each recipe (a name and its key=value overrides), then plot all of them
    python tools/time_to_accuracy.py --config configs/deeppcb_locator.yaml --out tta \\
        --recipe "recipe=" --recipe "baseline=train.schedule=plateau train.augment=null train.learning_rate=0.001"
    # or plot run folders that exist already (NAME=RUN_DIR)
    python tools/time_to_accuracy.py --out tta --run recipe=runs/a --run baseline=runs/b

Recipes are trained one after the other through ``python -m kerasxai.train`` (so both cores go to
one run at a time; a stopped call resumes its unfinished runs when started again with the same
arguments). Every epoch's wall time comes from the run's ``history.csv`` (``epoch_seconds``), the
first epoch's compilation included. Writes ``tta.csv`` (one row per run and epoch) and ``tta.png``.
"""

from __future__ import annotations

import argparse
import csv
import json
import shlex
import subprocess
import sys
from pathlib import Path

import _checkout  # noqa: F401

FIELDS = ["recipe", "epoch", "minutes", "tiles", "val_auc", "val_accuracy", "learning_rate", "run"]


def curve(label: str, run_dir: Path) -> list[dict]:
    """One row per completed epoch of `run_dir`: cumulative minutes and tiles, validation metrics."""
    from kerasxai.runs import HISTORY, run_config

    cfg = run_config(run_dir)
    path = run_dir / HISTORY
    if not path.is_file():
        raise SystemExit(f"time_to_accuracy: '{path}' not found: the run has no completed epoch")
    with open(path, newline="") as f:
        history = list(csv.DictReader(f))
    summary = run_dir / "summary.json"
    steps = json.loads(summary.read_text())["steps_per_epoch"] if summary.is_file() else cfg.train.steps_per_epoch
    rows, seconds = [], 0.0

    def pick(row, *keys):
        return next((float(row[k]) for k in keys if row.get(k) not in (None, "")), None)

    for row in history:
        seconds += float(row["epoch_seconds"])
        epoch = int(row["epoch"]) + 1
        rows.append({
            "recipe": label, "epoch": epoch, "minutes": round(seconds / 60, 3),
            "tiles": epoch * int(steps or 0) * cfg.train.batch_size,
            "val_auc": pick(row, "val_score_auc", "val_auc"),
            "val_accuracy": pick(row, "val_score_accuracy", "val_accuracy"),
            "learning_rate": pick(row, "learning_rate"), "run": str(run_dir),
        })
    return rows


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for label in dict.fromkeys(r["recipe"] for r in rows):
        mine = [r for r in rows if r["recipe"] == label]
        minutes = [r["minutes"] for r in mine]
        for ax, key in zip(axes, ("val_auc", "val_accuracy")):
            ax.plot(minutes, [r[key] for r in mine], marker="o", ms=3, label=label)
    for ax, name in zip(axes, ("validation AUC", "validation accuracy")):
        ax.set_xlabel("training wall time (minutes)")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def train_recipe(config: str, label: str, overrides: list[str], runs_dir: Path) -> Path:
    """Train (or resume) the recipe's run under ``runs_dir/<label>``; returns its run folder."""
    from kerasxai.runs import read_state, run_config

    existing = sorted((runs_dir / label).glob("*/config.yaml"))
    cmd = [sys.executable, "-m", "kerasxai.train", "--config", config, *overrides,
           f"train.runs_dir={runs_dir / label}", "train.max_test_tiles=0"]
    if existing:
        run = existing[-1].parent
        state = read_state(run) or {}
        if int(state.get("next_epoch", 0)) >= run_config(run).train.epochs and (run / "summary.json").is_file():
            return run
        cmd = [sys.executable, "-m", "kerasxai.train", "--resume", str(run)]
    print(f"$ {shlex.join(cmd)}", flush=True)
    if subprocess.call(cmd) != 0:
        raise SystemExit(f"time_to_accuracy: training of recipe '{label}' failed")
    return sorted((runs_dir / label).glob("*/config.yaml"))[-1].parent


def _named(items: list[str], what: str) -> list[tuple[str, str]]:
    out = []
    for item in items:
        name, sep, rest = item.partition("=")
        if not sep or not name:
            raise SystemExit(f"time_to_accuracy: {what} '{item}' is not of the form NAME=...")
        out.append((name, rest))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="folder for tta.csv and tta.png (and the recipes' runs)")
    p.add_argument("--config", help="training config the recipes override")
    p.add_argument("--recipe", action="append", default=[], metavar="NAME=OVERRIDES",
                   help="a recipe: its name and space-separated key=value overrides (repeatable)")
    p.add_argument("--run", action="append", default=[], metavar="NAME=RUN_DIR", help="an existing run to plot")
    p.add_argument("--title", default="time to accuracy (validation split)")
    args = p.parse_args(argv)
    if args.recipe and not args.config:
        p.error("--recipe needs --config")
    if not args.recipe and not args.run:
        p.error("give at least one --recipe or --run")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = [(name, Path(path)) for name, path in _named(args.run, "--run")]
    for name, overrides in _named(args.recipe, "--recipe"):
        runs.append((name, train_recipe(args.config, name, shlex.split(overrides), out / "runs")))
    rows = [row for name, run in runs for row in curve(name, run)]
    from kerasxai.runtime import atomic_write_text
    from kerasxai.tables import csv_table

    atomic_write_text(out / "tta.csv", csv_table(FIELDS, [[r[k] for k in FIELDS] for r in rows]))
    plot(rows, out / "tta.png", args.title)
    for name, run in runs:
        last = [r for r in rows if r["recipe"] == name][-1]
        print(f"{name}: {last['epoch']} epochs, {last['minutes']:.1f} min, val AUC {last['val_auc']:.4f}, "
              f"val accuracy {last['val_accuracy']:.4f} ({run})")
    print(f"wrote {out / 'tta.csv'} and {out / 'tta.png'}")
    return 0


if __name__ == "__main__":
    from kerasxai import cli

    sys.exit(cli.run(main))
