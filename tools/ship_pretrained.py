"""Copy a finished training run into the package as a shipped model (``kerasxai/pretrained/<name>/``).

    python tools/ship_pretrained.py --run runs/deeppcb_locator-20261202-161851 --name deeppcb-mobilenetv3_large_d

Writes ``best.keras`` without the optimizer state (a third of the checkpoint's size) and the run's
``config.yaml`` with machine-specific folders (``train.runs_dir``, ``data.cache_dir``) reset to
their defaults; the model card (``MODEL_CARD.md``) beside them is written by hand. Files are
replaced atomically; the shipped model is loaded back and must give the run's outputs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import _checkout  # noqa: F401
import numpy as np


LIMIT_MB = 25


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="finished run folder (config.yaml + best.keras)")
    p.add_argument("--name", required=True, help="shipped model name, e.g. deeppcb-mobilenetv3_large_d")
    args = p.parse_args(argv)

    import keras

    from kerasxai.config import Config, to_yaml
    from kerasxai.pretrained import PRETRAINED_DIR, load_pretrained
    from kerasxai.runs import load_run, save_model_atomic
    from kerasxai.runtime import atomic_write_text

    cfg, model = load_run(args.run, "best")
    defaults = Config()
    cfg.train.runs_dir, cfg.data.cache_dir = defaults.train.runs_dir, defaults.data.cache_dir
    dest = PRETRAINED_DIR / args.name
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:  # check the size before replacing anything
        probe = Path(tmp) / "best.keras"
        model.save(probe)
        mb = probe.stat().st_size / 2**20
    if mb > LIMIT_MB:
        raise SystemExit(f"ship_pretrained: the model is {mb:.1f} MB, over the {LIMIT_MB} MB a shipped model may take")
    save_model_atomic(model, dest / "best.keras")
    atomic_write_text(dest / "config.yaml", to_yaml(cfg))
    _, shipped = load_pretrained(args.name)
    x = np.random.default_rng(0).uniform(0, 255, (2, *model.input_shape[1:])).astype("float32")
    a, b = model.predict(x, verbose=0), shipped.predict(x, verbose=0)
    if not all(np.allclose(a[k], b[k], atol=1e-5) for k in a):
        raise SystemExit("ship_pretrained: the shipped model's outputs differ from the run's")
    print(f"shipped '{args.name}' ({mb:.1f} MB, keras {keras.__version__}) in {dest}")
    if not (dest / "MODEL_CARD.md").is_file():
        print(f"  write its model card: {dest / 'MODEL_CARD.md'}")
    return 0


if __name__ == "__main__":
    from kerasxai.cli import run

    sys.exit(run(main))
