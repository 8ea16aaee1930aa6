"""tools/pointing_game_bound.py: the pointing game's bounds from per-tile figures."""

import numpy as np
import pytest
from conftest import load_tool

tool = load_tool("pointing_game_bound.py")


def test_bounds_count_slivers_in_the_denominator_and_not_as_labels():
    # a found defective tile, a missed one, a sliver labelled good (gated off), a good tile
    f = tool.bound_figures(hit=[1.0, 1.0, 0.5, 0.0], gate=[1, 0, 0, 0], label=[1, 1, 0, 0], pix=[1, 1, 1, 0],
                           inner=[0.9, 0.2, 0.0, 1.0])
    assert (f["with_defect_pixel"], f["labelled_defective"], f["slivers"]) == (3, 2, 1)
    assert f["gated"] == pytest.approx(1 / 3)
    assert f["ungated"] == pytest.approx(2.5 / 3)
    assert (f["labelled_gated"], f["labelled_ungated"]) == (pytest.approx(0.5), pytest.approx(1.0))
    # a perfect classifier gates the two labelled tiles on and the sliver off
    assert f["bound_these_maps"] == pytest.approx(2 / 3)
    assert f["bound_perfect_maps"] == pytest.approx(2 / 3)
    assert (f["missed"], f["found"], f["border_missed"], f["border_found"]) == (1, 1, 1.0, 0.0)


def test_no_miss_gives_no_border_share():
    f = tool.bound_figures(hit=[1.0], gate=[1], label=[1], pix=[1], inner=[1.0])
    assert f["missed"] == 0 and np.isnan(f["border_missed"])
