"""Options several commands share, worded once."""

from __future__ import annotations

import argparse

# The checkpoints a run folder keeps (--which).
CHECKPOINTS = ("best", "last")


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """``--run`` (a run folder or a shipped model) and ``--which`` (its checkpoint)."""
    parser.add_argument("--run", required=True,
                        help="training run folder (config.yaml + best.keras) or the name of a shipped model")
    parser.add_argument("--which", default="best", choices=CHECKPOINTS, help="checkpoint of the run")
