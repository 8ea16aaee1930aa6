"""Training library: datasets + model + optimizer + callbacks, fit, resume (thesis table 3.1).

`train(cfg)` runs one training into a fresh run folder (see :mod:`kerasxai.runs`);
`resume(run_dir)` continues an interrupted run from its last completed epoch. Ctrl-C stops
training at the next batch end: the epoch in progress is dropped, the completed ones are kept
(:class:`TrainingInterrupted`).
The model keeps its {"score", "heatmap"} outputs during training; only the score gets a
loss (binary cross-entropy) and metrics (accuracy, AUC, precision, recall), so the saved
checkpoints are the full locator, ready for evaluate / predict / export.

Here: fit, finish, train, resume. The parts they use: :mod:`.checks` (config checks, what a
resume may change), :mod:`.optim` (optimizer, schedule, compile), :mod:`.model` (the model to
train), :mod:`.parallel` (data-parallel setup), :mod:`.datasets` (pipelines with targets,
teacher labels), :mod:`.callbacks` (Ctrl-C, checkpoints, history); the output contract comes
from :mod:`kerasxai.models.contract`. Their public names are importable from here too.
"""

from __future__ import annotations

import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import keras

from kerasxai import runs
from kerasxai.choices import Metric
from kerasxai.config import Config, ConfigError
from kerasxai.models import MODEL_NAMES, is_transformer  # noqa: F401  (re-exported)
from kerasxai.models.contract import (  # noqa: F401  (re-exported: the output contract training uses)
    CLS_OUTPUT,
    DIST_OUTPUT,
    has_dist_head,
    inference_view,
    is_distilled,
    metric_key,
    output_keys,
)

from .callbacks import (  # noqa: F401  (re-exported)
    SIGINT_STOP,
    EpochClock,
    GracefulStop,
    LearningRateLog,
    ResumableReduceLROnPlateau,
    RunCheckpoint,
    SigintStop,
    TrainingInterrupted,
    trim_history,
)
from .checks import RESUME_FIXED, check_config, check_resume_overrides  # noqa: F401
from .datasets import (  # noqa: F401  (re-exported)
    Data,
    _with_teacher_labels,
    check_splits,
    epoch_steps,
    make_datasets,
    targets,
)
from .model import build_model, set_bn_momentum  # noqa: F401
from .optim import (  # noqa: F401  (re-exported)
    COSINE_FLOOR,
    WARMUP_START,
    build_optimizer,
    compile_model,
    current_learning_rate,
    learning_rate_schedule,
    optimizer_name,
    score_metrics,
)
from .parallel import setup_data_parallel


def _load_teacher(cfg: Config, model):
    if not has_dist_head(model):
        if cfg.train.teacher_run:
            print(f"train.teacher_run is set but {cfg.model.name} has no distillation head: ignored")
        return None
    if not cfg.train.teacher_run:
        print(f"{cfg.model.name}: no train.teacher_run given, so the distillation head is trained "
              "on the labels (both heads see the same targets)")
        return None
    tcfg, teacher = runs.load_run(cfg.train.teacher_run, "best")
    if tcfg.data.tile.size != cfg.data.tile.size:
        raise ConfigError(f"key 'train.teacher_run': the teacher was trained on {tcfg.data.tile.size} px tiles, "
                          f"this run uses {cfg.data.tile.size} px (data.tile.size): use a teacher of the same tile size")
    print(f"{cfg.model.name}: hard-label distillation from the teacher run '{cfg.train.teacher_run}'")
    return teacher


def _heatmap_images(cfg: Config, run_dir: Path, prepared) -> list:
    """The TensorBoard heatmap callback (``train.tensorboard_images`` tiles; none when 0)."""
    if not cfg.train.tensorboard_images:
        return []
    from kerasxai.tensorboard_images import LOG_SUBDIR, HeatmapImages

    return [HeatmapImages(run_dir / runs.TENSORBOARD / LOG_SUBDIR, prepared, cfg.train.tensorboard_images,
                          cfg.eval.pixel_threshold)]


def fit(cfg: Config, run_dir, *, model=None, resume: bool = False, batch_size: Optional[int] = None,
        learning_rate: Optional[float] = None, callbacks=(), verbose=1, progress: bool = True,
        prepared=None) -> dict:
    """Train `cfg` into the (existing) `run_dir`; returns the summary dict (also summary.json).

    With `resume`, weights and optimizer state come from ``last.keras`` and training starts at
    the epoch after the last completed one. `model` may be a compiled model to train (the
    tuner passes the one it built); `batch_size` / `learning_rate` override ``cfg.train``;
    `prepared` is the prepared dataset folder when the caller already made it. Ctrl-C raises
    :class:`TrainingInterrupted` after the last completed epoch was saved.
    """
    from kerasxai.data.pipeline import prepare_dataset

    run_dir = Path(run_dir)
    check_config(cfg)
    t = cfg.train
    bs = int(batch_size or t.batch_size)
    if learning_rate is not None:
        t.learning_rate = float(learning_rate)
    keras.utils.set_random_seed(t.seed)
    n_devices = setup_data_parallel(cfg, bs)

    prepared = prepared or prepare_dataset(cfg, progress=progress)
    state = runs.read_state(run_dir) if resume else None
    state = state or {"next_epoch": 0, "best": None, "train_seconds": 0.0}
    initial_epoch = int(state["next_epoch"])
    if model is None:
        model = build_model(cfg)
    teacher = _load_teacher(cfg, model)
    if set_bn_momentum(model, t.bn_momentum):
        print(f"BatchNormalization momentum set to {t.bn_momentum} (train.bn_momentum)")
    steps = epoch_steps(cfg, prepared, bs)
    if getattr(model, "optimizer", None) is None or not model.compiled:
        compile_model(model, cfg, learning_rate, distill=has_dist_head(model), steps_per_epoch=steps)
    if resume and initial_epoch > 0:
        model.optimizer.build(model.trainable_variables)
        model.load_weights(run_dir / runs.LAST)  # weights and optimizer state (step count included)
        print(f"resuming '{run_dir}' at epoch {initial_epoch + 1}/{t.epochs} "
              f"(learning rate {current_learning_rate(model.optimizer):.3g})")

    data = make_datasets(cfg, prepared, output_keys(model), bs, teacher_model=teacher)
    monitor = metric_key(t.monitor, model)
    mode = Metric(t.monitor).direction
    reduce_lr = None
    if t.schedule == "plateau":
        reduce_lr = ResumableReduceLROnPlateau(
            monitor="val_loss", factor=t.reduce_lr.factor, patience=t.reduce_lr.patience,
            min_lr=t.reduce_lr.min_lr, verbose=1, initial_state=state.get("reduce_lr"))
    history_path = run_dir / runs.HISTORY
    trim_history(history_path, initial_epoch)
    t0 = time.perf_counter()
    checkpoint = RunCheckpoint(run_dir, monitor, mode, state, reduce_lr, started=t0)
    cbs = [
        GracefulStop(SIGINT_STOP, run_dir),  # first: an interrupted epoch reaches no other callback
        EpochClock(),
        *([reduce_lr] if reduce_lr is not None else [LearningRateLog()]),
        keras.callbacks.CSVLogger(str(history_path), append=initial_epoch > 0),
        keras.callbacks.TensorBoard(str(run_dir / runs.TENSORBOARD), write_graph=False),
        checkpoint,
        *_heatmap_images(cfg, run_dir, prepared),
        *callbacks,
    ]
    try:
        with SIGINT_STOP.fitting() as stop:
            if initial_epoch < t.epochs:
                model.fit(data.train, validation_data=data.val, epochs=t.epochs, initial_epoch=initial_epoch,
                          steps_per_epoch=data.steps_per_epoch, callbacks=cbs, verbose=verbose, shuffle=False)
            if stop.requested:  # Ctrl-C after the last epoch's checks: stop before evaluating
                raise TrainingInterrupted(run_dir)
    finally:
        st = runs.read_state(run_dir) or checkpoint.state
        st["train_seconds"] = float(state.get("train_seconds", 0.0)) + (time.perf_counter() - t0)
        runs.write_state(run_dir, st)
    return finish(cfg, run_dir, model, data, st, batch_size=bs, n_devices=n_devices)


def finish(cfg: Config, run_dir, model, data: Data, state: dict, batch_size: int, n_devices: int = 1) -> dict:
    """Evaluate the best checkpoint on val and test, write summary.json, return it."""
    run_dir = Path(run_dir)
    inference_view(model).load_weights(run_dir / runs.BEST)  # same structure as saved; shares weights
    val = model.evaluate(data.val, return_dict=True, verbose=0)
    test = model.evaluate(data.test, return_dict=True, verbose=0) if data.test is not None else {}
    get = lambda d, k: (float(d[metric_key(k, model)]) if metric_key(k, model) in d else None)  # noqa: E731
    def per_epoch(key):  # mean over epochs; the first one (compilation) left out when there are more
        v = [x for x in state.get(key, []) if x is not None]
        v = v[1:] if len(v) > 1 else v
        return (sum(v) / len(v)) if v else None

    summary = {
        "name": cfg.name,
        "model": cfg.model.name,
        "monitor": cfg.train.monitor,
        "best_epoch": state.get("best_epoch"),
        "epochs": int(state.get("next_epoch", 0)),
        "val_loss": get(val, "loss"),
        "val_accuracy": get(val, "accuracy"),
        "val_auc": get(val, "auc"),
        "test_loss": get(test, "loss"),
        "test_accuracy": get(test, "accuracy"),
        "test_auc": get(test, "auc"),
        "test_precision": get(test, "precision"),
        "test_recall": get(test, "recall"),
        "learning_rate": cfg.train.learning_rate,
        "batch_size": batch_size,
        "optimizer": optimizer_name(cfg),
        "steps_per_epoch": data.steps_per_epoch,
        "tiles": data.counts,
        "seconds_per_epoch": per_epoch("epoch_seconds"),
        "cpu_seconds_per_epoch": per_epoch("epoch_cpu_seconds"),
        "first_epoch_seconds": (state.get("epoch_seconds") or [None])[0],
        "wall_time_s": float(state.get("train_seconds", 0.0)),
        "backend": keras.backend.backend(),
        "devices": n_devices,
        "versions": runs.versions(),
        "prepared_dir": str(data.prepared_dir),
        "run_dir": str(run_dir),
    }
    runs.atomic_write_json(run_dir / runs.SUMMARY, summary)
    return summary


def prepare_checked(cfg: Config, progress: bool = True) -> Path:
    """The prepared dataset of `cfg`, with train and val tiles (ConfigError otherwise)."""
    from kerasxai.data.pipeline import prepare_dataset

    prepared = prepare_dataset(cfg, progress=progress)
    check_splits(prepared)
    return prepared


@contextmanager
def _interrupts_name(run_dir: Path):
    """A KeyboardInterrupt leaving the block becomes TrainingInterrupted(run_dir), so the CLI
    can say how to continue."""
    try:
        yield
    except TrainingInterrupted:
        raise
    except KeyboardInterrupt as exc:
        raise TrainingInterrupted(run_dir) from exc


def _completed_epochs(run_dir: Path) -> int:
    try:
        return int((runs.read_state(run_dir) or {}).get("next_epoch", 0))
    except runs.RunError:
        return 0


@contextmanager
def _removed_if_unstarted(run_dir: Path, created: bool):
    """A failure before the first epoch completed removes a run folder this call created, so
    failed starts leave no empty run folders behind."""
    try:
        yield
    except BaseException:
        if created and not _completed_epochs(run_dir):
            shutil.rmtree(run_dir, ignore_errors=True)
            print(f"removed the run folder {run_dir}: no epoch completed")
        raise


def _report_removed(paths) -> None:
    if paths:
        print(f"removed {len(paths)} temporary file(s) left by interrupted runs: "
              + ", ".join(str(p) for p in paths))


def train(cfg: Config, *, model=None, batch_size: Optional[int] = None, learning_rate: Optional[float] = None,
          callbacks=(), verbose=1, run_dir=None, progress: bool = True) -> tuple[Path, dict]:
    """One training run into a new run folder: ``(run_dir, summary)``.

    Config, data (both splits non-empty) and weights file are checked before the folder is
    made; the folder is locked while training (:func:`kerasxai.runs.lock_run`).
    """
    check_config(cfg)
    if batch_size is not None:
        cfg.train.batch_size = int(batch_size)
    if learning_rate is not None:
        cfg.train.learning_rate = float(learning_rate)
    prepared = prepare_checked(cfg, progress=progress)
    created = run_dir is None or not Path(run_dir).exists()
    run_dir = Path(run_dir) if run_dir is not None else runs.new_run_dir(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    with runs.lock_run(run_dir), _interrupts_name(run_dir), _removed_if_unstarted(run_dir, created):
        runs.write_config(run_dir, cfg)
        runs.write_state(run_dir, {"next_epoch": 0, "best": None, "train_seconds": 0.0})
        print(f"run folder: {run_dir}")
        _report_removed(runs.sweep_runs_dir(run_dir.parent, keep=run_dir))
        summary = fit(cfg, run_dir, model=model, callbacks=callbacks, verbose=verbose, progress=progress,
                      prepared=prepared)
    return run_dir, summary


def resume(run_dir, overrides=(), *, callbacks=(), verbose=1, progress: bool = True) -> tuple[Path, dict]:
    """Continue an interrupted run in place (``--resume``): completed epochs are not repeated.

    Overrides that change the model, the data or the batch size are refused before anything is
    written (:func:`check_resume_overrides`); the folder is locked while training.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise runs.RunError(f"'{run_dir}' is not a run folder: pass a folder written by python -m kerasxai.train")
    stored = runs.run_config(run_dir)
    cfg = runs.run_config(run_dir, overrides)
    check_resume_overrides(stored, cfg, run_dir)
    check_config(cfg)
    with runs.lock_run(run_dir), _interrupts_name(run_dir):
        state = runs.read_state(run_dir)
        _report_removed(runs.remove_temp_files(run_dir))  # ours alone: the folder is locked
        if state and state.get("next_epoch", 0) > 0 and not (run_dir / runs.LAST).is_file():
            raise runs.RunError(f"'{run_dir / runs.LAST}' is missing: this run cannot be resumed")
        if overrides:
            runs.write_config(run_dir, cfg)
        print(f"run folder: {run_dir}")
        summary = fit(cfg, run_dir, resume=True, callbacks=callbacks, verbose=verbose, progress=progress)
    return run_dir, summary
