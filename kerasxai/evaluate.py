"""``python -m kerasxai.evaluate --runs RUN|NAME ... [--split test] [--out DIR] [--data FILE] [key=value ...]``

Evaluates each run's best model (or a shipped model, by name) on its prepared dataset
(``prepare_dataset`` reuses the cache) and writes the report folder (tables, figures,
report.html; see kerasxai.report). ``--data FILE`` (the ``data:`` section of a config) and
``data.*`` overrides score the models on other data instead, the whole dataset as the test
split: another annotated folder, another list file (``data.options.list_file=test.txt``) or
another dataset. Exit status 2 with one line on bad input (missing run, bad key, empty split,
tiles of another size than the model's).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

# One line for --help here and in the `kerasxai` command list.
DESCRIPTION = "Score runs or shipped models on a prepared dataset and write the report folder."

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m kerasxai.evaluate", description=DESCRIPTION)
    p.add_argument("--runs", nargs="+", required=True, metavar="RUN_DIR",
                   help="run folders made by kerasxai.train, or names of shipped models")
    p.add_argument("--data", default=None, metavar="FILE",
                   help="score on the data: section of this config instead (the whole dataset as test split)")
    p.add_argument("--split", choices=["train", "val", "test"], default=None, help="tiles to evaluate (default: eval.split)")
    p.add_argument("--out", default=None, help="report folder (default: reports/eval-<time>)")
    p.add_argument("--which", choices=["best", "last"], default="best", help="checkpoint of each run")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="eval.* overrides (e.g. eval.max_tiles=500); data.* overrides score on other data")
    return p


def _labels(cfgs, runs) -> list[str]:
    """Row names: the model name, plus the run folder when two runs share a model."""
    names = [c.model.name for c in cfgs]
    return [n if names.count(n) == 1 else f"{n}@{Path(r).name}" for n, r in zip(names, runs)]


def data_description(data) -> str:
    """The scored data in words: reader, folder and reader options."""
    opts = ", ".join(f"{k}={v}" for k, v in sorted((data.options or {}).items()))
    return f"{data.reader} '{data.root}'" + (f" ({opts})" if opts else "")


def check_tiles_fit(model, cfg) -> None:
    """The data must be tiled at the model's input size, with its channels."""
    from kerasxai.config import ConfigError

    _, h, w, c = model.input_shape
    if (h, w) != (cfg.data.tile.size, cfg.data.tile.size):
        raise ConfigError(f"key 'data.tile.size': the model takes {h}x{w} px tiles, the data is tiled at "
                          f"{cfg.data.tile.size} px: set data.tile.size={h}")
    if c != 3:
        raise ConfigError(f"the model takes {c}-channel tiles; kerasxai's readers give RGB (gray images "
                          "replicated): use a model trained on 3-channel tiles")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # `--runs a b key=value`: argparse hands trailing overrides to --runs; take them back.
    args.overrides = [r for r in args.runs if "=" in r] + list(args.overrides)
    args.runs = [r for r in args.runs if "=" not in r]
    if not args.runs:
        print("error: --runs needs at least one run folder", file=sys.stderr)
        return 2
    bad = [o for o in args.overrides if not o.startswith(("eval.", "data."))]
    if bad:
        print(f"error: override '{bad[0]}' is not an eval.* or data.* key: only these can change at "
              "evaluation time", file=sys.stderr)
        return 2
    data_overrides = [o for o in args.overrides if o.startswith("data.")]
    other_data = args.data is not None or bool(data_overrides)
    if other_data and args.split not in (None, "test"):
        print("error: --split: other data (--data or data.* overrides) is scored as its test split", file=sys.stderr)
        return 2
    overrides = [o for o in args.overrides if o.startswith("eval.")]
    overrides += [f"eval.split={args.split}"] if args.split else []
    overrides += ["eval.split=test"] if other_data else []

    from kerasxai.config import ConfigError, with_data
    from kerasxai.data import DataError
    from kerasxai.runs import RunError, run_config

    try:
        cfgs = [run_config(r, overrides) for r in args.runs]
        if other_data:
            cfgs = [with_data(c, args.data, data_overrides) for c in cfgs]
    except (RunError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out or f"reports/eval-{time.strftime('%Y%m%d-%H%M%S')}")

    from kerasxai.data.pipeline import count_tiles, eval_batches, load_split, prepare_dataset, read_manifest
    from kerasxai.evaluation import evaluate_model, select_overlay_tiles
    from kerasxai.report import write_report
    from kerasxai.runs import load_run

    evaluations = []
    overlay_keys = None
    try:
        for run_dir, cfg, label in zip(args.runs, cfgs, _labels(cfgs, args.runs)):
            _, model = load_run(run_dir, args.which)
            check_tiles_fit(model, cfg)
            e = cfg.eval
            prepared = prepare_dataset(cfg, progress=not args.no_progress)
            n = count_tiles(prepared, e.split)
            if e.max_tiles is not None:
                n = min(n, int(e.max_tiles))
            if overlay_keys is None:  # the first run chooses the tiles every model shows
                overlay_keys = select_overlay_tiles(read_manifest(prepared)["tiles"], e.overlay_tiles, e.split, n)
            ds = load_split(prepared, e.split)
            if e.max_tiles is not None:
                ds = ds.take(int(e.max_tiles))
            evaluations.append(
                evaluate_model(
                    model, eval_batches(ds, e.batch_size).as_numpy_iterator(), eval_cfg=e,
                    model_name=cfg.model.name, label=label, run=str(run_dir), overlay_keys=overlay_keys,
                    progress=not args.no_progress, total_batches=math.ceil(n / e.batch_size),
                    host_parallel=cfg.model.host_parallel,
                )
            )
    except (RunError, DataError, ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    e = cfgs[0].eval
    context = {
        "runs": " ".join(str(r) for r in args.runs),
        "data": data_description(cfgs[0].data) + ("" if other_data else " (the runs' own split)"),
        "split": e.split,
        "tiles": ", ".join(f"{ev.label}: {ev.tiles}" for ev in evaluations),
        "score threshold": e.score_threshold,
        "pixel threshold": e.pixel_threshold,
        "checkpoint": args.which,
    }
    written = write_report(evaluations, out, title=f"kerasxai evaluation ({e.split} split)", context=context,
                           score_threshold=e.score_threshold, pixel_threshold=e.pixel_threshold)
    print(f"report: {out / 'report.html'} ({len(written)} files)")
    print(f"  data: {context['data']}, {e.split} split")
    for ev in evaluations:
        m = ev.metrics
        print(f"  {ev.label}: F1 {m['pooled_f1']:.4f}  pointing {m['pointing_game']:.4f}  PxAP {m['pxap']:.4f}  "
              f"acc {m['classification_accuracy']:.4f}  ({ev.tiles} tiles, {ev.seconds:.0f} s)")
    return 0


if __name__ == "__main__":
    from kerasxai.cli import run

    sys.exit(run(main))
