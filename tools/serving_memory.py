"""Peak memory of the exported ``localize`` signature: a large image against a small one.

    python tools/serving_memory.py                              # mobilenetv3_large_d, 224 px tiles,
                                                                # 640x640 vs 4000x4000, 32 tiles a pass
    python tools/serving_memory.py --batch-size 100000          # every tile in one pass, for comparison
    python tools/serving_memory.py --model vit_tiny_patch16_224 --sizes 640,2000,4000

Exports the model (random init) once, then scores one random image per size in a fresh
process that loads the SavedModel with TensorFlow alone and reports its peak RSS
(``ru_maxrss``), so the figures are those of a serving process. Prints one JSON line per size
and the ratio of the largest to the smallest.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


def measure(path: str, side: int) -> dict:
    """Score one random side x side image through ``localize``; this process's peak RSS."""
    import numpy as np
    import tensorflow as tf

    loaded = tf.saved_model.load(path)
    localize = loaded.signatures["localize"]
    localize(image=tf.zeros((8, 8, 3), tf.uint8))  # load and warm up before the image is made
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    image = tf.constant(np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8))
    t0 = time.perf_counter()
    out = localize(image=image)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {"side": side, "tiles": int(out["scores"].shape[0]), "seconds": round(seconds, 2),
            "rss_after_load_mib": round(before / 1024, 1), "peak_rss_mib": round(peak / 1024, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="mobilenetv3_large_d")
    p.add_argument("--tile", type=int, default=224, help="tile side")
    p.add_argument("--overlap", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=32, help="tiles per forward pass inside localize")
    p.add_argument("--sizes", default="640,4000", help="image sides, comma-separated")
    p.add_argument("--out", help="also write the rows as JSON to this file")
    p.add_argument("--measure", nargs=2, metavar=("SAVED_MODEL", "SIDE"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure[0], int(args.measure[1]))))
        return

    from kerasxai.models import build_model
    from kerasxai.serving import export_model

    sides = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        model = build_model(args.model, input_shape=(args.tile, args.tile, 3))
        path = export_model(model, Path(tmp) / "m" / "1", tile_size=args.tile, overlap=args.overlap,
                            batch_size=args.batch_size)
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
        rows = []
        for side in sides:
            r = subprocess.run([sys.executable, __file__, "--measure", str(path), str(side)], env=env,
                               capture_output=True, text=True, check=False)
            if r.returncode != 0:
                sys.exit(f"measuring {side}x{side} failed:\n{r.stderr[-3000:]}")
            row = json.loads(r.stdout.strip().splitlines()[-1])
            row.update(model=args.model, tile=args.tile, batch_size=args.batch_size)
            rows.append(row)
            print(json.dumps(row), flush=True)
    small, large = min(rows, key=lambda r: r["side"]), max(rows, key=lambda r: r["side"])
    ratio = large["peak_rss_mib"] / small["peak_rss_mib"]
    print(json.dumps({"peak_rss_ratio": round(ratio, 3), "of": f"{large['side']} vs {small['side']}"}))
    if args.out:
        Path(args.out).write_text(json.dumps({"rows": rows, "peak_rss_ratio": ratio}, indent=2) + "\n")


if __name__ == "__main__":
    main()
