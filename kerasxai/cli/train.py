"""``python -m kerasxai.train --config configs/pcb_mobilenet.yaml [key=value ...] [--resume runs/x]``

Trains one model into a new run folder ``runs/<name>-<timestamp>/`` (see kerasxai.runs), or
continues an interrupted run in place with ``--resume`` (then ``--config`` may be omitted:
the run's own config.yaml is used; ``key=value`` overrides of train.* and eval.* keys still
apply, e.g. train.epochs=30). Ctrl-C stops at the next batch end, keeps the completed epochs,
prints the ``--resume`` command and exits 130; exit 2 on bad input (or a run folder in use).
"""

from __future__ import annotations

import argparse
import json

from kerasxai.cli.errors import guard

# One line for --help here and in the `kerasxai` command list.
DESCRIPTION = "Train one model into a new run folder, or resume an interrupted run."


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kerasxai.train", description=DESCRIPTION)
    parser.add_argument("--config", help="YAML config file (see configs/); not needed with --resume")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.epochs=2")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue this run folder from its last completed epoch")
    parser.add_argument("--quiet", action="store_true", help="one line per epoch instead of a progress bar")
    args = parser.parse_args(argv)
    if not args.config and not args.resume:
        parser.error("--config is required (or --resume RUN_DIR)")

    from kerasxai import training
    from kerasxai.config import load_config

    verbose = 2 if args.quiet else 1

    def work() -> int:
        if args.resume:
            if args.config:
                print(f"--resume: using {args.resume}/config.yaml; --config {args.config} is ignored")
            run_dir, summary = training.resume(args.resume, args.overrides, verbose=verbose)
        else:
            run_dir, summary = training.train(load_config(args.config, args.overrides), verbose=verbose)
        report(run_dir, summary)
        return 0

    def interrupted(exc: KeyboardInterrupt) -> str:
        if isinstance(exc, training.TrainingInterrupted):
            return exc.hint()
        return "interrupted before training started: no run folder was changed"

    return guard(work, interrupted=interrupted)


def report(run_dir, summary: dict) -> None:
    """The run's figures as JSON and where the run folder is."""
    keys = ("val_loss", "val_accuracy", "test_loss", "test_accuracy", "epochs", "first_epoch_seconds",
            "seconds_per_epoch", "cpu_seconds_per_epoch", "wall_time_s")
    print(json.dumps({k: summary.get(k) for k in keys}, indent=2))
    print(f"run folder: {run_dir}  (best.keras by {summary['monitor']})")

