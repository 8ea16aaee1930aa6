"""Markdown and CSV tables: the one writer behind every report, summary and benchmark table.

Cells arrive formatted (each caller decides its number format); ``None`` is written as an
empty cell.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence

__all__ = ["csv_table", "markdown_table"]


def _cell(v) -> str:
    return "" if v is None else str(v)


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence], align: str | None = None) -> str:
    """A pipe table, one line per row, no trailing newline.

    ``align``: one letter per column, ``l`` (default) or ``r`` (right-aligned, ``---:``).
    """
    align = align or "l" * len(headers)
    if len(align) != len(headers) or set(align) - {"l", "r"}:
        raise ValueError(f"align must be {len(headers)} letters of 'l' or 'r', got {align!r}")
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"]
    for r in rows:
        if len(r) != len(headers):
            raise ValueError(f"a row has {len(r)} cells for {len(headers)} columns: {list(r)!r}")
        lines.append("| " + " | ".join(_cell(c) for c in r) + " |")
    return "\n".join(lines)


def csv_table(headers: Sequence[str], rows: Iterable[Sequence]) -> str:
    """CSV text with a header line and ``\\n`` line ends."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(headers)
    w.writerows([_cell(c) for c in r] for r in rows)
    return buf.getvalue()
