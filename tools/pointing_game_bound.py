"""What bounds a model's pointing game: the slivers its labels call good, and where it misses.

    python tools/pointing_game_bound.py --run deeppcb-mobilenetv3_large_d --split test

The protocol's pointing game counts every tile with a defect pixel, gated by the tile score; a
tile is labelled defective only above ``data.tile.defect_fraction``. This prints, on one split of
the run's own data: how many tiles have a defect pixel and how many are labelled defective, the
pointing game gated and ungated, the same over the label-defective tiles, and its bounds for a
perfect classifier (with this model's maps, and with perfect maps). Then where the missed
defective tiles lie: the share of misses and hits whose defect lies mostly within ``--border``
pixels of the tile's edge (what a shift augmentation can push out of the tile).
"""

from __future__ import annotations

import argparse
import sys

import _checkout  # noqa: F401
import numpy as np


def bound_figures(hit, gate, label, pix, inner) -> dict:
    """The figures of one split from per-tile arrays: pointing-game hit (0..1, ungated), score gate,
    label, whether the tile has a defect pixel, and the share of its defect away from the border."""
    hit, gate, label, pix = (np.asarray(a, float) for a in (hit, gate, label, pix))
    label, pix, gate = label > 0, pix > 0, gate > 0
    n_pix, n_lab = int(pix.sum()), int(label.sum())
    missed, found, near = label & ~gate, label & gate, np.asarray(inner) < 0.5
    return {
        "tiles": len(hit), "with_defect_pixel": n_pix, "labelled_defective": n_lab, "slivers": int((pix & ~label).sum()),
        "gated": float(np.sum(hit * gate * pix) / n_pix), "ungated": float(np.sum(hit * pix) / n_pix),
        "labelled_gated": float(np.sum(hit * gate * label) / n_lab), "labelled_ungated": float(np.sum(hit * label) / n_lab),
        "bound_these_maps": float(np.sum(hit * label) / n_pix), "bound_perfect_maps": n_lab / n_pix,
        "missed": int(missed.sum()), "found": int(found.sum()),
        "border_missed": float(near[missed].mean()) if missed.any() else float("nan"),
        "border_found": float(near[found].mean()) if found.any() else float("nan"),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="run folder or shipped model name")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--border", type=int, default=8, help="pixels from the tile edge that count as the border")
    p.add_argument("--batch", type=int, default=64)
    args = p.parse_args(argv)

    from kerasxai.data.pipeline import eval_batches, load_split
    from kerasxai.metrics.protocol import pointing_hits, prepare_maps
    from kerasxai.runs import load_run, resolve_run
    from kerasxai.training import prepare_checked

    cfg, model = load_run(resolve_run(args.run))
    prepared = prepare_checked(cfg, progress=False)
    hits, gates, labels, defective, inner = [], [], [], [], []
    b = args.border
    for batch in eval_batches(load_split(prepared, args.split), args.batch).as_numpy_iterator():
        out = model.predict_on_batch(batch["image"].astype("float32"))
        m = prepare_maps(np.asarray(out["score"]), np.asarray(out["heatmap"]), batch["mask"], batch["valid"],
                         cfg.eval.score_threshold)
        hits.append(pointing_hits(m))
        gates.append(m.gate)
        labels.append(batch["label"] > 0)
        defective.append(m.masks.any(axis=(1, 2)))
        inner.append(m.masks[:, b:-b, b:-b].sum(axis=(1, 2)) / np.maximum(m.masks.sum(axis=(1, 2)), 1))
    f = bound_figures(*map(np.concatenate, (hits, gates, labels, defective, inner)))
    print(f"{args.run}, {args.split} split, {f['tiles']} tiles")
    print(f"tiles with a defect pixel {f['with_defect_pixel']}, labelled defective {f['labelled_defective']}, "
          f"slivers labelled good {f['slivers']}")
    print(f"pointing game: gated {f['gated']:.4f}, ungated {f['ungated']:.4f}")
    print(f"over the label-defective tiles: gated {f['labelled_gated']:.4f}, ungated {f['labelled_ungated']:.4f}")
    print(f"bound with a perfect classifier: these maps {f['bound_these_maps']:.4f}, perfect maps {f['bound_perfect_maps']:.4f}")
    print(f"defect mostly within {b} px of the tile edge: {f['border_missed']:.1%} of {f['missed']} missed "
          f"defective tiles, {f['border_found']:.1%} of {f['found']} found")
    return 0


if __name__ == "__main__":
    from kerasxai.cli import run

    sys.exit(run(main))
