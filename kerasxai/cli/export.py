"""Export a trained run for TF Serving: ``python -m kerasxai.export``.

    python -m kerasxai.export --run runs/pcb-20260101-120000 --out exported/kerasxai/1

Writes a TF SavedModel in TF Serving's ``<model_name>/<version>`` layout with the signatures
``serving_default`` (uint8 tiles -> score, heatmap) and ``localize`` (one uint8 image of any
size -> stitched heatmap, mask, tile scores, positions); see :mod:`kerasxai.serving`. The
folder appears complete or not at all; an existing version is never overwritten.
"""

from __future__ import annotations

import argparse
import sys

from kerasxai.cli.errors import guard
from kerasxai.cli.options import add_run_options
from kerasxai.serving import LOCALIZE_BATCH, check_target, export_run

# One line for --help here and in the `kerasxai` command list.
DESCRIPTION = "Export a trained run as a TF SavedModel for TF Serving."

PROG = "kerasxai.export"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=f"python -m {PROG}", description=DESCRIPTION)
    add_run_options(p)
    p.add_argument("--out", required=True, help="new version folder, e.g. exported/kerasxai/1")
    p.add_argument("--no-localize", action="store_true", help="only the tile signature (serving_default)")
    p.add_argument("--localize-batch", type=int, default=LOCALIZE_BATCH, metavar="N",
                   help="tiles per forward pass inside the localize signature (default: %(default)s; "
                        "more for an accelerator, at the cost of the serving process's memory)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    return guard(lambda: export(args), prefix=f"{PROG}: error",
                 interrupted=f"{PROG}: interrupted: '{args.out}' is complete or absent, never partial")


def export(args: argparse.Namespace) -> int:
    """Check the run and the target before the export starts, then export."""
    from kerasxai.runs import resolve_run

    run = resolve_run(args.run)
    check_target(args.out)
    out = export_run(run, args.out, which=args.which, localize=not args.no_localize,
                     localize_batch=args.localize_batch)
    print(f"{PROG}: wrote {out} (check: saved_model_cli show --dir {out} --all)", file=sys.stderr)
    return 0
