"""Peak memory of the exported ``localize`` signature: a large image against a small one.

    python tools/serving_memory.py                              # mobilenetv3_large_d, 224 px tiles,
                                                                # 640x640 vs 4000x4000, 8 tiles a pass
    python tools/serving_memory.py --batch-size 100000          # every tile in one pass, for comparison
    python tools/serving_memory.py --model vit_tiny_patch16_224 --sizes 640,2000,4000
    python tools/serving_memory.py --repeats 3                  # median of 3 processes per size

Exports the model (random init) once, then scores one random image per size in a fresh
process that loads the SavedModel with TensorFlow alone, so the figures are those of a serving
process. The peak is that process's own high-water mark (``VmHWM``, Linux), reset once the
image is made: it counts the image, the call and its outputs, not the copies the image was
made from. (``ru_maxrss`` would not do: a child started by fork/exec inherits its parent's peak.)
Prints one JSON line per size and the ratio of the largest peak to the smallest.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _checkout  # noqa: F401
from kerasxai.serving import LOCALIZE_BATCH


def _status_mib(field: str) -> float:
    """A ``VmRSS``/``VmHWM``-like field of this process's /proc status, in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return round(int(line.split()[1]) / 1024, 1)  # kB
    raise SystemExit(f"/proc/self/status has no {field}: this tool needs Linux")


def _reset_peak() -> None:
    """Set this process's ``VmHWM`` to its current RSS (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def measure(path: str, side: int) -> dict:
    """Score one random side x side image through ``localize``; this process's peak RSS."""
    import numpy as np
    import tensorflow as tf

    loaded = tf.saved_model.load(path)
    localize = loaded.signatures["localize"]
    localize(image=tf.zeros((8, 8, 3), tf.uint8))  # load and warm up before the image is made
    after_load = _status_mib("VmRSS")
    # through bytes: tf.constant(array) leaves a second image-sized block resident
    pixels = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8).tobytes()
    image = tf.reshape(tf.io.decode_raw(pixels, tf.uint8), (side, side, 3))
    del pixels
    _reset_peak()
    before = _status_mib("VmRSS")
    t0 = time.perf_counter()
    out = localize(image=image)
    seconds = time.perf_counter() - t0
    return {"side": side, "tiles": int(out["scores"].shape[0]), "seconds": round(seconds, 2),
            "rss_after_load_mib": after_load, "rss_with_image_mib": before, "peak_rss_mib": _status_mib("VmHWM")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="mobilenetv3_large_d")
    p.add_argument("--tile", type=int, default=224, help="tile side")
    p.add_argument("--overlap", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=LOCALIZE_BATCH,
                   help="tiles per forward pass inside localize (default: %(default)s, as exported)")
    p.add_argument("--sizes", default="640,4000", help="image sides, comma-separated")
    p.add_argument("--repeats", type=int, default=1,
                   help="fresh processes per size (interleaved); the ratio is of the median peaks")
    p.add_argument("--out", help="also write the rows as JSON to this file")
    p.add_argument("--measure", nargs=2, metavar=("SAVED_MODEL", "SIDE"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.repeats < 1:
        p.error(f"--repeats must be >= 1, got {args.repeats}")
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
        for side in sides * args.repeats:
            r = subprocess.run([sys.executable, __file__, "--measure", str(path), str(side)], env=env,
                               capture_output=True, text=True, check=False)
            if r.returncode != 0:
                sys.exit(f"measuring {side}x{side} failed:\n{r.stderr[-3000:]}")
            row = json.loads(r.stdout.strip().splitlines()[-1])
            row.update(model=args.model, tile=args.tile, batch_size=args.batch_size)
            rows.append(row)
            print(json.dumps(row), flush=True)
    peaks = {side: statistics.median(r["peak_rss_mib"] for r in rows if r["side"] == side) for side in sides}
    small, large = min(sides), max(sides)
    ratio = peaks[large] / peaks[small]
    print(json.dumps({"peak_rss_ratio": round(ratio, 3), "of": f"{large} vs {small}",
                      "median_peak_rss_mib": {str(k): v for k, v in peaks.items()}}))
    if args.out:
        Path(args.out).write_text(json.dumps({"rows": rows, "peak_rss_ratio": ratio}, indent=2) + "\n")


if __name__ == "__main__":
    # not through kerasxai.cli.run: the measured process stands for a TF Serving process, which
    # has none of kerasxai's process tuning
    main()
