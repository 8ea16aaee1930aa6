"""Known-answer tests for kerasxai.metrics (hand-made masks and maps)."""

import math

import cv2
import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from kerasxai.metrics import (
    LocalizationMetrics,
    ProtocolMetrics,
    ThresholdFreeMetrics,
    prepare_maps,
    rank_models,
    upsample_bilinear,
)

S = 8


def square_mask(y0=2, y1=4, x0=2, x1=4, size=S):
    m = np.zeros((size, size), np.uint8)
    m[y0:y1, x0:x1] = 1
    return m


def run(scores, maps, masks, valid=None, **kw):
    m = LocalizationMetrics(**kw)
    m.update(np.asarray(scores, float), np.asarray(maps, float), np.asarray(masks), valid, labels=None)
    return m.result()


def test_perfect_map_scores_one_everywhere():
    mask = square_mask()
    r = run([0.9], [mask.astype(float)], [mask])
    for k in ("pooled_precision", "pooled_recall", "pooled_f1", "pooled_jaccard", "pooled_accuracy",
              "macro_f1", "pointing_game", "pxap", "pixel_auroc", "relevance_mass"):
        assert r[k] == pytest.approx(1.0), k


def test_inverted_map_scores_zero_and_pxap_falls_to_share():
    mask = square_mask()
    r = run([0.9], [1.0 - mask], [mask])
    share = mask.sum() / mask.size
    assert r["pooled_precision"] == 0 and r["pooled_recall"] == 0 and r["pooled_f1"] == 0
    assert r["pooled_jaccard"] == 0 and r["pooled_accuracy"] == 0
    assert r["pointing_game"] == 0 and r["relevance_mass"] == 0
    assert r["pixel_auroc"] == pytest.approx(0.0)
    assert r["pxap"] == pytest.approx(share)  # only the lowest threshold finds the defect


def test_defect_free_tile_with_low_score_predicts_nothing():
    mask = np.zeros((S, S), np.uint8)
    heat = np.random.default_rng(0).random((S, S))
    r = run([0.2], [heat], [mask])
    assert r["pooled_accuracy"] == 1.0  # every pixel is a true negative
    assert r["pooled_precision"] == 0.0 and r["pooled_recall"] == 0.0  # 0/0 -> 0
    assert r["defective_tiles"] == 0 and math.isnan(r["pointing_game"]) and math.isnan(r["macro_f1"])
    # the same tile called defective: the map's upper half becomes false positives
    r = run([0.9], [heat], [mask])
    assert r["pooled_accuracy"] < 1.0


def test_gated_off_defective_tile_is_a_miss():
    mask = square_mask()
    r = run([0.5], [mask.astype(float)], [mask])  # score must be > 0.5, not >=
    assert r["pooled_recall"] == 0 and r["pooled_precision"] == 0
    assert r["pointing_game"] == 0 and r["relevance_mass"] == 0
    assert r["pooled_accuracy"] == pytest.approx(1 - 4 / 64)
    assert r["pxap"] == pytest.approx(4 / 64)  # a gated map is all zeros
    # without gating the same map is perfect
    assert run([0.5], [mask.astype(float)], [mask], score_threshold=None)["pxap"] == pytest.approx(1.0)


def test_ungated_columns_score_gated_off_maps_as_if_they_passed():
    rng = np.random.default_rng(3)
    masks = np.stack([square_mask(), square_mask(4, 7, 1, 3), np.zeros((S, S), np.uint8)])
    maps = rng.random((3, S, S)) + masks  # informative but noisy maps
    scores = [0.2, 0.9, 0.1]  # two of three tiles gated off
    gated = run(scores, maps, masks, ungated=True)
    free = run(scores, maps, masks, score_threshold=None)
    for k in ("pooled_f1", "pointing_game", "pxap", "pixel_auroc", "relevance_mass"):
        assert gated[f"{k}_ungated"] == pytest.approx(free[k]), k
    assert gated["pxap"] == pytest.approx(run(scores, maps, masks)["pxap"])  # the gated part is unchanged
    assert gated["pointing_game"] < gated["pointing_game_ungated"]
    assert "pxap_ungated" not in run(scores, maps, masks)  # opt-in


@pytest.mark.parametrize("peak, hit", [((2, 3), 1.0), ((6, 6), 0.0), ((1, 2), 0.0)])
def test_pointing_game_peak_inside_or_outside(peak, hit):
    heat = np.zeros((S, S))
    heat[peak] = 1.0
    heat[0, 0] = 0.5
    assert run([0.9], [heat], [square_mask()])["pointing_game"] == hit


def test_pointing_game_ties_score_the_share_of_tied_peaks_inside():
    mask = square_mask()
    heat = np.zeros((S, S))
    heat[2, 2] = heat[7, 7] = 1.0  # one tied peak inside, one outside
    assert run([0.9], [heat], [mask])["pointing_game"] == pytest.approx(0.5)
    heat[3, 3] = 1.0  # two of three inside
    assert run([0.9], [heat], [mask])["pointing_game"] == pytest.approx(2 / 3)


def test_constant_map_predicts_nothing_and_is_uniform_elsewhere():
    mask = square_mask()
    share = 4 / 64
    r = run([0.9], [np.full((S, S), 3.0)], [mask])
    assert r["pooled_precision"] == 0 and r["pooled_recall"] == 0  # no predicted pixel
    assert r["pooled_accuracy"] == pytest.approx(1 - share)
    assert r["pointing_game"] == pytest.approx(share)  # every pixel ties
    assert r["relevance_mass"] == pytest.approx(share)
    assert r["pxap"] == pytest.approx(share) and r["pixel_auroc"] == pytest.approx(0.5)


def test_pxap_of_constant_maps_equals_defect_pixel_share_over_many_tiles():
    rng = np.random.default_rng(1)
    masks = (rng.random((5, S, S)) < 0.2).astype(np.uint8)
    masks[0] = 0  # a defect-free tile counts too
    const = rng.random((5, 1, 1)) * np.ones((5, 2, 2))
    r = run(np.full(5, 0.9), const, masks)
    assert r["pxap"] == pytest.approx(masks.sum() / masks.size)


def test_pooled_vs_per_tile_two_tiles_by_hand():
    # Tile A: mask 4 px, prediction hits 2 of them and 2 background px -> TP2 FP2 FN2 TN10.
    # Tile B: mask 1 px, prediction hits it and 5 background px       -> TP1 FP5 FN0 TN10.
    mA = np.zeros((4, 4)); mA[0, :] = 1
    pA = np.zeros((4, 4)); pA[0, :2] = 1; pA[1, :2] = 1
    mB = np.zeros((4, 4)); mB[3, 3] = 1
    pB = np.zeros((4, 4)); pB[3, 3] = 1; pB[2, :] = 1; pB[3, 0] = 1
    m = ProtocolMetrics()
    m.update([0.9, 0.9], np.stack([pA, pB]), np.stack([mA, mB]).astype(np.uint8), None)
    r = m.result()
    # pooled: TP3 FP7 FN2 TN20
    assert r["pooled_precision"] == pytest.approx(3 / 10)
    assert r["pooled_recall"] == pytest.approx(3 / 5)
    assert r["pooled_f1"] == pytest.approx(6 / 15)
    assert r["pooled_jaccard"] == pytest.approx(3 / 12)
    assert r["pooled_accuracy"] == pytest.approx(23 / 32)
    # per tile, averaged over the two defective tiles
    assert r["macro_precision"] == pytest.approx((2 / 4 + 1 / 6) / 2)
    assert r["macro_recall"] == pytest.approx((2 / 4 + 1 / 1) / 2)
    assert r["macro_f1"] == pytest.approx((4 / 8 + 2 / 7) / 2)
    assert r["macro_jaccard"] == pytest.approx((2 / 6 + 1 / 6) / 2)
    assert r["macro_accuracy"] == pytest.approx((12 / 16 + 11 / 16) / 2)
    assert r["tiles"] == 2 and r["defective_tiles"] == 2


def test_padding_never_counts():
    rng = np.random.default_rng(2)
    valid = np.zeros((1, S, S), np.uint8)
    valid[:, :, :5] = 1
    mask = square_mask()[None]
    heat = rng.random((1, S, S))
    a = run([0.9], heat, mask, valid)
    heat2, mask2 = heat.copy(), mask.copy()
    heat2[:, :, 5:] = 100.0  # a huge peak in the padding
    mask2[:, :, 5:] = 1  # and "defects" there
    b = run([0.9], heat2, mask2, valid)
    for k, v in a.items():
        assert b[k] == pytest.approx(v, nan_ok=True), k
    m = ProtocolMetrics()
    m.update([0.9], heat2, mask2, valid)
    assert m.tp + m.fp + m.fn + m.tn == 5 * S


def test_upsampling_matches_opencv_bilinear():
    maps = np.random.default_rng(3).random((2, 7, 7)).astype(np.float32)
    up = upsample_bilinear(maps, 224)
    for i in range(2):
        ref = cv2.resize(maps[i], (224, 224), interpolation=cv2.INTER_LINEAR)
        np.testing.assert_allclose(up[i], ref, atol=1e-5)


def test_streaming_equals_one_batch():
    rng = np.random.default_rng(4)
    n = 9
    scores = rng.random(n)
    maps = rng.random((n, 4, 4))
    masks = (rng.random((n, 16, 16)) < 0.1).astype(np.uint8)
    parts = LocalizationMetrics()
    labels = rng.random(n) > 0.5
    whole = LocalizationMetrics()
    whole.update(scores, maps, masks, labels=labels)
    for sl in (slice(0, 2), slice(2, 7), slice(7, 9)):
        parts.update(scores[sl], maps[sl], masks[sl], labels=labels[sl])
    a, b = whole.result(), parts.result()
    for k in a:
        assert b[k] == pytest.approx(a[k], nan_ok=True), k


def test_pxap_and_auroc_match_sklearn_on_quantized_maps():
    rng = np.random.default_rng(5)
    n = 6
    masks = (rng.random((n, S, S)) < 0.3).astype(np.uint8)
    # maps already on the 0.25 grid of the 0..255 scale, with exact 0 and 255 per tile
    q = rng.integers(0, 1021, size=(n, S, S)).astype(float)
    q[:, 0, 0], q[:, 0, 1] = 0, 1020
    maps = q / 1020.0
    m = ThresholdFreeMetrics(score_threshold=None)
    m.update(np.ones(n), maps, masks)
    r = m.result()
    y, s = masks.ravel(), q.ravel()
    assert r["pxap"] == pytest.approx(average_precision_score(y, s), abs=1e-9)
    assert r["pixel_auroc"] == pytest.approx(roc_auc_score(y, s), abs=1e-9)


def test_pr_curve_passes_through_the_protocol_point():
    rng = np.random.default_rng(6)
    n = 5
    scores = rng.random(n) + 0.3
    maps = rng.random((n, 5, 5))
    masks = (rng.random((n, 20, 20)) < 0.2).astype(np.uint8)
    m = LocalizationMetrics()
    m.update(scores, maps, masks)
    r = m.result()
    c = m.threshold_free.curve()
    at = c["threshold"] >= 127
    i = np.flatnonzero(at)[-1]  # the lowest threshold >= 127 seen
    assert c["recall"][i] == pytest.approx(r["pooled_recall"])
    assert c["precision"][i] == pytest.approx(r["pooled_precision"])


def test_classification_accuracy_uses_the_score_threshold():
    m = LocalizationMetrics()
    masks = np.zeros((4, S, S), np.uint8)
    m.update([0.9, 0.2, 0.51, 0.5], np.random.default_rng(0).random((4, 2, 2)), masks, labels=[1, 0, 0, 1])
    assert m.result()["classification_accuracy"] == pytest.approx(0.5)


def test_ranking_reproduces_thesis_table_3_5_cnns():
    # Table 3.4 (PCB), CNN rows: F1, Precision, Jaccard, Accuracy, Recall, Pointing game
    t34 = {
        "EfficientNetV2_s_d": (0.5482, 0.8918, 0.3776, 0.9962, 0.3958, 0.823),
        "EfficientNetV2_s": (0.4652, 0.7886, 0.3031, 0.9956, 0.321, 0.7867),
        "MobileNetV3_large_d": (0.6397, 0.5933, 0.4703, 0.9954, 0.6941, 0.7598),
        "MobileNetV3_large": (0.5214, 0.4943, 0.3527, 0.9941, 0.5518, 0.5701),
        "ViT_tiny_fmax": (0.5142, 0.7543, 0.346, 0.9957, 0.3901, 0.7724),
    }
    keys = ["f1", "precision", "jaccard", "accuracy", "recall", "pointing"]
    rows = {k: dict(zip(keys, v)) for k, v in t34.items()}
    groups = {k: ("vit" if "ViT" in k else "cnn") for k in rows}
    r = rank_models(rows, keys, groups=groups)
    # Table 3.5
    assert [r["EfficientNetV2_s_d"][k] for k in keys] == [2, 1, 2, 1, 3, 1]
    assert [r["MobileNetV3_large"][k] for k in keys] == [3, 4, 3, 4, 2, 4]
    assert round(r["EfficientNetV2_s_d"]["average_rank"], 2) == 1.67
    assert r["MobileNetV3_large_d"]["average_rank"] == 2
    assert r["ViT_tiny_fmax"]["average_rank"] == 1  # alone in its group


def test_ranking_ties_share_ranks_and_nan_ranks_last():
    r = rank_models({"a": {"x": 1.0, "loss": 0.1}, "b": {"x": 1.0, "loss": 0.3}, "c": {"x": float("nan"), "loss": 0.2}},
                    ["x", "loss"], lower_is_better=["loss"])
    assert r["a"]["x"] == r["b"]["x"] == 1.5 and r["c"]["x"] == 3
    assert r["a"]["loss"] == 1 and r["c"]["loss"] == 2 and r["b"]["loss"] == 3


def test_pixel_cut_is_the_least_map_value_the_mask_keeps():
    """``map >= cut`` is ``map * 255 >= pixel_threshold`` in float32, for every threshold."""
    from kerasxai.metrics.protocol import pixel_cut

    k = np.float32(255)
    for thr in range(256):
        cut = np.float32(pixel_cut(thr))
        assert cut * k >= thr and np.nextafter(cut, np.float32(-np.inf)) * k < thr, thr


@pytest.mark.parametrize("thr", [0, 1, 126.5, 127, 127.3, 254, 255])
def test_defect_mask_is_the_thresholded_product(thr):
    from kerasxai.metrics.protocol import defect_mask, pixel_cut

    rng = np.random.default_rng(6)
    cut = np.float32(pixel_cut(thr))
    near = np.array([np.nextafter(cut, np.float32(-1)), cut, np.nextafter(cut, np.float32(2))], np.float32)
    maps = np.concatenate([rng.random(5000).astype(np.float32), near, np.float32([0, 1])])
    assert np.array_equal(defect_mask(maps, thr), maps * np.float32(255) >= np.float32(thr))


def test_tile_maps_is_what_prepare_maps_returns():
    from kerasxai.metrics.protocol import tile_maps

    rng = np.random.default_rng(8)
    scores, heat = rng.random(6), rng.normal(size=(6, 5, 5)).astype(np.float32)
    heat[1] = -2.0
    valid = rng.random((6, 20, 20)) < 0.8
    p = prepare_maps(scores, heat, np.zeros((6, 20, 20)), valid, score_threshold=0.4)
    t = tile_maps(scores, heat, valid, 20, score_threshold=0.4)
    for k in t._fields:
        assert np.array_equal(getattr(t, k), getattr(p, k)), k
    assert t.constant[1] and not t.ungated[1].any()
    assert np.array_equal(t.gate, scores > 0.4)
