"""``python -m kerasxai.demo [--out demo_out]``: the whole job on the bundled sample, end to end.

Runs, one after the other, exactly the commands a user would type (each is printed first):

1. ``kerasxai.prepare`` tiles the bundled DeepPCB sample (``configs/demo.yaml``);
2. ``kerasxai.train`` trains a small CAM model for a few epochs from random initialisation:
   the mechanics of training (run folder, checkpoints, resume), too short to locate anything;
3. ``kerasxai.evaluate`` scores the shipped DeepPCB locator's heatmaps against the defect masks
   of the sample (boards it never saw in training) and writes the report;
4. ``kerasxai.predict`` localizes defects on all 16 full 640x640 sample boards with it.

The last lines give the shipped model's figures on the sample: boards flagged, false alarms on
the defect-free templates, annotated defect boxes hit by a predicted box, and the pixel metrics.
A few minutes on 2 CPU cores. Extra ``key=value`` arguments override the training config
(e.g. ``train.epochs=1``). The demo is a sequence of CLI calls on purpose: it shows the
commands, and each step starts from what the previous one wrote to disk.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

from kerasxai.cli.errors import UsageError, guard
from kerasxai.sample import SHIPPED, sample_board_figures, sample_boards

# One line for --help here and in the `kerasxai` command list.
DESCRIPTION = "The whole job on the bundled sample, end to end: prepare, train, evaluate, predict."

REPO_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"


def _run(cmd: list[str], title: str) -> None:
    print(f"\n# {title}\n$ {shlex.join(cmd)}", flush=True)
    rc = subprocess.call(cmd)
    if rc != 0:
        raise SystemExit(f"demo: step failed with exit code {rc}: {shlex.join(cmd)}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m kerasxai.demo", description=DESCRIPTION)
    p.add_argument("--out", default="demo_out", help="folder for the run, report and predictions")
    p.add_argument("--config", default=str(REPO_CONFIG), help="demo training config (default: configs/demo.yaml)")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    args = p.parse_args(argv)
    return guard(lambda: demo(args), prefix="demo")


def demo(args: argparse.Namespace) -> int:
    """The four commands one after the other, then the shipped model's figures on the sample."""
    if not Path(args.config).is_file():
        raise UsageError(f"config '{args.config}' not found: run from a checkout of kerasxai (pip install -e .) "
                         "or pass --config")
    out = Path(args.out).resolve()
    runs_dir = out / "runs"
    py = sys.executable
    t0 = time.time()
    cache = f"data.cache_dir={out / 'data_cache'}"
    common = ["--config", args.config, f"train.runs_dir={runs_dir}", cache, *args.overrides]
    before = set(runs_dir.glob("*")) if runs_dir.exists() else set()
    _run([py, "-m", "kerasxai.prepare", *common], "tile the bundled DeepPCB sample (8 pairs, 144 tiles)")
    _run([py, "-m", "kerasxai.train", *common],
         "the mechanics of training: a short run from random init (too short to locate; see README)")
    new = sorted(set(runs_dir.glob("*")) - before)
    if not new:
        print(f"demo: training wrote no run folder under {runs_dir}", file=sys.stderr)
        return 1
    report, preds = out / "report", out / "preds"
    _run([py, "-m", "kerasxai.evaluate", "--runs", SHIPPED, "--out", str(report), "data.root=sample:deeppcb", cache],
         f"the shipped locator '{SHIPPED}' scored on the sample, boards it never saw in training")
    boards = [str(image) for image, _ in sample_boards()]
    _run([py, "-m", "kerasxai.predict", "--run", SHIPPED, *boards, "--out", str(preds)],
         "the shipped locator on the 16 full 640x640 sample boards (8 with defects, 8 defect-free templates)")
    figures = sample_board_figures(preds)
    m = json.loads((report / "results.json").read_text())["models"][0]["metrics"]
    print(f"\ndemo finished in {time.time() - t0:.0f} s")
    print(f"  training run : {new[-1]}")
    print(f"  report       : {report / 'report.html'}  (figures in {report / 'figures'})")
    print(f"  predictions  : {preds}  (overlay PNG, mask PNG and JSON per board, summary.csv)")
    print(f"shipped model '{SHIPPED}' on the bundled sample:")
    print(f"  boards: {figures.summary()}")
    print(f"  tiles : accuracy {m['classification_accuracy']:.3f}, pixel F1 {m['pooled_f1']:.3f}, "
          f"pointing game {m['pointing_game']:.3f}, PxAP {m['pxap']:.3f}")
    return 0

