"""Hyper-parameter search: reports of a 2-trial search, continuing a stopped search, and a
KerasTuner chief + two workers on localhost."""

import csv
import json
import signal
import sys
from pathlib import Path

import keras
import pytest

from kerasxai import runs, training, tuning
from kerasxai.config import ConfigError, load_config
from kerasxai.tune import main as tune_main

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from test_train import history_epochs, synthetic_overrides  # noqa: E402


def search_overrides(tmp_path, **extra):
    items = {"tune.dir": str(tmp_path / "tuning"), "tune.batch_sizes": "[4,8]", "train.steps_per_epoch": 1,
             "train.max_val_tiles": 8, "train.max_test_tiles": 8}
    items.update(extra)
    return synthetic_overrides(tmp_path) + [f"{k}={v}" for k, v in items.items()]


def read_rows(folder):
    with open(folder / "trials.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_learning_rate_ranges_follow_table_3_1():
    cnn = load_config(None, ["data.reader=synthetic", "model.name=efficientnetv2_s"])
    vit = load_config(None, ["data.reader=synthetic", "model.name=vit_tiny_patch16_224"])
    assert tuning.lr_range(cnn) == (1e-4, 1e-2)
    assert tuning.lr_range(vit) == (1e-5, 1e-4)
    vit.tune.lr_min, vit.tune.lr_max = 2e-5, 3e-5
    assert tuning.lr_range(vit) == (2e-5, 3e-5)
    vit.tune.lr_min = 1e-3
    with pytest.raises(ConfigError, match="tune.lr_min"):
        tuning.check_config(vit)


def test_bad_search_config_fails_before_any_trial(tmp_path, capsys):
    code = tune_main(["--config", str(REPO / "configs" / "demo.yaml"), *search_overrides(tmp_path),
                      "tune.objective=val_auc"])
    assert code == 2 and "tune.objective" in capsys.readouterr().err
    assert not (tmp_path / "tuning").exists() and not (tmp_path / "cache").exists()


@pytest.mark.parametrize("change, key", [
    ({"tune.lr_max": 0.00005}, "tune.lr_max"),
    ({"tune.lr_min": 0.00002}, "tune.lr_min"),
    ({"tune.batch_sizes": "[4,16]"}, "tune.batch_sizes"),
    ({"tune.objective": "val_loss"}, "tune.objective"),
    ({"model.name": "efficientnetv2_s_d"}, "model.name"),
])
def test_continuing_a_search_with_other_settings_is_refused(tmp_path, capsys, change, key):
    config = str(REPO / "configs" / "demo.yaml")
    started = load_config(config, search_overrides(tmp_path))
    tuning.search_dir(started).mkdir(parents=True)
    tuning.record_search_settings(started)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    tuning.check_search_settings(load_config(config, search_overrides(tmp_path, **{"tune.trials": 7})))
    code = tune_main(["--config", config, *search_overrides(tmp_path, **change), "--quiet"])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    old = tuning.search_settings(started)[key]
    old = "[" + ",".join(map(str, old)) + "]" if isinstance(old, list) else old
    assert f"key '{key}'" in lines[0] and "another tune.dir or name" in lines[0] and f"{key}={old}" in lines[0]
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before  # nothing written


@pytest.mark.slow
def test_two_trial_search_writes_table_figure_best_config_and_continues(tmp_path, capsys):
    config = str(REPO / "configs" / "demo.yaml")
    assert tune_main(["--config", config, *search_overrides(tmp_path), "--trials", "2", "--quiet"]) == 0
    folder = tmp_path / "tuning" / "syn"
    rows = read_rows(folder)
    assert len(rows) == 2 and all(r["status"] == "COMPLETED" for r in rows)
    lo, hi = tuning.lr_range(load_config(config, synthetic_overrides(tmp_path)))
    for r in rows:
        assert lo <= float(r["learning_rate"]) <= hi and int(r["batch_size"]) in (4, 8)
        assert 0 <= float(r["val_accuracy"]) <= 1 and 0 <= float(r["test_accuracy"]) <= 1
    best = [r for r in rows if r["best"] == "True"]
    assert len(best) == 1 and float(best[0]["val_accuracy"]) == max(float(r["val_accuracy"]) for r in rows)
    md = (folder / "trials.md").read_text()
    assert md.count("**best**") == 1 and "Learning rate" in md and "Test accuracy" in md
    png = (folder / "parallel_coordinates.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    best_cfg = load_config(folder / "best_config.yaml")  # ready for `train`
    assert best_cfg.train.learning_rate == pytest.approx(float(best[0]["learning_rate"]))
    assert best_cfg.train.batch_size == int(best[0]["batch_size"])
    trial_runs = sorted((folder / "runs").iterdir())
    assert len(trial_runs) == 2 and all((r / "summary.json").is_file() for r in trial_runs)

    settings = json.loads((folder / tuning.SETTINGS).read_text())
    assert settings["tune.batch_sizes"] == [4, 8] and (settings["tune.lr_min"], settings["tune.lr_max"]) == (lo, hi)
    # the same command with a larger budget continues: old trials are kept, one new trial runs
    assert tune_main(["--config", config, *search_overrides(tmp_path), "--trials", "3", "--quiet"]) == 0
    rows3 = read_rows(folder)
    assert len(rows3) == 3 and [r["learning_rate"] for r in rows3[:2]] == [r["learning_rate"] for r in rows]
    assert len(list((folder / "runs").iterdir())) == 3


def test_workers_option_starts_the_cluster(monkeypatch, capsys):
    """``kerasxai tune --workers N`` hands the config and overrides to tuning_cluster.launch."""
    from kerasxai import cli, tuning_cluster

    calls = []
    monkeypatch.setattr(tuning_cluster, "launch", lambda *args, **kwargs: calls.append((args, kwargs)) or 5)
    argv = ["--config", "c.yaml", "a.b=1", "--workers", "3", "--trials", "4", "--timeout", "9"]
    assert cli.main(["tune", *argv]) == 5
    assert calls == [(("c.yaml", ["a.b=1", "tune.trials=4"], 3), {"port": None, "timeout": 9.0})]
    assert tune_main(["--config", "c.yaml", "--workers", "1", "--port", "8000"]) == 5
    assert calls[-1] == (("c.yaml", [], 1), {"port": 8000, "timeout": None})


@pytest.mark.parametrize("argv, message", [
    (["--workers", "0"], "--workers must be >= 1, got 0"),
    (["--port", "8000"], "--port and --timeout only apply with --workers N"),
    (["--timeout", "60"], "--port and --timeout only apply with --workers N"),
])
def test_workers_options_bad_input_exit_2(monkeypatch, capsys, argv, message):
    from kerasxai import tuning_cluster

    monkeypatch.setattr(tuning_cluster, "launch", lambda *args, **kwargs: pytest.fail("launched"))
    assert tune_main(["--config", "c.yaml", *argv]) == 2
    assert capsys.readouterr().err.splitlines() == [f"error: {message}"]


@pytest.mark.slow
def test_chief_and_two_workers_complete_their_trials(tmp_path):
    from kerasxai.tuning_cluster import launch

    overrides = search_overrides(tmp_path, **{"tune.trials": 2, "name": "cluster"})
    code = launch(str(REPO / "configs" / "demo.yaml"), overrides, workers=2, timeout=1500,
                  log_dir=tmp_path / "logs")
    logs = {p.stem: p.read_text() for p in (tmp_path / "logs").iterdir()}
    assert code == 0, {k: v[-2000:] for k, v in logs.items()}
    folder = tmp_path / "tuning" / "cluster"
    rows = read_rows(folder)
    assert len(rows) == 2 and all(r["status"] == "COMPLETED" for r in rows)
    assert (folder / "best_config.yaml").is_file() and (folder / "parallel_coordinates.png").is_file()
    assert "worker done" in logs["tuner0"] and "worker done" in logs["tuner1"]
    ran = [k for k in ("tuner0", "tuner1") if "trial " in logs[k] and "learning_rate=" in logs[k]]
    assert ran, "no worker ran a trial"
    assert len(list((folder / "runs").iterdir())) == 2


def test_cluster_stops_everything_when_a_worker_fails(tmp_path):
    """Each process gets its tuner id and the oracle address; a failing worker stops the rest (1)."""
    from kerasxai.tuning_cluster import launch

    fake_python = tmp_path / "python"
    logs_dir = tmp_path / "logs"
    # the failing worker waits (up to 20 s) until the others have written their line, so that
    # stopping them cannot overtake their echo on a loaded machine
    fake_python.write_text(
        "#!/bin/sh\n"
        'echo "$KERASTUNER_TUNER_ID $KERASTUNER_ORACLE_IP:$KERASTUNER_ORACLE_PORT $*"\n'
        'if [ "$KERASTUNER_TUNER_ID" = tuner1 ]; then\n'
        "  for i in $(seq 200); do\n"
        f'    [ -s "{logs_dir}/chief.log" ] && [ -s "{logs_dir}/tuner0.log" ] && break; sleep 0.1\n'
        "  done\n"
        "  exit 3\n"
        "fi\n"
        "exec sleep 60\n")
    fake_python.chmod(0o755)
    overrides = search_overrides(tmp_path, name="cluster")
    code = launch(str(REPO / "configs" / "demo.yaml"), overrides, workers=2, port=8123, timeout=50,
                  log_dir=logs_dir, python=str(fake_python))
    assert code == 1
    logs = {p.stem: p.read_text() for p in logs_dir.iterdir()}
    assert sorted(logs) == ["chief", "tuner0", "tuner1"]
    for tuner_id, log in logs.items():
        assert log.startswith(f"{tuner_id} 127.0.0.1:8123 -m kerasxai.tune --config "), log
        assert log.rstrip().endswith(" ".join(overrides)), log


def search_and_trial_config(tmp_path, trial_id):
    """(search config, config of trial `trial_id`) of a synthetic search in tmp_path/tuning."""
    import keras_tuner

    cfg = load_config(None, synthetic_overrides(tmp_path, **{"tune.dir": str(tmp_path / "tuning")}))
    hm = tuning.TrainingHyperModel(cfg)
    hp = keras_tuner.HyperParameters()
    hm.declare(hp)
    hm.trial_id = trial_id
    return cfg, hm.trial_config(hp)


def test_a_trial_continues_only_a_free_attempt_with_an_epoch_and_its_own_config(tmp_path):
    import copy

    _, trial_cfg = search_and_trial_config(tmp_path, "1")

    def attempt(time, next_epoch, run_cfg=trial_cfg):
        folder = Path(trial_cfg.train.runs_dir) / f"{trial_cfg.name}-20260101-{time}"
        folder.mkdir(parents=True)
        runs.write_config(folder, run_cfg)
        runs.write_state(folder, {"next_epoch": next_epoch, "best": None, "train_seconds": 1.0})
        (folder / runs.LAST).write_bytes(b"stub")
        return folder

    attempt("110000", 0)  # stopped before its first epoch
    assert tuning.interrupted_attempt(trial_cfg) is None
    other = copy.deepcopy(trial_cfg)
    other.train.learning_rate *= 2
    attempt("120000", 2, other)  # another learning rate
    assert tuning.interrupted_attempt(trial_cfg) is None
    good = attempt("130000", 1)
    live = attempt("140000", 2)
    with runs.lock_run(live):  # a process still trains there
        assert tuning.interrupted_attempt(trial_cfg) == good
        removed = tuning.remove_interrupted_attempts(trial_cfg, keep=good)
    assert sorted(p.name[-6:] for p in removed) == ["110000", "120000"]
    assert good.is_dir() and live.is_dir()


class SigintAtEpoch(keras.callbacks.Callback):
    """Ctrl-C (SIGINT to this process) after batch 0 of epoch `epoch`: the epochs before it are
    kept, the one in progress is dropped."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch, self.current, self.sent = epoch, None, False

    def on_epoch_begin(self, epoch, logs=None):
        self.current = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.current == self.epoch and not self.sent:
            self.sent = True
            try:
                signal.raise_signal(signal.SIGINT)
            except KeyboardInterrupt:
                pass  # a KeyboardInterrupt here is lost; the stop request ends the training


def trial_runs(folder):
    return {p.name.split("-trial_")[1].split("-")[0]: p for p in (folder / "runs").iterdir()}


@pytest.mark.slow
def test_a_trial_stopped_mid_way_continues_from_its_last_epoch(tmp_path, capsys, monkeypatch):
    """Ctrl-C in epoch 2 of trial 1 (trial 0 done), then the same command: trial 1 continues its
    run folder at epoch 2 with its hyperparameters; trial 0 is not trained again."""
    train = training.train

    def train_stopping_trial_1(cfg, **kwargs):
        if cfg.name.endswith("-trial_1"):
            kwargs["callbacks"] = [*kwargs.get("callbacks", ()), SigintAtEpoch(1)]
        return train(cfg, **kwargs)

    monkeypatch.setattr(training, "train", train_stopping_trial_1)
    argv = ["--config", str(REPO / "configs" / "demo.yaml"), *search_overrides(tmp_path, **{"tune.epochs": 3}),
            "--trials", "2", "--quiet"]
    assert tune_main(argv) == 130
    capsys.readouterr()
    folder = tmp_path / "tuning" / "syn"
    first = trial_runs(folder)
    assert sorted(first) == ["0", "1"]
    assert history_epochs(first["1"]) == [0] and runs.read_state(first["1"])["next_epoch"] == 1
    done = {p: p.stat().st_mtime_ns for p in first["0"].rglob("*")}
    hp = runs.run_config(first["1"]).train

    monkeypatch.setattr(training, "train", train)
    assert tune_main(argv) == 0
    out = capsys.readouterr().out
    assert f"trial 1: continuing the interrupted attempt in {first['1']}" in out
    assert "at epoch 2/3" in out and "Epoch 1/3" not in out  # trial 0 not run again, trial 1 not from 0
    assert trial_runs(folder) == first  # the same run folders, no new attempt
    assert history_epochs(first["1"]) == [0, 1, 2]
    assert {p: p.stat().st_mtime_ns for p in first["0"].rglob("*")} == done
    rows = read_rows(folder)
    assert [r["status"] for r in rows] == ["COMPLETED", "COMPLETED"]
    assert float(rows[1]["learning_rate"]) == hp.learning_rate and int(rows[1]["batch_size"]) == hp.batch_size
    summary = json.loads((first["1"] / runs.SUMMARY).read_text())
    assert summary["epochs"] == 3 and float(rows[1]["val_accuracy"]) == pytest.approx(summary["val_accuracy"])
    last = keras.saving.load_model(first["1"] / runs.LAST)  # one optimizer, carried over
    assert int(last.optimizer.iterations) == 3
