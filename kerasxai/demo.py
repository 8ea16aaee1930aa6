"""``python -m kerasxai.demo [--out demo_out]``: the whole job on the bundled sample, end to end.

Runs, one after the other, exactly the commands a user would type (each is printed first):

1. ``kerasxai.prepare`` tiles the bundled DeepPCB sample (``configs/demo.yaml``);
2. ``kerasxai.train`` trains a small CAM model for a few epochs (random initialisation);
3. ``kerasxai.evaluate`` scores its heatmaps against the defect masks and writes the report
   (tables, overlay figures, report.html);
4. ``kerasxai.predict`` localizes defects on two full 640x640 sample boards.

A few minutes on 2 CPU cores. Extra ``key=value`` arguments override the demo config
(e.g. ``train.epochs=1``). The demo is a sequence of CLI calls on purpose: it shows the
commands, and each step starts from what the previous one wrote to disk.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
SAMPLE = Path(__file__).resolve().parent / "sample_data" / "deeppcb" / "PCBData"


def _run(cmd: list[str]) -> None:
    print(f"\n$ {shlex.join(cmd)}", flush=True)
    rc = subprocess.call(cmd)
    if rc != 0:
        raise SystemExit(f"demo: step failed with exit code {rc}: {shlex.join(cmd)}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m kerasxai.demo", description=__doc__.splitlines()[0])
    p.add_argument("--out", default="demo_out", help="folder for the run, report and predictions")
    p.add_argument("--config", default=str(REPO_CONFIG), help="demo config (default: configs/demo.yaml)")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    args = p.parse_args(argv)
    if not Path(args.config).is_file():
        print(f"demo: config '{args.config}' not found: run from a checkout of kerasxai (pip install -e .) "
              "or pass --config", file=sys.stderr)
        return 2
    out = Path(args.out).resolve()
    runs_dir = out / "runs"
    py = sys.executable
    t0 = time.time()
    common = ["--config", args.config, f"train.runs_dir={runs_dir}", f"data.cache_dir={out / 'data_cache'}",
              *args.overrides]
    before = set(runs_dir.glob("*")) if runs_dir.exists() else set()
    _run([py, "-m", "kerasxai.prepare", *common])
    _run([py, "-m", "kerasxai.train", *common])
    new = sorted(set(runs_dir.glob("*")) - before)
    if not new:
        print(f"demo: training wrote no run folder under {runs_dir}", file=sys.stderr)
        return 1
    run = new[-1]
    report = out / "report"
    _run([py, "-m", "kerasxai.evaluate", "--runs", str(run), "--out", str(report)])
    boards = sorted(SAMPLE.glob("*/*/*_test.jpg"))[:2]
    _run([py, "-m", "kerasxai.predict", "--run", str(run), *map(str, boards), "--out", str(out / "preds")])
    print(f"\ndemo finished in {time.time() - t0:.0f} s")
    print(f"  run folder : {run}")
    print(f"  report     : {report / 'report.html'}  (figures in {report / 'figures'})")
    print(f"  predictions: {out / 'preds'}  (overlay PNG, mask PNG and JSON per board, summary.csv)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
