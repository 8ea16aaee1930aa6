"""``python -m kerasxai.evaluate --runs runs/a runs/b ... [--split test] [--out DIR] [eval.key=value ...]``

Evaluates each run's best model on its prepared dataset (``prepare_dataset`` reuses the
cache) and writes the report folder (tables, figures, report.html; see kerasxai.report).
Exit status 2 with one line on bad input (missing run, bad key, empty split).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m kerasxai.evaluate", description=__doc__.splitlines()[0])
    p.add_argument("--runs", nargs="+", required=True, metavar="RUN_DIR", help="run folders made by kerasxai.train")
    p.add_argument("--split", choices=["train", "val", "test"], default=None, help="tiles to evaluate (default: eval.split)")
    p.add_argument("--out", default=None, help="report folder (default: reports/eval-<time>)")
    p.add_argument("--which", choices=["best", "last"], default="best", help="checkpoint of each run")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("overrides", nargs="*", metavar="eval.key=value", help="overrides of eval.* keys, e.g. eval.max_tiles=500")
    return p


def _labels(cfgs, runs) -> list[str]:
    """Row names: the model name, plus the run folder when two runs share a model."""
    names = [c.model.name for c in cfgs]
    return [n if names.count(n) == 1 else f"{n}@{Path(r).name}" for n, r in zip(names, runs)]


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # `--runs a b key=value`: argparse hands trailing overrides to --runs; take them back.
    args.overrides = [r for r in args.runs if "=" in r] + list(args.overrides)
    args.runs = [r for r in args.runs if "=" not in r]
    if not args.runs:
        print("error: --runs needs at least one run folder", file=sys.stderr)
        return 2
    bad = [o for o in args.overrides if not o.startswith("eval.")]
    if bad:
        print(f"error: override '{bad[0]}' is not an eval.* key: only eval.* can change at evaluation time", file=sys.stderr)
        return 2
    overrides = list(args.overrides) + ([f"eval.split={args.split}"] if args.split else [])

    from kerasxai.config import ConfigError
    from kerasxai.data import DataError
    from kerasxai.runs import RunError, run_config

    try:
        cfgs = [run_config(r, overrides) for r in args.runs]
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
        "split": e.split,
        "tiles": ", ".join(f"{ev.label}: {ev.tiles}" for ev in evaluations),
        "score threshold": e.score_threshold,
        "pixel threshold": e.pixel_threshold,
        "checkpoint": args.which,
    }
    written = write_report(evaluations, out, title=f"kerasxai evaluation ({e.split} split)", context=context,
                           score_threshold=e.score_threshold, pixel_threshold=e.pixel_threshold)
    print(f"report: {out / 'report.html'} ({len(written)} files)")
    for ev in evaluations:
        m = ev.metrics
        print(f"  {ev.label}: F1 {m['pooled_f1']:.4f}  pointing {m['pointing_game']:.4f}  PxAP {m['pxap']:.4f}  "
              f"acc {m['classification_accuracy']:.4f}  ({ev.tiles} tiles, {ev.seconds:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
