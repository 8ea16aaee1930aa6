"""The shipped DeepPCB locator: loadable by name, and it locates the defects of the bundled sample.

The sample's pairs are held out of the shipped model's training and validation data, so these
figures are on boards it never saw. A broken weights file, a changed preprocessing or a
regression in the CAM head or in predict's region extraction fails here.
"""

import json

import pytest

from kerasxai.sample import SHIPPED, sample_board_figures, sample_boards
from kerasxai.metrics.boards import board_figures, boxes_overlap
from kerasxai.pretrained import PretrainedError, load_pretrained, pretrained_dir, pretrained_names
from kerasxai.runs import RunError, resolve_run


def test_boxes_overlap_and_board_figures():
    assert boxes_overlap((0, 0, 10, 10), (9, 9, 20, 20)) and not boxes_overlap((0, 0, 10, 10), (10, 0, 20, 10))
    f = board_figures([
        (True, [(0, 0, 10, 10)], [(5, 5, 8, 8), (50, 50, 60, 60)]),  # flagged, one of two boxes hit
        (False, [], [(1, 1, 2, 2)]),  # missed board
        (True, [(0, 0, 5, 5)], []),  # false alarm on a defect-free board
        (False, [], []),
    ])
    assert (f.defective_flagged, f.defective, f.good_flagged, f.good, f.boxes_hit, f.boxes) == (1, 2, 1, 2, 1, 3)
    assert f.hit_rate == pytest.approx(1 / 3) and "1 of 3 defect boxes hit" in f.summary()


def test_unknown_name_lists_the_shipped_models(tmp_path):
    assert SHIPPED in pretrained_names()
    with pytest.raises(PretrainedError, match=SHIPPED):
        pretrained_dir("deeppcb-nope")
    with pytest.raises(RunError, match=f"neither a run folder nor a shipped model.*{SHIPPED}"):
        resolve_run(tmp_path / "deeppcb-nope")
    assert resolve_run(SHIPPED) == pretrained_dir(SHIPPED)
    assert resolve_run(tmp_path) == tmp_path  # a folder that exists wins


def test_model_card_names_the_held_out_sample_pairs():
    card = (pretrained_dir(SHIPPED) / "MODEL_CARD.md").read_text()
    cfg, _ = load_pretrained(SHIPPED)
    pairs = sorted(cfg.data.split.holdout)
    assert len(pairs) == 8 and all(p in card for p in pairs)
    sample = sorted(image.stem.split("_")[0] for image, boxes in sample_boards() if boxes)
    assert pairs == sample


@pytest.mark.slow
def test_shipped_model_locates_the_sample_defects(tmp_path):
    from kerasxai.predict import main

    out = tmp_path / "preds"
    assert main(["--run", SHIPPED, *[str(image) for image, _ in sample_boards()], "--out", str(out),
                 "--no-progress"]) == 0
    f = sample_board_figures(out)
    assert (f.defective, f.good) == (8, 8)
    assert f.defective_flagged >= 7, f.summary()
    assert f.good_flagged <= 1, f.summary()
    assert f.hit_rate >= 0.70, f.summary()
    summary = (out / "summary.csv").read_text()
    assert summary.count(",ok,") == 16
    result = json.loads((out / "00041000_test.json").read_text())
    assert result["tile_size"] == 224 and result["regions"]
