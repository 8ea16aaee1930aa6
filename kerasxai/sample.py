"""The bundled DeepPCB sample as boards, and a model's board figures on them.

``kerasxai/sample_data/deeppcb`` holds 8 annotated pairs (a board with defects and its
defect-free template) that no shipped model saw in training; ``data.root=sample:deeppcb``
reads the same files as tiles.
"""

from __future__ import annotations

import json
from pathlib import Path

SAMPLE = Path(__file__).resolve().parent / "sample_data" / "deeppcb" / "PCBData"

# The shipped locator whose figures on the sample the demo prints (README, model card).
SHIPPED = "deeppcb-mobilenetv3_large_d"


def sample_boards() -> list[tuple[Path, list]]:
    """The bundled sample's boards: ``(image, annotated boxes)``, templates with no box."""
    from kerasxai.data.sources import deeppcb_boxes

    boards = []
    for line in (SAMPLE / "trainval.txt").read_text().split("\n"):
        if not line.strip():
            continue
        image, ann = line.split()
        stem = (SAMPLE / image).with_suffix("")
        boards.append((Path(f"{stem}_test.jpg"), deeppcb_boxes(str(SAMPLE / ann))))
        boards.append((Path(f"{stem}_temp.jpg"), []))
    return boards


def sample_board_figures(pred_dir: Path):
    """:class:`~kerasxai.metrics.boards.BoardFigures` of ``predict``'s JSON files for the sample boards."""
    from kerasxai.metrics.boards import board_figures

    def board(image: Path, boxes):
        result = json.loads((pred_dir / f"{image.stem}.json").read_text())
        return result["verdict"] == "defective", [r["box"] for r in result["regions"]], boxes

    return board_figures(board(image, boxes) for image, boxes in sample_boards())
