"""Ctrl-C as a stop request, and the callbacks of a training run (timing, learning rate,
checkpoints with a resumable state, history trimmed for a resume)."""

from __future__ import annotations

import csv
import os
import signal
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import keras
import numpy as np

from kerasxai import precision, runs
from kerasxai.models.contract import inference_view
from kerasxai.tables import csv_table

from .optim import current_learning_rate


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped training; `run_dir` keeps the epochs completed before it (if any)."""

    def __init__(self, run_dir=None):
        super().__init__(str(run_dir or ""))
        self.run_dir = Path(run_dir) if run_dir else None

    def hint(self) -> str:
        """The one line a CLI prints: how to continue, or that nothing was kept."""
        import shlex

        if self.run_dir is None or not (self.run_dir / runs.CONFIG).is_file():
            return "interrupted before the first epoch completed: nothing was kept"
        return ("interrupted: the completed epochs are kept; continue with "
                f"python -m kerasxai.train --resume {shlex.quote(str(self.run_dir))}")


class SigintStop:
    """SIGINT (Ctrl-C, ``kill -INT``) as a request to stop training at the next batch end.

    Used as a context manager (nested uses share one handler, the outermost restores the
    previous one). While :func:`fit` trains, the first SIGINT only sets `requested` (read by
    :class:`GracefulStop`), even when SIGINT was ignored (a background job of a shell script);
    a second one raises KeyboardInterrupt. Otherwise SIGINT goes to the previous handler.
    Keras may swallow a KeyboardInterrupt raised deep in a training step, hence the flag.
    """

    MESSAGE = b"\nCtrl-C: stopping at the end of this batch (press Ctrl-C again to abort at once)\n"

    def __init__(self):
        self.requested = False
        self.training = False
        self._depth = 0
        self._previous = None

    def _handle(self, signum, frame):
        if not self.training:
            return self._pass_on(signum, frame)
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        os.write(2, self.MESSAGE)  # async-signal-safe, unlike print

    def _pass_on(self, signum, frame):
        """Outside training: what the previous handler does (ignore, call it, KeyboardInterrupt)."""
        if self._previous == signal.SIG_IGN:
            return None
        if callable(self._previous):
            return self._previous(signum, frame)
        raise KeyboardInterrupt

    def __enter__(self):
        if self._depth == 0:
            self.requested = False
            if threading.current_thread() is threading.main_thread():
                self._previous = signal.signal(signal.SIGINT, self._handle)
                self._installed = True
            else:
                self._installed = False
        self._depth += 1
        return self

    def __exit__(self, *exc):
        self._depth -= 1
        if self._depth == 0 and self._installed:
            previous = self._previous if self._previous is not None else signal.SIG_DFL
            signal.signal(signal.SIGINT, previous)
            self._previous, self._installed = None, False
        return False

    @contextmanager
    def fitting(self):
        """The block in which SIGINT is a stop request (model.fit)."""
        with self:
            was, self.training = self.training, True
            try:
                yield self
            finally:
                self.training = was


SIGINT_STOP = SigintStop()


class GracefulStop(keras.callbacks.Callback):
    """Ends fit once ``stop.requested``: training stops at the batch end, validation at once,
    and the epoch in progress is dropped (on_epoch_begin / on_epoch_end raise
    TrainingInterrupted before later callbacks checkpoint or log it), so it must come first."""

    def __init__(self, stop: SigintStop, run_dir):
        super().__init__()
        self.stop = stop
        self.run_dir = run_dir

    def on_train_batch_end(self, batch, logs=None):
        if self.stop.requested:
            self.model.stop_training = True

    def on_test_batch_end(self, batch, logs=None):
        if self.stop.requested:
            self.model.stop_evaluating = True

    def _drop_epoch(self):
        if self.stop.requested:
            raise TrainingInterrupted(self.run_dir)

    def on_epoch_begin(self, epoch, logs=None):
        self._drop_epoch()

    def on_epoch_end(self, epoch, logs=None):
        self._drop_epoch()


class EpochClock(keras.callbacks.Callback):
    """Adds ``epoch_seconds`` (wall) and ``epoch_cpu_seconds`` (this process, all threads) to
    the epoch logs, so history.csv records them; on a shared machine the two differ a lot."""

    def on_epoch_begin(self, epoch, logs=None):
        self._t0 = time.perf_counter()
        self._c0 = time.process_time()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["epoch_seconds"] = round(time.perf_counter() - self._t0, 3)
            logs["epoch_cpu_seconds"] = round(time.process_time() - self._c0, 3)


class LearningRateLog(keras.callbacks.Callback):
    """Adds ``learning_rate`` (the schedule's value after the epoch) to the epoch logs, as
    ReduceLROnPlateau does for the plateau schedule, so history.csv shows the curve."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = current_learning_rate(self.model.optimizer)


class ResumableReduceLROnPlateau(keras.callbacks.ReduceLROnPlateau):
    """ReduceLROnPlateau whose wait / best / cooldown survive a resume (kept in state.json)."""

    def __init__(self, *args, initial_state: Optional[dict] = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.initial_state = initial_state or {}

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        for key in ("wait", "best", "cooldown_counter"):
            if self.initial_state.get(key) is not None:
                setattr(self, key, self.initial_state[key])

    def state(self) -> dict:
        best = None if self.best is None else float(self.best)
        return {"wait": int(self.wait), "best": best, "cooldown_counter": int(self.cooldown_counter)}


class RunCheckpoint(keras.callbacks.Callback):
    """After every epoch: ``last.keras`` (with optimizer state), ``best.keras`` when the
    monitored value improved, then ``state.json`` — each written atomically, in that order,
    so an interruption at any point leaves a readable checkpoint and a consistent state.
    Between epochs ``train_seconds`` in ``state.json`` is brought up to date every
    `heartbeat_s`, so the time before a kill counts in the resumed run's ``wall_time_s``."""

    HEARTBEAT_S = 30.0

    def __init__(self, run_dir, monitor_key: str, mode: str, state: dict, reduce_lr=None, started=None,
                 heartbeat_s: float = HEARTBEAT_S):
        super().__init__()
        self.run_dir = Path(run_dir)
        self.monitor_key = monitor_key
        self.mode = mode
        self.state = dict(state)
        self.reduce_lr = reduce_lr
        self.base_seconds = float(state.get("train_seconds", 0.0))
        self.started = time.perf_counter() if started is None else started
        self.heartbeat_s = heartbeat_s
        self._beat = time.perf_counter()

    def _write_state(self):
        """``state.json`` with ``train_seconds`` brought up to date."""
        self.state["train_seconds"] = self.base_seconds + (time.perf_counter() - self.started)
        runs.write_state(self.run_dir, self.state)
        self._beat = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if time.perf_counter() - self._beat >= self.heartbeat_s:
            self._write_state()

    def _better(self, value, best) -> bool:
        if best is None or not np.isfinite(best):
            return bool(np.isfinite(value))
        return value < best if self.mode == "min" else value > best

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        value = logs.get(self.monitor_key)
        runs.save_model_atomic(self.model, self.run_dir / runs.LAST)
        best = lambda: precision.float32_copy(inference_view(self.model))  # noqa: E731  (scores in float32)
        if value is not None and self._better(float(value), self.state.get("best")):
            runs.save_model_atomic(best(), self.run_dir / runs.BEST)
            self.state.update(best=float(value), best_epoch=epoch)
        elif not (self.run_dir / runs.BEST).is_file():  # a NaN first epoch: still leave a model
            runs.save_model_atomic(best(), self.run_dir / runs.BEST)
            self.state.setdefault("best_epoch", epoch)
        self.state["next_epoch"] = epoch + 1
        for key in ("epoch_seconds", "epoch_cpu_seconds"):
            self.state[key] = list(self.state.get(key, [])) + [logs.get(key)]
        if self.reduce_lr is not None:
            self.state["reduce_lr"] = self.reduce_lr.state()
        self._write_state()  # every epoch too, so a killed run still tells how long it trained


def trim_history(path: Path, next_epoch: int) -> None:
    """Keep only rows of completed epochs (< next_epoch) so a resume never repeats one."""
    if not path.is_file():
        return
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return
    header, body = rows[0], rows[1:]
    keep = [r for r in body if r and r[0].isdigit() and int(r[0]) < next_epoch]
    if len(keep) != len(body):
        runs.atomic_write_text(path, csv_table(header, keep))
