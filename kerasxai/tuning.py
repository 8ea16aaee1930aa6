"""Hyper-parameter search with KerasTuner (thesis section 3.1, with KerasTuner in place of Optuna).

Bayesian optimization of the learning rate (log-uniform; [1e-4, 1e-2] for CNNs,
[1e-5, 1e-4] for transformers, or ``tune.lr_min`` / ``tune.lr_max``) and the batch size
(choice of ``tune.batch_sizes``), objective ``tune.objective`` (val_accuracy). Every trial is
a full training run (:func:`kerasxai.training.train`) with its own run folder under
``<tune.dir>/<name>/runs/``. The search folder ``<tune.dir>/<name>/`` also gets

- ``trials.csv`` / ``trials.md``: lr, batch size, loss, val and test accuracy per trial, best
  marked (thesis tables 3.2 / 3.3);
- ``parallel_coordinates.png``: one line per trial over lr, batch size, val and test accuracy
  (thesis figures 3.2 / 3.3);
- ``best_config.yaml``: the config with the best trial's lr and batch size, for ``train``.

A stopped search continues where it stopped (same folder, ``overwrite=False``), with the
settings it started with (``search.json``; a changed search space is refused). KerasTuner runs
a trial that was stopped mid-way again with the same hyperparameters; that trial continues its
run folder from the last completed epoch (:func:`interrupted_attempt`,
:func:`kerasxai.training.resume`) instead of training from zero. In KerasTuner's chief/worker
mode (``KERASTUNER_TUNER_ID``, ``KERASTUNER_ORACLE_IP``, ``KERASTUNER_ORACLE_PORT``; see
kerasxai.tuning_cluster) the chief holds the oracle and writes the reports once the workers are
done; workers only run trials.
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import traceback
from pathlib import Path

import keras
import keras_tuner

from kerasxai import runs, training
from kerasxai.choices import Metric
from kerasxai.config import Config, ConfigError, to_yaml
from kerasxai.models import is_transformer
from kerasxai.runtime import atomic_path, atomic_write_json, atomic_write_text
from kerasxai.tables import csv_table, markdown_table

CNN_LR = (1e-4, 1e-2)
TRANSFORMER_LR = (1e-5, 1e-4)


def lr_range(cfg: Config) -> tuple[float, float]:
    lo, hi = TRANSFORMER_LR if is_transformer(cfg.model.name) else CNN_LR
    lo = cfg.tune.lr_min if cfg.tune.lr_min is not None else lo
    hi = cfg.tune.lr_max if cfg.tune.lr_max is not None else hi
    return float(lo), float(hi)


def check_config(cfg: Config) -> None:
    training.check_config(cfg)
    t = cfg.tune
    lo, hi = lr_range(cfg)
    if not 0 < lo < hi:
        raise ConfigError(f"keys 'tune.lr_min'/'tune.lr_max': need 0 < lr_min < lr_max, got {lo} and {hi}")
    if not t.batch_sizes or any(b < 1 for b in t.batch_sizes):
        raise ConfigError(f"key 'tune.batch_sizes': need a non-empty list of positive sizes, got {list(t.batch_sizes)}")
    if t.epochs is not None and t.epochs < 1:
        raise ConfigError(f"key 'tune.epochs': must be >= 1 or null, got {t.epochs}")


def search_dir(cfg: Config) -> Path:
    return Path(cfg.tune.dir) / cfg.name


SETTINGS = "search.json"


def search_settings(cfg: Config) -> dict:
    """What a search's trials depend on besides the trial's own values, by config key: the
    search space (lr range resolved, batch sizes), the objective, the model, epochs per trial."""
    lo, hi = lr_range(cfg)
    return {"model.name": cfg.model.name, "tune.objective": cfg.tune.objective, "tune.lr_min": lo,
            "tune.lr_max": hi, "tune.batch_sizes": [int(b) for b in cfg.tune.batch_sizes],
            "tune.epochs": int(cfg.tune.epochs or cfg.train.epochs)}


def check_search_settings(cfg: Config) -> None:
    """A search continues only with the settings it started with (``search.json`` in its
    folder); KerasTuner would otherwise keep the old search space without a word."""
    path = search_dir(cfg) / SETTINGS
    if not path.is_file():
        return
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"'{path}' is unreadable ({exc}): start a new search (another tune.dir or name)") from exc
    for key, value in search_settings(cfg).items():
        if key in stored and stored[key] != value:
            old = stored[key]
            old_text = "[" + ",".join(map(str, old)) + "]" if isinstance(old, list) else old
            raise ConfigError(
                f"key '{key}': the search in '{search_dir(cfg)}' was started with {old_text}, not {value}; "
                f"start a new search for the new setting (another tune.dir or name), or continue this one "
                f"with {key}={old_text}")


def record_search_settings(cfg: Config) -> None:
    path = search_dir(cfg) / SETTINGS
    if not path.is_file():
        atomic_write_json(path, search_settings(cfg))


class TrainingHyperModel(keras_tuner.HyperModel):
    """Builds the model of `cfg` with the trial's learning rate; `fit` is a full training run
    (run folder, checkpoints, summary) with the trial's batch size."""

    def __init__(self, cfg: Config, verbose=1, **kwargs):
        super().__init__(name=cfg.name, **kwargs)
        self.cfg = cfg
        self.verbose = verbose
        self.build_models = False  # off while KerasTuner only discovers the search space
        self.trial_id = None

    def declare(self, hp):
        lo, hi = lr_range(self.cfg)
        lr = hp.Float("learning_rate", lo, hi, sampling="log")
        bs = hp.Choice("batch_size", [int(b) for b in self.cfg.tune.batch_sizes])
        return lr, bs

    def build(self, hp):
        self.declare(hp)
        if not self.build_models:
            return None
        # compiled by training.fit, which knows the epoch length the LR schedule needs
        return training.build_model(self.trial_config(hp))

    def trial_config(self, hp) -> Config:
        cfg = copy.deepcopy(self.cfg)
        cfg.name = f"{self.cfg.name}-trial_{self.trial_id}"
        cfg.train.learning_rate = float(hp.get("learning_rate"))
        cfg.train.batch_size = int(hp.get("batch_size"))
        cfg.train.epochs = int(self.cfg.tune.epochs or self.cfg.train.epochs)
        cfg.train.runs_dir = str(search_dir(self.cfg) / "runs")
        return cfg

    def fit(self, hp, model, *args, **kwargs):
        """A fresh training run of the trial (`model` is the one `build` made)."""
        cfg = self.trial_config(hp)
        self._announce(cfg)
        remove_interrupted_attempts(cfg)
        return self._metrics(lambda: training.train(cfg, model=model, verbose=self.verbose, progress=False))

    def resume(self, run_dir: Path):
        """The trial continued in the run folder an interrupted attempt left (epochs already
        done are not repeated; the model and its optimizer state come from ``last.keras``)."""
        cfg = runs.run_config(run_dir)
        self._announce(cfg)
        print(f"trial {self.trial_id}: continuing the interrupted attempt in {run_dir}")
        return self._metrics(lambda: training.resume(run_dir, verbose=self.verbose, progress=False))

    def _announce(self, cfg: Config) -> None:
        print(f"trial {self.trial_id}: learning_rate={cfg.train.learning_rate:.3g} batch_size={cfg.train.batch_size}")

    @staticmethod
    def _metrics(run) -> dict:
        try:
            _, summary = run()
        except Exception:
            traceback.print_exc()  # KerasTuner would otherwise swallow it into the trial record
            raise
        keys = ("val_accuracy", "val_loss", "test_accuracy", "test_loss")
        return {k: float(summary[k]) for k in keys if summary.get(k) is not None}


def interrupted_attempt(trial_cfg: Config) -> Path | None:
    """The run folder in which an interrupted attempt at this trial can continue: the newest
    one no live process holds, with at least one completed epoch (``state.json``, ``last.keras``)
    and the trial's own config (same hyperparameters and settings). KerasTuner runs a trial
    stopped by Ctrl-C or a kill again with the same trial id and values."""
    for folder in reversed(runs.run_dirs(trial_cfg.train.runs_dir, trial_cfg.name)):
        if runs.in_use(folder) or not (folder / runs.LAST).is_file():
            continue
        try:
            state = runs.read_state(folder) or {}
            stored = runs.run_config(folder)
        except runs.RunError:
            continue
        if int(state.get("next_epoch", 0)) >= 1 and stored == trial_cfg:
            return folder
    return None


def remove_interrupted_attempts(trial_cfg: Config, keep: Path | None = None) -> list[Path]:
    """Run folders of earlier attempts at this trial that no live process holds, but `keep`
    (the one the trial continues in, if any): left over by attempts that could not continue
    (stopped before their first epoch, or with other settings). Returns what was removed."""
    removed = []
    for folder in runs.run_dirs(trial_cfg.train.runs_dir, trial_cfg.name):
        if folder != keep and not runs.in_use(folder):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
            print(f"removed the run folder of an interrupted attempt at this trial: {folder}")
    return removed


class SearchTuner(keras_tuner.BayesianOptimization):
    """BayesianOptimization whose trials are :class:`TrainingHyperModel` runs.

    `run_trial` skips KerasTuner's own per-epoch checkpointing: every trial already keeps its
    best and last model in its run folder, and a trial run again after an interruption
    continues that folder (no model is built for it here: the resume loads ``last.keras``).
    """

    def run_trial(self, trial, *args, **kwargs):
        hm = self.hypermodel
        hm.trial_id = trial.trial_id
        trial_cfg = hm.trial_config(trial.hyperparameters)
        attempt = interrupted_attempt(trial_cfg)
        if attempt is not None:
            remove_interrupted_attempts(trial_cfg, keep=attempt)
            keras.backend.clear_session()  # as KerasTuner does before building a trial's model
            return hm.resume(attempt)
        hm.build_models = True
        return self._build_and_fit_model(trial, *args, **kwargs)


def make_tuner(cfg: Config, verbose=1) -> SearchTuner:
    metric = Metric(cfg.tune.objective)
    objective = keras_tuner.Objective(metric.value, metric.direction)
    return SearchTuner(
        hypermodel=TrainingHyperModel(cfg, verbose=verbose),
        objective=objective,
        max_trials=cfg.tune.trials,
        seed=cfg.train.seed,
        directory=str(cfg.tune.dir),
        project_name=cfg.name,
        overwrite=False,  # a stopped search continues where it stopped
    )


def is_worker() -> bool:
    """True in KerasTuner's distributed mode on a worker (not the chief)."""
    return "KERASTUNER_ORACLE_IP" in os.environ and "chief" not in os.environ.get("KERASTUNER_TUNER_ID", "")


def search(cfg: Config, verbose=1) -> dict | None:
    """Run (or continue) the search; write the reports unless this process is a worker.

    Returns ``{"dir", "rows", "best"}`` (None on a worker).
    """
    check_config(cfg)
    check_search_settings(cfg)
    if not is_worker() and "KERASTUNER_ORACLE_IP" not in os.environ:
        from kerasxai.data.pipeline import prepare_dataset

        prepare_dataset(cfg, progress=True)  # once, before the trials (each trial reuses it)
    search_dir(cfg).mkdir(parents=True, exist_ok=True)
    if not is_worker():
        record_search_settings(cfg)
    tuner = make_tuner(cfg, verbose=verbose)
    tuner.search(verbose=verbose)
    if is_worker():
        return None
    return write_reports(cfg, tuner.oracle)


# ---------------------------------------------------------------- reports


def trial_rows(oracle) -> list[dict]:
    """One row per trial (completed first-class, others with their status), best marked."""
    best = oracle.get_best_trials(1)
    best_id = best[0].trial_id if best else None
    rows = []
    for tid in sorted(oracle.trials, key=lambda t: int(t) if str(t).isdigit() else str(t)):
        trial = oracle.trials[tid]
        hp = trial.hyperparameters.values
        m = trial.metrics

        def last(name):
            if not m.exists(name):
                return None
            v = m.get_last_value(name)
            return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)

        rows.append({
            "trial": str(tid),
            "learning_rate": hp.get("learning_rate"),
            "batch_size": hp.get("batch_size"),
            "val_loss": last("val_loss"),
            "val_accuracy": last("val_accuracy"),
            "test_loss": last("test_loss"),
            "test_accuracy": last("test_accuracy"),
            "status": str(trial.status),
            "best": tid == best_id,
        })
    return rows


def rows_csv(rows: list[dict]) -> str:
    columns = list(rows[0].keys()) if rows else ["trial"]
    return csv_table(columns, [[r.get(c) for c in columns] for r in rows])


def rows_markdown(rows: list[dict], title: str) -> str:
    def pct(v):
        return "" if v is None else f"{100 * v:.2f}"

    def num(v, f):
        return "" if v is None else format(v, f)

    table = markdown_table(
        ["Trial", "Learning rate", "Batch size", "Loss (val)", "Val accuracy, %", "Test loss", "Test accuracy, %", "Status"],
        [[f"{r['trial']}{' **best**' if r['best'] else ''}", num(r["learning_rate"], ".2g"), r["batch_size"],
          num(r["val_loss"], ".3f"), pct(r["val_accuracy"]), num(r["test_loss"], ".3f"), pct(r["test_accuracy"]), r["status"]]
         for r in rows])
    return "\n".join([f"# {title}", "", table, "",
                      "Loss and accuracies are those of each trial's best checkpoint (run folders under runs/)."]) + "\n"


def parallel_coordinates(rows: list[dict], path: Path, title: str) -> None:
    """Thesis-style parallel coordinates: lr (log), batch size, val and test accuracy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    done = [r for r in rows if r["val_accuracy"] is not None]
    axes = [("learning_rate", "learning rate", True), ("batch_size", "batch size", False),
            ("val_accuracy", "val accuracy, %", False), ("test_accuracy", "test accuracy, %", False)]
    axes = [a for a in axes if all(r[a[0]] is not None for r in done)]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    if not done:
        ax.text(0.5, 0.5, "no completed trial yet", ha="center", va="center")
    else:
        cols = []
        for key, _, log in axes:
            v = np.array([float(r[key]) for r in done])
            v = np.log10(v) if log else v
            lo, hi = v.min(), v.max()
            cols.append(((v - lo) / (hi - lo) if hi > lo else np.full_like(v, 0.5), lo, hi, log, key))
        color_key = "test_accuracy" if any(a[0] == "test_accuracy" for a in axes) else "val_accuracy"
        cv = np.array([r[color_key] for r in done], dtype=float)
        norm = plt.Normalize(cv.min(), cv.max() if cv.max() > cv.min() else cv.min() + 1e-9)
        cmap = plt.get_cmap("viridis")
        xs = np.arange(len(cols))
        for i, r in enumerate(done):
            ys = [c[0][i] for c in cols]
            ax.plot(xs, ys, color=cmap(norm(cv[i])), lw=3 if r["best"] else 1.5, alpha=0.9,
                    label=f"trial {r['trial']} (best)" if r["best"] else None)
        for x, (_, lo, hi, log, key) in zip(xs, cols):
            ax.axvline(x, color="0.3", lw=0.8)
            fmt = (lambda v: f"{10 ** v:.2g}") if log else \
                  (lambda v, k=key: f"{100 * v:.2f}" if "accuracy" in k else f"{v:g}")
            ax.text(x, -0.06, fmt(lo), ha="center", va="top", fontsize=8)
            ax.text(x, 1.06, fmt(hi), ha="center", va="bottom", fontsize=8)
        ax.set_xticks(xs, [a[1] for a in axes])
        ax.xaxis.set_ticks_position("bottom")
        ax.tick_params(axis="x", pad=16)
        ax.set_yticks([])
        ax.set_ylim(-0.15, 1.15)
        ax.set_xlim(-0.2, len(cols) - 0.8)
        sm = plt.cm.ScalarMappable(norm=norm, cmap=cmap)
        fig.colorbar(sm, ax=ax, label=color_key.replace("_", " "))
        if any(r["best"] for r in done):
            ax.legend(loc="upper left", fontsize=8, frameon=False)
    ax.set_title(title)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


def best_config(cfg: Config, rows: list[dict]) -> Config | None:
    best = [r for r in rows if r["best"]]
    if not best:
        return None
    out = copy.deepcopy(cfg)
    out.train.learning_rate = float(best[0]["learning_rate"])
    out.train.batch_size = int(best[0]["batch_size"])
    out.train.epochs = int(cfg.tune.epochs or cfg.train.epochs)
    return out


def write_reports(cfg: Config, oracle) -> dict:
    folder = search_dir(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    rows = trial_rows(oracle)
    title = f"{cfg.name}: {cfg.model.name}, {len(rows)} trials, objective {cfg.tune.objective}"
    atomic_write_text(folder / "trials.csv", rows_csv(rows))
    atomic_write_text(folder / "trials.md", rows_markdown(rows, title))
    parallel_coordinates(rows, folder / "parallel_coordinates.png", title)
    best = best_config(cfg, rows)
    if best is not None:
        header = (f"# Best trial of the search in {folder} (objective {cfg.tune.objective}).\n"
                  f"# Train it: python -m kerasxai.train --config {folder / 'best_config.yaml'}\n")
        atomic_write_text(folder / "best_config.yaml", header + to_yaml(best))
    return {"dir": folder, "rows": rows, "best": next((r for r in rows if r["best"]), None)}
