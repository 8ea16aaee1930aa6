"""``python -m kerasxai.tune --config configs/pcb_mobilenet.yaml [--trials 10] [key=value ...]``

Bayesian search of learning rate and batch size (KerasTuner); every trial is a full training
run. Writes trials.csv / trials.md, parallel_coordinates.png and best_config.yaml into
``<tune.dir>/<name>/``. Run it again on the same config to continue a stopped search: finished
trials are kept and an interrupted trial continues its run folder from its last completed
epoch. Ctrl-C stops the running trial at its next batch end and exits 130.

``--workers N`` runs the search as a KerasTuner chief and N workers on this machine, one
process each (:mod:`kerasxai.tuning_cluster`); the chief writes the same reports.
"""

from __future__ import annotations

import argparse
import shlex
import sys

from kerasxai.cli.errors import UsageError, guard

# One line for --help here and in the `kerasxai` command list.
DESCRIPTION = "Bayesian search of learning rate and batch size; every trial is a full training run."


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kerasxai.tune", description=DESCRIPTION)
    parser.add_argument("--config", required=True, help="YAML config file (see configs/)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. tune.epochs=5")
    parser.add_argument("--trials", type=int, help="number of trials (tune.trials)")
    parser.add_argument("--quiet", action="store_true", help="one line per epoch instead of a progress bar")
    parser.add_argument("--workers", type=int, metavar="N",
                        help="run a KerasTuner chief and N worker processes on this machine")
    parser.add_argument("--port", type=int, help="with --workers: the chief's oracle port (default: a free one)")
    parser.add_argument("--timeout", type=float, metavar="SECONDS",
                        help="with --workers: stop every process after this many seconds")
    args = parser.parse_args(argv)

    overrides = list(args.overrides) + ([f"tune.trials={args.trials}"] if args.trials is not None else [])
    again = " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))

    def work() -> int:
        if args.workers is not None:
            if args.workers < 1:
                raise UsageError(f"--workers must be >= 1, got {args.workers}")
            from kerasxai.tuning_cluster import launch

            return launch(args.config, overrides, args.workers, port=args.port, timeout=args.timeout)
        if args.port is not None or args.timeout is not None:
            raise UsageError("--port and --timeout only apply with --workers N")
        return search(args, overrides)

    return guard(work, interrupted="interrupted: run the same command again to continue the search: "
                                   f"python -m kerasxai.tune {again}")


def search(args: argparse.Namespace, overrides: list[str]) -> int:
    """One search process (alone, or the chief / a worker of a cluster); prints its results."""
    from kerasxai import tuning
    from kerasxai.config import load_config
    from kerasxai.training import SIGINT_STOP

    cfg = load_config(args.config, overrides)
    with SIGINT_STOP:  # Ctrl-C stops the trial in training at its next batch end
        result = tuning.search(cfg, verbose=2 if args.quiet else 1)
    if result is None:  # a distributed worker: the chief writes the reports
        print("worker done")
        return 0
    folder, best = result["dir"], result["best"]
    print((folder / "trials.md").read_text())
    if best is None:
        print("no trial completed: see the messages above", file=sys.stderr)
        return 1
    print(f"best trial {best['trial']}: learning_rate={best['learning_rate']:.3g} batch_size={best['batch_size']}")
    print(f"written: {folder}/trials.csv, trials.md, parallel_coordinates.png, best_config.yaml")
    return 0

