"""Localize defects on full images with a trained run: ``python -m kerasxai.predict``.

    python -m kerasxai.predict --run runs/pcb-20260101-120000 board1.jpg boards/ --out preds/

Per image ``<stem>_overlay.png``, ``<stem>_mask.png`` and ``<stem>.json`` appear in ``--out``,
plus ``summary.csv`` for the whole batch (see :mod:`kerasxai.prediction`); the folder never
holds partial outputs: an image whose files cannot all be written keeps none. An unreadable or
unwritable image is reported on stderr and in ``summary.csv`` (status ``error``) and the batch
goes on; the exit code is then 1.

predict never overwrites a file it did not write: an ``--out`` that already holds one of the
names it would write (a ground-truth ``<stem>_mask.png``, say) or an input image, that is a
file, or that cannot be written is refused with exit code 2 before the model loads.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kerasxai.cli.errors import UsageError, guard
from kerasxai.cli.options import add_run_options

# One line for --help here and in the `kerasxai` command list.
DESCRIPTION = "Localize defects on full images with a trained run."

PROG = "kerasxai.predict"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=f"python -m {PROG}", description=DESCRIPTION)
    add_run_options(p)
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER", help="image files or folders of images")
    p.add_argument("--out", required=True,
                   help="output folder (created if missing); must not already hold files predict would write")
    p.add_argument("--batch-size", type=int, default=None, help="tiles per forward pass (default eval.batch_size)")
    p.add_argument("--threshold", type=float, default=None,
                   help="tile score threshold: tiles at or below it add no defect evidence (default eval.score_threshold)")
    p.add_argument("--pixel-threshold", type=int, default=None,
                   help="defect where the 0..255 normalized map >= this (default eval.pixel_threshold)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    return guard(lambda: predict(args), prefix=f"{PROG}: error",
                 interrupted=f"{PROG}: interrupted: the images done so far have all their files in --out; "
                             "summary.csv was not written")


def predict(args: argparse.Namespace) -> int:
    """Refuse bad input before the model loads, then localize every image; 1 if any failed."""
    from kerasxai.localize import collect_images
    from kerasxai.prediction import (SUMMARY, check_out_dir, load_localizer, make_out_dir, one_line,
                                     predict_batch, summary_csv, unique_stems, write_atomic)
    from kerasxai.runs import resolve_run

    run = resolve_run(args.run)
    if args.batch_size is not None and args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
    out_dir = Path(args.out)
    paths, errors = collect_images(args.inputs)
    stems = unique_stems(paths)
    check_out_dir(out_dir, paths, stems)
    localizer = load_localizer(run, which=args.which, batch_size=args.batch_size,
                               score_threshold=args.threshold, pixel_threshold=args.pixel_threshold)
    make_out_dir(out_dir)

    for msg in errors:
        print(f"{PROG}: error: {msg}", file=sys.stderr)
    rows = predict_batch(localizer, paths, stems, out_dir, progress=not args.no_progress, prefix=f"{PROG}: error: ")
    failed = len(errors) + sum(r["status"] == "error" for r in rows)
    try:
        write_atomic({SUMMARY: summary_csv(rows)}, out_dir)
    except OSError as exc:
        print(f"{PROG}: error: cannot write '{out_dir / SUMMARY}': {one_line(exc)}", file=sys.stderr)
        return 1
    verdicts = [r.get("verdict") for r in rows if r["status"] == "ok"]
    print(f"{PROG}: {verdicts.count('defective')} defective, {verdicts.count('good')} good, {failed} failed -> "
          f"{out_dir / SUMMARY}", file=sys.stderr)
    return 1 if failed else 0
