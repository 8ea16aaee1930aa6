"""Evaluation library, report writer and the `python -m kerasxai.evaluate` CLI."""

import csv
import json
import math

import keras
import numpy as np
import pytest

from kerasxai.config import EvalConfig, load_config, to_yaml
from kerasxai.evaluation import ModelEvaluation, OverlayTile, evaluate_model, select_overlay_tiles
from kerasxai.metrics import LocalizationMetrics
from kerasxai.report import MAP_METRICS, metrics_rows, ranking_rows, write_report

S = 64


def synthetic_batches(n_batches=2, batch=4, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n_batches):
        masks = np.zeros((batch, S, S), np.uint8)
        for j in range(batch):
            if (i + j) % 2 == 0:
                y, x = rng.integers(0, S - 16, 2)
                masks[j, y : y + 16, x : x + 12] = 1
        images = rng.integers(0, 255, (batch, S, S, 3)).astype(np.uint8)
        images[masks.astype(bool)] = 255
        valid = np.ones((batch, S, S), np.uint8)
        valid[:, :, 60:] = 0 if i == 1 else 1  # some padding
        out.append({
            "image": images, "mask": masks, "valid": valid, "label": masks.reshape(batch, -1).max(1).astype(np.float32),
            "source": np.array([f"img{i}_{j}".encode() for j in range(batch)]),
            "y": np.zeros(batch, np.int32), "x": np.full(batch, j, np.int32),
        })
    return out


def test_select_overlay_tiles_prefers_distinct_sources_and_respects_limit():
    tiles = [
        {"split": "test", "source": "a", "y": 0, "x": 0, "label": 0},
        {"split": "test", "source": "a", "y": 0, "x": 64, "label": 1},
        {"split": "test", "source": "a", "y": 64, "x": 0, "label": 1},
        {"split": "train", "source": "t", "y": 0, "x": 0, "label": 1},
        {"split": "test", "source": "b", "y": 0, "x": 0, "label": 1},
        {"split": "test", "source": "c", "y": 0, "x": 0, "label": 1},
    ]
    assert select_overlay_tiles(tiles, 2, "test") == [("a", 0, 64), ("b", 0, 0)]
    assert select_overlay_tiles(tiles, 3, "test", limit=4) == [("a", 0, 64), ("b", 0, 0), ("a", 64, 0)]
    assert select_overlay_tiles(tiles, 5, "train") == [("t", 0, 0)]


@pytest.mark.slow
def test_transformer_sweep_equals_set_rollout_and_predict():
    from kerasxai.models import build_model, set_rollout

    keras.utils.set_random_seed(0)
    model = build_model("vit_tiny_patch16_224", input_shape=(S, S, 3), fusion="max", discard_ratio=0.9)
    batches = synthetic_batches()
    cfg = EvalConfig(fusions=["max", "min"], discard_ratios=[0.0, 0.5], baselines=False, score_threshold=0.0)
    ev = evaluate_model(model, batches, eval_cfg=cfg, model_name="vit_tiny_patch16_224", progress=False)
    assert ev.sweep["discard_ratios"] == [0.0, 0.5, 0.9]  # the model's own ratio is added
    own = ev.sweep["metrics"]["max"][2]
    for k, v in own.items():  # ev.metrics also has the ungated columns, which the sweep does not keep
        assert ev.metrics[k] == pytest.approx(v, nan_ok=True), k
    assert ev.metrics["pxap_ungated"] == pytest.approx(ev.metrics["pxap"])  # score_threshold 0: nothing gated
    # another cell of the grid: what the same trained model gives after set_rollout
    set_rollout(model, fusion="min", discard_ratio=0.5)
    ref = LocalizationMetrics(score_threshold=0.0)
    for b in batches:
        out = model.predict_on_batch(b["image"].astype(np.float32))
        ref.update(out["score"], out["heatmap"], b["mask"], b["valid"], b["label"])
    cell = ev.sweep["metrics"]["min"][1]
    for k, v in ref.result().items():
        assert cell[k] == pytest.approx(v, rel=1e-5, nan_ok=True), k


@pytest.mark.slow
def test_cnn_evaluation_scores_baselines_on_the_same_tiles():
    from kerasxai.models import build_model

    keras.utils.set_random_seed(1)
    model = build_model("mobilenetv3_large_d", input_shape=(S, S, 3))
    keys = [("img1_2", 0, 3), ("img0_0", 0, 3)]
    ev = evaluate_model(model, synthetic_batches(), eval_cfg=EvalConfig(score_threshold=0.0),
                        model_name="mobilenetv3_large_d", overlay_keys=keys, progress=False)
    assert set(ev.baselines) == {"Grad-CAM", "Grad-CAM++", "Uniform", "Centre Gaussian"}
    assert ev.tiles == 8 and ev.metrics["defective_tiles"] == 4
    assert [t.key for t in ev.overlays] == keys  # in the requested order
    for m in [ev.metrics, *ev.baselines.values()]:
        assert m["classification_accuracy"] == ev.metrics["classification_accuracy"]  # same scores
        for k in MAP_METRICS:
            assert 0.0 <= m[k] <= 1.0, k
    # uniform map: no predicted pixel; its pointing game is the mean mask share of the tiles
    u = ev.baselines["Uniform"]
    assert u["pooled_precision"] == 0.0 and u["pooled_recall"] == 0.0
    assert ev.overlays[0].heatmap.shape == (4, 4)


# ----------------------------------------------------------------------------- report


def fake_evaluation(label, model, kind, seed, sweep=False):
    rng = np.random.default_rng(seed)
    batches = synthetic_batches(seed=seed)
    acc = LocalizationMetrics(score_threshold=0.0)
    for b in batches:
        acc.update(rng.random(4), rng.random((4, 4, 4)) + b["mask"][:, ::16, ::16], b["mask"], b["valid"], b["label"])
    m = acc.result()
    ev = ModelEvaluation(label=label, model=model, run=f"runs/{label}", kind=kind, metrics=m, tiles=8,
                         baselines={"Uniform": dict(m, pxap=0.1)})
    if kind == "transformer":
        ev.fusion, ev.discard_ratio = "max", 0.9
        ratios = [0.0, 0.9]
        ev.sweep = {"fusions": ["mean", "max"], "discard_ratios": ratios,
                    "metrics": {f: [dict(m, pooled_f1=m["pooled_f1"] * (1 + i + 2 * k)) for i in range(2)]
                                for k, f in enumerate(["mean", "max"])}}
    b = batches[0]
    ev.overlays = [OverlayTile(("img0_0", 0, 0), b["image"][0], b["mask"][0], b["valid"][0], 0.9, rng.random((4, 4)))]
    return ev


def test_report_writes_tables_figures_and_offline_html(tmp_path):
    evs = [
        fake_evaluation("mobilenetv3_large", "mobilenetv3_large", "cnn", 0),
        fake_evaluation("mobilenetv3_large_d", "mobilenetv3_large_d", "cnn", 1),
        fake_evaluation("vit_tiny_patch16_224", "vit_tiny_patch16_224", "transformer", 2),
    ]
    written = write_report(evs, tmp_path / "rep", context={"split": "test"})
    rep = tmp_path / "rep"
    for name in ["metrics.csv", "metrics.md", "ranking.csv", "ranking.md", "baselines.csv", "baselines.md",
                 "sweep.csv", "results.json", "report.html", "figures/overlays.png",
                 "figures/full_vs_downscaled.png", "figures/sweep_vit_tiny_patch16_224.png"]:
        assert (rep / name).is_file() and name in written, name
    assert not list(rep.rglob("*.tmp"))
    rows = list(csv.DictReader(open(rep / "metrics.csv")))
    assert [r["model"] for r in rows] == ["mobilenetv3_large", "mobilenetv3_large_d", "vit_tiny_patch16_224_fmean",
                                         "vit_tiny_patch16_224_fmax (model)"]
    # the transformer's rows come from the sweep at its own discard ratio (0.9, index 1)
    assert float(rows[3]["pooled_f1"]) == pytest.approx(evs[2].metrics["pooled_f1"] * 4, abs=1e-4)
    ranks = {r["model"]: r for r in csv.DictReader(open(rep / "ranking.csv"))}
    assert float(ranks["vit_tiny_patch16_224_fmax (model)"]["pooled_f1"]) == 1.0  # ranked inside its group
    assert {float(ranks[m]["pooled_f1"]) for m in ("mobilenetv3_large", "mobilenetv3_large_d")} == {1.0, 2.0}
    html = (rep / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3
    assert "src='http" not in html and 'src="http' not in html and "<link" not in html  # nothing to fetch
    assert "Ranking by average rank" in html and "per tile" in html
    doc = json.loads((rep / "results.json").read_text())
    assert [m["label"] for m in doc["models"]] == [e.label for e in evs]
    md = (rep / "metrics.md").read_text()
    assert md.startswith("| Model | F1 (pooled) |")


def test_ranking_rows_average_over_thesis_metrics():
    rows = metrics_rows([fake_evaluation("a", "mobilenetv3_large", "cnn", 0), fake_evaluation("b", "mobilenetv3_large_d", "cnn", 1)])
    r = ranking_rows(rows)
    for row in r:
        thesis = [row[m] for m in MAP_METRICS[:6]]
        assert row["average_rank"] == pytest.approx(np.mean(thesis))
        assert row["average_rank_all"] == pytest.approx(np.mean([row[m] for m in MAP_METRICS]))


# -------------------------------------------------------------------------------- CLI


def test_cli_rejects_bad_input_with_one_line(tmp_path, capsys):
    from kerasxai.evaluate import main

    assert main(["--runs", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "neither a run folder nor a shipped model" in err[0]
    assert main(["--runs", str(tmp_path), "model.name=x"]) == 2
    assert "eval.*" in capsys.readouterr().err


def make_run(root, name, model_name, cache, **head):
    cfg = load_config(None, [
        f"name={name}", "data.reader=synthetic", "data.options={count: 8, height: 128, width: 128, seed: 3}",
        f"data.cache_dir={cache}", "data.tile.size=64", "data.tile.overlap=0",
        "data.split.train=0.5", "data.split.val=0.25", "data.split.test=0.25", f"model.name={model_name}",
        "eval.batch_size=4", "eval.overlay_tiles=2", "eval.discard_ratios=[0.0,0.5]",
    ])
    run = root / f"{name}-20260101-000000"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(to_yaml(cfg))
    from kerasxai.models import build_model

    keras.utils.set_random_seed(0)
    build_model(model_name, input_shape=(64, 64, 3), **head).save(run / "best.keras")
    return run


@pytest.mark.slow
def test_cli_end_to_end_on_run_folders(tmp_path, capsys):
    from kerasxai.evaluate import main

    cache = tmp_path / "cache"
    runs = [
        make_run(tmp_path / "runs", "mob", "mobilenetv3_large", cache),
        make_run(tmp_path / "runs", "mobd", "mobilenetv3_large_d", cache),
        make_run(tmp_path / "runs", "vit", "vit_tiny_patch16_224", cache, fusion="mean", discard_ratio=0.5),
    ]
    out = tmp_path / "report"
    code = main(["--runs", *map(str, runs), "--out", str(out), "--no-progress", "eval.score_threshold=0.0"])
    assert code == 0, capsys.readouterr().err
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    names = [r["model"] for r in rows]
    assert names[:2] == ["mobilenetv3_large", "mobilenetv3_large_d"]
    assert "vit_tiny_patch16_224_fmean (model)" in names and len(names) == 5
    for r in rows:
        assert 0 <= float(r["pooled_accuracy"]) <= 1 and not math.isnan(float(r["pxap"]))
    figures = ["figures/overlays.png", "figures/full_vs_downscaled.png", "figures/sweep_vit_tiny_patch16_224.png",
               "figures/pr_curves.png"]
    for f in figures:
        assert (out / f).stat().st_size > 1000
    base = {(r["model"], r["method"]) for r in csv.DictReader(open(out / "baselines.csv"))}
    assert ("mobilenetv3_large_d", "Grad-CAM++") in base and ("vit_tiny_patch16_224", "Gradient rollout") in base
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(figures)
    assert "report:" in capsys.readouterr().out


@pytest.mark.slow
def test_cli_scores_other_data_as_a_whole_test_split(tmp_path, capsys):
    from kerasxai.evaluate import main

    run = make_run(tmp_path / "runs", "mobd", "mobilenetv3_large_d", tmp_path / "cache")
    out = tmp_path / "report"
    # other synthetic images (seed 4): all 8 images, 4 tiles each, are the test split
    code = main(["--runs", str(run), "--out", str(out), "--no-progress", "data.options.seed=4"])
    assert code == 0, capsys.readouterr().err
    doc = json.loads((out / "results.json").read_text())
    assert doc["models"][0]["tiles"] == 32
    assert doc["context"]["data"].startswith("synthetic") and "seed=4" in doc["context"]["data"]
    assert "seed=4" in capsys.readouterr().out

    assert main(["--runs", str(run), "--out", str(out), "data.tile.size=32"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "data.tile.size" in err[0] and "64" in err[0]
    assert main(["--runs", str(run), "--split", "val", "data.options.seed=4"]) == 2
    assert "test split" in capsys.readouterr().err


def test_rollout_sweep_equals_the_models_rollout_with_ties():
    from kerasxai.models.rollout import rollout_sweep
    from kerasxai.models.rollout import rollout

    rng = np.random.default_rng(0)
    for prefix in (1, 2):
        t = 16 + prefix
        att = [rng.random((3, 2, t, t)).astype(np.float32) for _ in range(3)]
        att[1][:, :, :4, :] = 0.25  # many tied entries
        att = [a / a.sum(-1, keepdims=True) for a in att]
        maps = rollout_sweep(att, ["mean", "max", "min"], [0.0, 0.3, 0.9], prefix)
        for (f, r), h in maps.items():
            ref = keras.ops.convert_to_numpy(rollout(att, f, r, prefix))
            np.testing.assert_allclose(h, ref, rtol=1e-5, atol=1e-7, err_msg=f"{f} {r} prefix {prefix}")
