"""``python -m kerasxai.prepare --config FILE [key=value ...]``: tile a dataset once.

Writes (or reuses) ``<data.cache_dir>/<reader>-<key>/`` with TFRecord shards and
``manifest.json``, then prints the tiles per split and class. Exit 2 on bad input.
"""

from __future__ import annotations

import argparse
import time

from kerasxai.cli.errors import guard

# One line for --help here and in the `kerasxai` command list.
DESCRIPTION = "Tile a dataset once into TFRecord shards + manifest.json (reused when unchanged)."


def format_counts(manifest: dict) -> str:
    """The per-split / per-class table printed after preparing."""
    rows = [f"{'split':<6} {'images':>7} {'good':>8} {'defect':>8} {'tiles':>8} {'defect %':>9}"]
    tot = [0, 0, 0]
    for split, c in manifest["counts"].items():
        n = c["good"] + c["defect"]
        imgs = manifest["images"][split]
        tot = [tot[0] + imgs, tot[1] + c["good"], tot[2] + c["defect"]]
        pct = f"{100 * c['defect'] / n:.1f}" if n else "-"
        rows.append(f"{split:<6} {imgs:>7} {c['good']:>8} {c['defect']:>8} {n:>8} {pct:>9}")
    n = tot[1] + tot[2]
    rows.append(f"{'all':<6} {tot[0]:>7} {tot[1]:>8} {tot[2]:>8} {n:>8} {100 * tot[2] / max(n, 1):>9.1f}")
    return "\n".join(rows)


def main(argv=None) -> int:
    from kerasxai.config import add_config_args

    parser = argparse.ArgumentParser(prog="python -m kerasxai.prepare", description=DESCRIPTION)
    add_config_args(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_intermixed_args(argv)  # key=value may follow options

    return guard(lambda: prepare(args))


def prepare(args: argparse.Namespace) -> int:
    """Tile the dataset of ``args.config`` and print what the prepared folder holds."""
    from kerasxai.config import load_config
    from kerasxai.data.sources import read_samples

    cfg = load_config(args.config, args.overrides)
    t0 = time.time()
    read_samples(cfg.data)  # bad paths / readers fail here, before TensorFlow loads
    from kerasxai.data.pipeline import prepare_dataset, read_manifest

    out = prepare_dataset(cfg, progress=not args.quiet)
    manifest = read_manifest(out)
    print(f"prepared dataset: {out}  ({time.time() - t0:.1f} s; built in {manifest['prepare_seconds']} s)")
    print(f"tiles {manifest['tile_size']} px, overlap {manifest['overlap']} px")
    print(format_counts(manifest))
    return 0

