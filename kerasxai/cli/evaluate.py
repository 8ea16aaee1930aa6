"""``python -m kerasxai.evaluate --runs RUN|NAME ... [--split test] [--out DIR] [--data FILE] [key=value ...]``

Evaluates each run's best model (or a shipped model, by name) on its prepared dataset
(``prepare_dataset`` reuses the cache) and writes the report folder (tables, figures,
report.html; see kerasxai.report); the work is :mod:`kerasxai.run_evaluation`. ``--data FILE``
(the ``data:`` section of a config) and ``data.*`` overrides score the models on other data
instead, the whole dataset as the test split: another annotated folder, another list file (``data.options.list_file=test.txt``) or
another dataset. Exit status 2 with one line on bad input (missing run, bad key, empty split,
tiles of another size than the model's).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from kerasxai.choices import Split
from kerasxai.cli.errors import UsageError, guard
from kerasxai.cli.options import CHECKPOINTS

# One line for --help here and in the `kerasxai` command list.
DESCRIPTION = "Score runs or shipped models on a prepared dataset and write the report folder."

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m kerasxai.evaluate", description=DESCRIPTION)
    p.add_argument("--runs", nargs="+", required=True, metavar="RUN_DIR",
                   help="run folders made by kerasxai.train, or names of shipped models")
    p.add_argument("--data", default=None, metavar="FILE",
                   help="score on the data: section of this config instead (the whole dataset as test split)")
    p.add_argument("--split", choices=[s.value for s in Split], default=None, help="tiles to evaluate (default: eval.split)")
    p.add_argument("--out", default=None, help="report folder (default: reports/eval-<time>)")
    p.add_argument("--which", choices=CHECKPOINTS, default="best", help="checkpoint of each run")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="eval.* overrides (e.g. eval.max_tiles=500); data.* overrides score on other data")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # `--runs a b key=value`: argparse hands trailing overrides to --runs; take them back.
    args.overrides = [r for r in args.runs if "=" in r] + list(args.overrides)
    args.runs = [r for r in args.runs if "=" not in r]
    return guard(lambda: evaluate(args))


def evaluate(args: argparse.Namespace) -> int:
    """Score the runs, write the report folder and print each model's headline metrics."""
    from kerasxai.run_evaluation import choose_data, evaluate_runs

    if not args.runs:
        raise UsageError("--runs needs at least one run folder")
    choice = choose_data(args.overrides, args.data, args.split)
    out = Path(args.out or f"reports/eval-{time.strftime('%Y%m%d-%H%M%S')}")
    result = evaluate_runs(args.runs, choice, which=args.which, progress=not args.no_progress)
    written = result.write_report(out)
    print(f"report: {out / 'report.html'} ({len(written)} files)")
    print(f"  data: {result.data}, {result.eval.split} split")
    for ev in result.evaluations:
        m = ev.metrics
        print(f"  {ev.label}: F1 {m['pooled_f1']:.4f}  pointing {m['pointing_game']:.4f}  PxAP {m['pxap']:.4f}  "
              f"acc {m['classification_accuracy']:.4f}  ({ev.tiles} tiles, {ev.seconds:.0f} s)")
    return 0
