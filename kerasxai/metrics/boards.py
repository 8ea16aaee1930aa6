"""Board-level figures of full-image predictions: which boards are flagged, which defects are hit.

A quality engineer reads a locator by boards, not pixels: of the boards that carry defects, how
many were flagged; of the defect-free ones, how many raised a false alarm; of the annotated defect
boxes, how many a predicted region box overlaps (a *hit*).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = ["BoardFigures", "board_figures", "boxes_overlap"]

Box = Sequence[float]  # x1, y1, x2, y2 with the end exclusive


def boxes_overlap(a: Box, b: Box) -> bool:
    """True when the two boxes share at least one pixel."""
    return min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1])


@dataclass
class BoardFigures:
    defective_flagged: int = 0
    defective: int = 0
    good_flagged: int = 0
    good: int = 0
    boxes_hit: int = 0
    boxes: int = 0

    @property
    def hit_rate(self) -> float:
        return self.boxes_hit / self.boxes if self.boxes else 0.0

    def summary(self) -> str:
        return (f"{self.defective_flagged} of {self.defective} defective boards flagged, "
                f"{self.good_flagged} of {self.good} defect-free boards flagged, "
                f"{self.boxes_hit} of {self.boxes} defect boxes hit ({100 * self.hit_rate:.0f} %)")


def board_figures(boards: Iterable[tuple[bool, Sequence[Box], Sequence[Box]]]) -> BoardFigures:
    """Figures over ``(flagged, predicted_boxes, annotated_boxes)`` per board; a board with no
    annotated box is defect-free."""
    f = BoardFigures()
    for flagged, predicted, annotated in boards:
        if annotated:
            f.defective += 1
            f.defective_flagged += bool(flagged)
            f.boxes += len(annotated)
            f.boxes_hit += sum(any(boxes_overlap(p, a) for p in predicted) for a in annotated)
        else:
            f.good += 1
            f.good_flagged += bool(flagged)
    return f
