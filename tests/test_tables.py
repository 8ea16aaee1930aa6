import csv
import io

import pytest

from kerasxai.tables import csv_table, markdown_table


def test_markdown_table_has_header_separator_and_one_line_per_row():
    text = markdown_table(["model", "F1"], [["a", "0.5"], ["b", None]])
    assert text.splitlines() == ["| model | F1 |", "|---|---|", "| a | 0.5 |", "| b |  |"]


def test_markdown_table_right_aligns_the_columns_asked_for():
    assert markdown_table(["scope", "ms"], [], align="lr").splitlines()[1] == "|---|---:|"


@pytest.mark.parametrize("align", ["l", "lx", "lll"])
def test_markdown_table_refuses_a_bad_alignment(align):
    with pytest.raises(ValueError, match="align"):
        markdown_table(["a", "b"], [], align=align)


def test_markdown_table_refuses_a_row_of_the_wrong_width():
    with pytest.raises(ValueError, match="3 cells for 2 columns"):
        markdown_table(["a", "b"], [[1, 2, 3]])


def test_csv_table_round_trips_through_the_csv_module():
    text = csv_table(["model", "note"], [["a", "x, with a comma"], ["b", None]])
    assert list(csv.reader(io.StringIO(text))) == [["model", "note"], ["a", "x, with a comma"], ["b", ""]]
    assert text.endswith("\n") and "\r" not in text
