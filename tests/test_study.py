"""tools/reproduce_study.py: RESULTS.md is rendered from saved files only, the same way twice."""

import json
from argparse import Namespace

import pytest
from conftest import history_run, load_tool


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


def _cpu_args(**extra):
    return Namespace(**({"dataset": "deeppcb", "budget": "cpu", "weights": None, "overrides": []} | extra))


@pytest.mark.parametrize("recipe", [None, "tmp"])
def test_cpu_budget_trains_every_model_with_the_recipe(study, tmp_path, monkeypatch, recipe):
    """The recipe's train keys for every model (read from the recipe file), its pooling for the CNNs
    only, full epochs, every validation / test tile, a search space around its rate and batch size."""
    import yaml

    from kerasxai import tuning
    from kerasxai.config import load_config

    if recipe:
        path = tmp_path / "recipe.yaml"
        path.write_text("model: {name: mobilenetv3_large_d, pooling: lse}\n"
                        "train: {epochs: 5, steps_per_epoch: 100, batch_size: 16, learning_rate: 0.004, warmup_epochs: 2}\n")
        monkeypatch.setitem(study.BUDGETS["cpu"], "recipe", str(path))
    doc = yaml.safe_load((study.REPO / study.BUDGETS["cpu"]["recipe"]).read_text())
    train, pooling = doc["train"], doc["model"]["pooling"]
    for model, stem in study.MODELS:
        overrides = study.search_overrides(_cpu_args(), tmp_path, model, {"steps": {}})
        keys = {o.split("=", 1)[0] for o in overrides}
        assert {f"train.{k}" for k in train} <= keys, model
        cfg = load_config(study.config_path("deeppcb", stem), overrides)
        tuning.check_config(cfg)
        t, cnn = cfg.train, model in study.CNNS
        assert cfg.model.name == model and cfg.tune.trials == study.BUDGETS["cpu"]["trials"]
        for key, value in train.items():
            if key not in ("epochs", "steps_per_epoch", "learning_rate"):
                assert getattr(t, key) == value, (model, key)
        assert t.steps_per_epoch is None and t.max_val_tiles is None and t.max_test_tiles is None
        assert cfg.tune.epochs == t.epochs and (t.epochs == train["epochs"] if cnn else t.epochs > train["epochs"])
        lo, hi = tuning.lr_range(cfg)
        assert lo < t.learning_rate < hi and (lo < train["learning_rate"] < hi if cnn else hi < train["learning_rate"])
        assert train["batch_size"] in cfg.tune.batch_sizes
        assert cfg.model.pooling == (pooling if cnn else "avg"), model
    assert not any(o.startswith("eval.max_tiles") for o in study.BUDGETS["cpu"]["eval"])


def test_cpu_budget_names_a_missing_recipe_key(study, tmp_path, monkeypatch):
    path = tmp_path / "recipe.yaml"
    path.write_text("train: {epochs: 5, batch_size: 16}\n")
    monkeypatch.setitem(study.BUDGETS["cpu"], "recipe", str(path))
    with pytest.raises(study.StudyError, match=r"recipe\.yaml: train\.learning_rate is not set"):
        study.budget_overrides("cpu", "vit_tiny_patch16_224")


def test_eta_weighs_each_search_by_its_passes(study):
    state = {"steps": {"tune:mobilenetv3_large": {"seconds": 1000.0}}}
    small = study.eta_seconds(state, ["tune:vit_tiny_patch16_224"], "small")
    cpu = study.eta_seconds(state, ["tune:vit_tiny_patch16_224"], "cpu")
    assert small == pytest.approx(1000.0 * study.COST["vit_tiny_patch16_224"] / study.COST["mobilenetv3_large"])
    assert cpu == pytest.approx(small * study.BUDGETS["cpu"]["passes"]["transformer"])


@pytest.mark.parametrize("budget", ["small", "cpu"])
def test_searches_run_cheapest_first_and_the_distilled_deit_after_every_cnn(study, budget):
    order = [m for m, _ in study.run_order(study.MODELS, budget)]
    assert sorted(order) == sorted(m for m, _ in study.MODELS)
    assert order[-1] == "deit_tiny_distilled_patch16_224"
    costs = [study.cost(budget, m) for m in order[:-1]]
    assert costs == sorted(costs)
    # the EfficientNetV2-S pair, the dearest CNNs, comes after the transformers they would hold up
    assert order.index("vit_tiny_patch16_224") < order.index("efficientnetv2_s")


def test_a_rerun_skips_finished_searches_and_the_evaluation_of_the_same_runs(study, tmp_path, monkeypatch):
    """Ctrl-C during the second search keeps the first; each rerun runs only what is left, and the
    evaluation again only when the best runs changed (or --report-only asks)."""
    calls, interrupt = [], {"mobilenetv3_large"}

    def search(args, out, state, model, stem):
        calls.append(model)
        if model in interrupt:
            interrupt.discard(model)
            raise KeyboardInterrupt
        state["steps"][f"tune:{model}"] = {"seconds": 1.0, "run": f"runs/{model}", "test_accuracy": 0.5}

    def evaluation(args, out, state):
        calls.append("evaluate")
        (out / "report").mkdir(exist_ok=True)
        (out / "report" / "results.json").write_text("{}")
        state["steps"]["evaluate"] = {"seconds": 1.0, "runs": study.best_runs(state)}

    monkeypatch.setattr(study, "run_search", search)
    monkeypatch.setattr(study, "run_evaluation", evaluation)
    monkeypatch.setattr(study, "write_results", lambda args, out, state: out / "RESULTS.md")
    out = tmp_path / "study"
    argv = ["--budget", "cpu", "--out", str(out), "--models", "mobilenetv3_large,mobilenetv3_large_d,vit_tiny_patch16_224"]
    assert study.main(argv) == 130
    assert calls == ["mobilenetv3_large_d", "mobilenetv3_large"]  # cheapest first
    assert list(json.loads((out / "state.json").read_text())["steps"]) == ["tune:mobilenetv3_large_d"]
    calls.clear()
    assert study.main(argv) == 0
    assert calls == ["mobilenetv3_large", "vit_tiny_patch16_224", "evaluate"]
    calls.clear()
    assert study.main(argv) == 0 and calls == []  # everything done: nothing runs again
    state = json.loads((out / "state.json").read_text())
    state["steps"]["tune:vit_tiny_patch16_224"]["run"] = "runs/another"  # a search redone by hand
    (out / "state.json").write_text(json.dumps(state))
    assert study.main(argv) == 0 and calls == ["evaluate"]
    calls.clear()
    assert study.main([*argv, "--report-only"]) == 0 and calls == ["evaluate"]


@pytest.mark.parametrize("signum", ["SIGTERM", "SIGINT"])
def test_an_interrupted_study_lets_its_step_stop_and_waits_for_it(study, tmp_path, signum):
    """`kill PID` or Ctrl-C of the study: the step gets one SIGINT (stop at a batch end) and the
    study waits for it; the step's output is in its log."""
    import os
    import signal
    import sys
    import threading
    import time

    signum = getattr(signal, signum)

    log = tmp_path / "logs" / "step.log"
    child = ("import signal, sys, time\n"
             "def stop(*a):\n    print('stopping at the batch end', flush=True); sys.exit(130)\n"
             "signal.signal(signal.SIGINT, stop)\nprint('re' + 'ady', flush=True)\ntime.sleep(60)\n")

    def kill_when_ready():
        end = time.monotonic() + 30
        while time.monotonic() < end and not (log.is_file() and "\nready" in log.read_text()):
            time.sleep(0.1)
        os.kill(os.getpid(), signum)

    previous = signal.signal(signal.SIGTERM, study._on_sigterm)
    # as in a terminal: Ctrl-C raises KeyboardInterrupt (pytest-xdist workers ignore SIGINT)
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        threading.Thread(target=kill_when_ready, daemon=True).start()
        t0 = time.monotonic()
        with pytest.raises(study.Terminated if signum == signal.SIGTERM else KeyboardInterrupt):
            study.run_logged([sys.executable, "-c", child], log, "step")
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)
    assert time.monotonic() - t0 < 30
    assert "stopping at the batch end" in log.read_text()


def test_results_name_each_search_space_and_the_overrides_per_model(study, tmp_path):
    out = tmp_path / "study"
    (out / "report").mkdir(parents=True)
    (out / "report" / "results.json").write_text(json.dumps({"context": {"tiles": 3600}, "metrics": [], "ranking": []}))
    state = {"steps": {}}
    for model in ("mobilenetv3_large", "vit_tiny_patch16_224"):
        overrides = study.budget_overrides("cpu", model)
        space = {"tune.lr_min": 0.001 if model in study.CNNS else 0.0001, "tune.lr_max": 0.004,
                 "tune.batch_sizes": [32, 64], "tune.epochs": 11 if model in study.CNNS else 22}
        (out / "tuning" / model).mkdir(parents=True)
        (out / "tuning" / model / "search.json").write_text(json.dumps(space))
        state["steps"][f"tune:{model}"] = {"cfg_name": model, "run": f"runs/{model}", "learning_rate": 0.002,
                                           "batch_size": 32, "val_loss": 0.2, "val_accuracy": 0.9, "test_loss": 0.2,
                                           "test_accuracy": 0.9, "overrides": overrides, "backend": "tensorflow"}
    text = study.render_results(_cpu_args(), out, state)
    assert "| mobilenetv3_large | 0.001 to 0.004 | 32, 64 | 11 |" in text
    assert "| vit_tiny_patch16_224 | 0.0001 to 0.004 | 32, 64 | 22 |" in text
    cnn, vit = (" ".join(state["steps"][f"tune:{m}"]["overrides"]) for m in ("mobilenetv3_large", "vit_tiny_patch16_224"))
    assert f"mobilenetv3_large: `{cnn}`; vit_tiny_patch16_224: `{vit}`; evaluation `all test tiles`" in text
    assert "backend tensorflow;" in text and "train for the recipe's passes over every training tile" in text


def test_results_show_every_trials_curve_and_what_it_reached(study, tmp_path):
    out = tmp_path / "study"
    (out / "report").mkdir(parents=True)
    (out / "report" / "results.json").write_text(json.dumps({"context": {"tiles": 3600}, "metrics": [], "ranking": []}))
    state = {"steps": {}}
    for model, cfg_name, curves in [("mobilenetv3_large_d", "m", [[0.6, 0.8, 0.9, 0.95], [0.5, 0.5, 0.5, 0.5]]),
                                    ("vit_tiny_patch16_224", "v", [[0.55, 0.6, 0.62, 0.61]])]:
        folder = out / "tuning" / cfg_name
        for trial, aucs in enumerate(curves):
            history_run(folder / "runs", f"{cfg_name}-trial_{trial}-20260101-000000", [60.0] * len(aucs), aucs)
        (folder / "trials.csv").write_text(
            "trial,learning_rate,batch_size,val_loss,val_accuracy,test_loss,test_accuracy,status,best\n"
            + "".join(f"{t},0.002,32,0.3,0.8,0.3,0.97,COMPLETED,{t == 0}\n" for t in range(len(curves))))
        state["steps"][f"tune:{model}"] = {"cfg_name": cfg_name, "run": str(folder / "runs" / f"{cfg_name}-trial_0"),
                                           "learning_rate": 0.002, "batch_size": 32, "val_loss": 0.3, "val_accuracy": 0.8,
                                           "test_loss": 0.3, "test_accuracy": 0.97}
    text = study.render_results(_cpu_args(), out, state)
    # best trial first; the gain over the last quarter tells the rising curve from the flat one
    assert "| mobilenetv3_large_d | 0 | 0.002 | 32 | 4 | 0.6000 | 0.9500 | 0.9500 (4) | +0.0500 | 85.00 | 97.00 | yes |" in text
    assert "| mobilenetv3_large_d | 1 | 0.002 | 32 | 4 | 0.5000 | 0.5000 | 0.5000 (1) | +0.0000 | 40.00 | 97.00 |  |" in text
    assert "| vit_tiny_patch16_224 | 0 | 0.002 | 32 | 4 | 0.5500 | 0.6100 | 0.6200 (3) | -0.0100 | 51.00 | 97.00 | yes |" in text
    assert "![Learning curves of the CNNs](" in text and "![Learning curves of the transformers](" in text
    study.write_curve_figures(out, study.trial_curves(out, state))
    assert (out / "curves" / "cnn.png").stat().st_size > 10_000 and (out / "curves" / "transformer.png").is_file()
