"""Localize defects on full images with a trained run: ``python -m kerasxai.predict``.

    python -m kerasxai.predict --run runs/pcb-20260101-120000 board1.jpg boards/ --out preds/

Per image ``<stem>_overlay.png``, ``<stem>_mask.png`` and ``<stem>.json`` appear in ``--out``
(see :mod:`kerasxai.localize`), plus ``summary.csv`` for the whole batch. Every file is
written to a temporary name and renamed, and an image's files only once all of them are
encoded, so the folder never holds partial outputs. An unreadable image is reported on stderr
and skipped; the exit code is then 1.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
import time
from pathlib import Path

PROG = "kerasxai.predict"


def write_atomic(files: dict[str, bytes], out_dir: Path) -> None:
    """Write all ``files`` (name -> bytes) to temporary names, then rename them into place."""
    tmps = []
    try:
        for name, data in files.items():
            tmp = out_dir / f".{name}.tmp-{os.getpid()}"
            tmps.append((tmp, out_dir / name))
            with open(tmp, "wb") as fh:
                fh.write(data)
        for tmp, final in tmps:
            os.replace(tmp, final)
    finally:
        for tmp, _ in tmps:
            if tmp.exists():
                tmp.unlink()


def unique_stems(paths: list[Path]) -> list[str]:
    """File stems, made unique within the batch (``a``, ``a-2``, ...) so outputs never collide."""
    seen: dict[str, int] = {}
    out = []
    for p in paths:
        stem = p.stem
        n = seen.get(stem, 0) + 1
        seen[stem] = n
        out.append(stem if n == 1 else f"{stem}-{n}")
    return out


SUMMARY_FIELDS = ["image", "status", "verdict", "max_score", "regions", "tiles", "height", "width", "json", "error"]


def summary_csv(rows: list[dict]) -> bytes:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=SUMMARY_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue().encode()


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=f"python -m {PROG}", description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True,
                   help="training run folder (config.yaml + best.keras) or the name of a shipped model")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER", help="image files or folders of images")
    p.add_argument("--out", required=True, help="output folder (created if missing)")
    p.add_argument("--which", default="best", choices=["best", "last"], help="checkpoint of the run")
    p.add_argument("--batch-size", type=int, default=None, help="tiles per forward pass (default eval.batch_size)")
    p.add_argument("--threshold", type=float, default=None,
                   help="tile score threshold: tiles at or below it add no defect evidence (default eval.score_threshold)")
    p.add_argument("--pixel-threshold", type=int, default=None,
                   help="defect where the 0..255 normalized map >= this (default eval.pixel_threshold)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from tqdm import tqdm

    from kerasxai.config import ConfigError
    from kerasxai.localize import Localizer, LocalizeError, OutputQueue, collect_images, load_image, render_outputs

    def fail(msg: str) -> None:
        print(f"{PROG}: error: {msg}", file=sys.stderr)

    from kerasxai.runs import RunError, resolve_run

    try:
        run = resolve_run(args.run)
    except RunError as exc:
        fail(str(exc))
        return 2
    if args.batch_size is not None and args.batch_size < 1:
        fail(f"--batch-size must be >= 1, got {args.batch_size}")
        return 2
    try:
        localizer = Localizer.from_run(run, which=args.which, batch_size=args.batch_size,
                                       score_threshold=args.threshold, pixel_threshold=args.pixel_threshold)
    except (ConfigError, FileNotFoundError, OSError, ValueError) as exc:
        fail(f"cannot load run '{run}': {exc}")
        return 2

    paths, errors = collect_images(args.inputs)
    for msg in errors:
        fail(msg)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    stems = unique_stems(paths)
    rows: list[dict] = []
    failed = len(errors)
    timings = localizer.timings
    bar = tqdm(total=len(paths), unit="img", desc="predict", disable=args.no_progress, file=sys.stderr)

    def items():
        nonlocal failed
        for path, stem in zip(paths, stems):
            t0 = time.perf_counter()
            try:
                image = load_image(path)
            except LocalizeError as exc:
                failed += 1
                bar.write(f"{PROG}: error: {exc} (skipped)", file=sys.stderr)
                rows.append({"image": str(path), "status": "error", "error": str(exc)})
                bar.update(1)
                continue
            finally:
                timings["read"] += time.perf_counter() - t0
            yield (path, stem, image), image

    def render_and_write(image, result, stem, path):
        t0 = time.perf_counter()
        files = render_outputs(image, result, stem, source=str(path))
        t1 = time.perf_counter()
        write_atomic(files, out_dir)
        timings["render"] += t1 - t0
        timings["write"] += time.perf_counter() - t1
        bar.update(1)

    counts = {"defective": 0, "good": 0}
    with OutputQueue() as outputs:  # encode and write while the model runs the next batch
        for (path, stem, image), result in localizer.localize_stream(items()):
            outputs.submit(render_and_write, image, result, stem, path)
            counts[result.verdict] += 1
            h, w = result.heatmap.shape
            rows.append({"image": str(path), "status": "ok", "verdict": result.verdict,
                         "max_score": f"{result.max_score:.6f}", "regions": len(result.regions),
                         "tiles": len(result.positions), "height": h, "width": w, "json": f"{stem}.json", "error": ""})
    bar.close()
    order = {str(p): i for i, p in enumerate(paths)}
    rows.sort(key=lambda r: order.get(r["image"], -1))
    write_atomic({"summary.csv": summary_csv(rows)}, out_dir)
    print(f"{PROG}: {counts['defective']} defective, {counts['good']} good, {failed} failed -> "
          f"{out_dir / 'summary.csv'}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
