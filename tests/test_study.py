"""tools/reproduce_study.py: RESULTS.md is rendered from saved files only, the same way twice."""

import json
from argparse import Namespace

import pytest
from conftest import load_tool


@pytest.fixture(scope="module")
def study():
    return load_tool("reproduce_study.py")


def _row(model, kind, f1, pxap, ungated_pxap, pointing=0.5):
    keys = ["pooled_f1", "pooled_precision", "pooled_jaccard", "pooled_accuracy", "pooled_recall", "pointing_game"]
    row = {k: f1 for k in keys} | {"pointing_game": pointing, "model": model, "kind": kind, "pxap": pxap,
                                   "pixel_auroc": 0.6, "relevance_mass": 0.1, "classification_accuracy": 0.7}
    return row | {"pxap_ungated": ungated_pxap, "pooled_f1_ungated": f1 + 0.01, "pointing_game_ungated": pointing,
                  "pixel_auroc_ungated": 0.7, "relevance_mass_ungated": 0.2}


def test_results_render_from_saved_files_and_check_each_conclusion(study, tmp_path):
    out = tmp_path / "study"
    (out / "report").mkdir(parents=True)
    metrics = [
        _row("mobilenetv3_large", "cnn", 0.30, 0.20, 0.25),
        _row("mobilenetv3_large_d", "cnn", 0.40, 0.30, 0.35),  # downscaled better: holds
        _row("vit_tiny_patch16_224_fmean", "transformer", 0.10, 0.05, 0.06),
        _row("vit_tiny_patch16_224_fmax (model)", "transformer", 0.20, 0.06, 0.07),  # max best: holds
        _row("vit_tiny_patch16_224_fmin", "transformer", 0.05, 0.04, 0.05),
    ]
    baselines = [{**metrics[1], "model": "mobilenetv3_large_d", "method": "CAM (single pass)"},
                 {**_row("mobilenetv3_large_d", "cnn", 0.0, 0.02, 0.02), "method": "Uniform"}]
    results = {"context": {"tiles": 400}, "metrics": metrics, "baselines": baselines,
               "ranking": [{"model": m["model"], "average_rank": 1.0, "average_rank_all": 1.0} for m in metrics]}
    (out / "report" / "results.json").write_text(json.dumps(results))
    state = {"steps": {"tune:mobilenetv3_large_d": {
        "seconds": 600.0, "config": "configs/deeppcb_mobilenet_d.yaml", "cfg_name": "deeppcb_mobilenet_d",
        "run": "study/x/runs/r1", "learning_rate": 0.002, "batch_size": 32, "val_loss": 0.6, "val_accuracy": 0.7,
        "test_loss": 0.6, "test_accuracy": 0.71, "seconds_per_epoch": 100.0, "epochs": 3}}}
    args = Namespace(dataset="deeppcb", budget="small", weights=None)
    text = study.render_results(args, out, state)
    assert text == study.render_results(args, out, state)  # the report step regenerates the same text
    assert "| mobilenetv3_large_d | 0.002 | 32 | 0.6000 | 70.00 | 71.00 | 100.0 | [run](study/x/runs/r1)" in text
    assert "| mobilenetv3_large_d | 0.4100 | 0.5000 | 0.3500 | 0.7000 | 0.2000 |" in text  # the ungated table
    assert "**Downscaled CNNs localize more precisely** — thesis protocol: holds; ungated maps: holds" in text
    assert "**Max fusion gives the best F1 for transformers** — thesis protocol: holds" in text
    assert "**CNN CAM beats ViT rollout** — thesis protocol: holds" in text
    assert "for all models (mobilenetv3_large_d 0.3500 vs 0.0200)" in text
