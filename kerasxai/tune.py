"""``python -m kerasxai.tune --config configs/pcb_mobilenet.yaml [--trials 10] [key=value ...]``

Bayesian search of learning rate and batch size (KerasTuner); every trial is a full training
run. Writes trials.csv / trials.md, parallel_coordinates.png and best_config.yaml into
``<tune.dir>/<name>/``. Run it again on the same config to continue a stopped search; Ctrl-C
stops the running trial at its next batch end and exits 130.
"""

from __future__ import annotations

import argparse
import shlex
import sys

# One line for --help here and in the `kerasxai` command list.
DESCRIPTION = "Bayesian search of learning rate and batch size; every trial is a full training run."


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kerasxai.tune", description=DESCRIPTION)
    parser.add_argument("--config", required=True, help="YAML config file (see configs/)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. tune.epochs=5")
    parser.add_argument("--trials", type=int, help="number of trials (tune.trials)")
    parser.add_argument("--quiet", action="store_true", help="one line per epoch instead of a progress bar")
    args = parser.parse_args(argv)

    from kerasxai.config import ConfigError, load_config
    from kerasxai.runs import RunError

    from kerasxai.data.sources import DataError
    from kerasxai.models.weights import WeightsError
    from kerasxai import tuning

    from kerasxai.training import SIGINT_STOP

    overrides = list(args.overrides) + ([f"tune.trials={args.trials}"] if args.trials is not None else [])
    try:
        cfg = load_config(args.config, overrides)
        with SIGINT_STOP:  # Ctrl-C stops the trial in training at its next batch end
            result = tuning.search(cfg, verbose=2 if args.quiet else 1)
    except (ConfigError, RunError, DataError, WeightsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        again = " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
        print(f"\ninterrupted: run the same command again to continue the search: python -m kerasxai.tune {again}",
              file=sys.stderr)
        return 130
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


if __name__ == "__main__":
    from kerasxai.cli import run

    sys.exit(run(main))
