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
import sys

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

    from kerasxai.config import ConfigError, load_config
    from kerasxai.runs import RunError

    from kerasxai.data.sources import DataError
    from kerasxai.models.weights import WeightsError
    from kerasxai import training

    verbose = 2 if args.quiet else 1
    try:
        if args.resume:
            if args.config:
                print(f"--resume: using {args.resume}/config.yaml; --config {args.config} is ignored")
            run_dir, summary = training.resume(args.resume, args.overrides, verbose=verbose)
        else:
            cfg = load_config(args.config, args.overrides)
            run_dir, summary = training.train(cfg, verbose=verbose)
    except (ConfigError, RunError, DataError, WeightsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except training.TrainingInterrupted as exc:
        print(f"\n{exc.hint()}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:  # before a run folder existed
        print("\ninterrupted before training started: no run folder was changed", file=sys.stderr)
        return 130
    keys = ("val_loss", "val_accuracy", "test_loss", "test_accuracy", "epochs", "first_epoch_seconds",
            "seconds_per_epoch", "cpu_seconds_per_epoch", "wall_time_s")
    print(json.dumps({k: summary.get(k) for k in keys}, indent=2))
    print(f"run folder: {run_dir}  (best.keras by {summary['monitor']})")
    return 0


if __name__ == "__main__":
    from kerasxai.cli import run

    sys.exit(run(main))
