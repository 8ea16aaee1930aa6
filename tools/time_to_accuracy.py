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
import shlex
import subprocess
import sys
from pathlib import Path

import _checkout  # noqa: F401

FIELDS = ["recipe", "epoch", "minutes", "tiles", "val_auc", "val_accuracy", "learning_rate", "run"]  # tta.csv


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
    from kerasxai.curves import plot_curves, run_curve
    from kerasxai.runs import RunError
    from kerasxai.runtime import atomic_write_text
    from kerasxai.tables import csv_table

    try:
        rows = [row for name, run in runs for row in run_curve(name, run)]
    except RunError as exc:
        raise SystemExit(f"time_to_accuracy: {exc}")
    atomic_write_text(out / "tta.csv", csv_table(FIELDS, [[r[k] for k in FIELDS] for r in rows]))
    plot_curves(rows, out / "tta.png", args.title)
    for name, run in runs:
        last = [r for r in rows if r["recipe"] == name][-1]
        print(f"{name}: {last['epoch']} epochs, {last['minutes']:.1f} min, val AUC {last['val_auc']:.4f}, "
              f"val accuracy {last['val_accuracy']:.4f} ({run})")
    print(f"wrote {out / 'tta.csv'} and {out / 'tta.png'}")
    return 0


if __name__ == "__main__":
    from kerasxai import cli

    sys.exit(cli.run(main))
