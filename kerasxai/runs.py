"""Run folders: where one training run keeps its config, checkpoints, logs and summary.

A run folder is ``<train.runs_dir>/<name>-<YYYYmmdd-HHMMSS>/`` holding

- ``config.yaml``   the resolved config (what `load_run` rebuilds from);
- ``best.keras``    the model at the best epoch (by ``train.monitor``), full {score, heatmap};
- ``last.keras``    the model after the last completed epoch, with its optimizer state;
- ``state.json``    how far training got (next epoch, best monitored value, LR-schedule state);
- ``history.csv``   one row per epoch (Keras CSVLogger, appended on resume);
- ``tensorboard/``  TensorBoard logs;
- ``summary.json``  val/test loss and accuracy, epochs, wall time, backend, versions;
- ``.lock``         while a train / resume / tune trial uses the folder: the PID of that process.

Every file is written to a temporary name first and moved into place with ``os.replace``,
so an interrupted run leaves the previous good file readable. A new run never reuses an
existing folder: a collision gets a ``-2``, ``-3``, ... suffix.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import time
from pathlib import Path

from kerasxai.config import Config, ConfigError, load_config, to_yaml
from kerasxai.runtime import atomic_path, atomic_write_json, atomic_write_text, pid_alive

CONFIG = "config.yaml"
BEST = "best.keras"
LAST = "last.keras"
STATE = "state.json"
HISTORY = "history.csv"
SUMMARY = "summary.json"
TENSORBOARD = "tensorboard"
LOCK = ".lock"


class RunError(ValueError):
    """A run folder is missing, incomplete or unreadable; the message says what to do."""


def new_run_dir(cfg: Config, now: float | None = None) -> Path:
    """Create and return a fresh, empty run folder; never returns an existing one."""
    root = Path(cfg.train.runs_dir)
    root.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    base = f"{cfg.name}-{stamp}"
    for i in range(1, 10_000):
        path = root / (base if i == 1 else f"{base}-{i}")
        try:
            path.mkdir()  # atomic: fails when another run (or process) took the name
        except FileExistsError:
            continue
        return path
    raise RunError(f"could not create a new run folder under '{root}' for '{base}'")


def run_dirs(root: str | Path, name: str) -> list[Path]:
    """The run folders :func:`new_run_dir` made under `root` for config name `name`, sorted."""
    pattern = re.compile(re.escape(name) + r"-\d{8}-\d{6}(-\d+)?")
    root = Path(root)
    return [p for p in sorted(root.iterdir()) if p.is_dir() and pattern.fullmatch(p.name)] if root.is_dir() else []


def save_model_atomic(model, path: str | Path) -> None:
    """``model.save`` to a temporary ``.keras`` file, then ``os.replace`` onto `path`.

    Keras writes a .keras zip in place, so a crash mid-save would corrupt the file;
    this keeps the previous checkpoint intact until the new one is complete. The file gets the
    umask's permissions.
    """
    with atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)


def write_config(run_dir: str | Path, cfg: Config) -> None:
    atomic_write_text(Path(run_dir) / CONFIG, to_yaml(cfg))


def read_state(run_dir: str | Path) -> dict | None:
    """The saved training state, or None when no epoch has completed yet."""
    path = Path(run_dir) / STATE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise RunError(f"'{path}' is unreadable ({exc}); start a new run instead of resuming") from exc


def write_state(run_dir: str | Path, state: dict) -> None:
    atomic_write_json(Path(run_dir) / STATE, state)


def _lock_pid(fd: int) -> int | None:
    """The PID written in an open lock file (None while its holder has not written it yet)."""
    try:
        return int(os.pread(fd, 32, 0).decode().strip())
    except (OSError, ValueError, UnicodeDecodeError):
        return None


def _same_file(fd: int, path: Path) -> bool:
    """Whether `path` still names the file open as `fd` (not removed or replaced since)."""
    try:
        a, b = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _acquire(run_dir: Path) -> int:
    """An fd holding ``flock`` on ``run_dir/.lock`` with this PID in it, or a RunError.

    The kernel drops a lock when its holder dies; a lock still held while the PID in the file is
    gone (a forked child kept the fd) is stale and taken over by replacing the file.
    """
    path = run_dir / LOCK
    for _ in range(10):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _lock_pid(fd)
            stale = pid is not None and not pid_alive(pid) and _same_file(fd, path)
            os.close(fd)
            if stale:
                path.unlink(missing_ok=True)
                continue
            holder = f"process {pid}" if pid is not None else "another process"
            raise RunError(f"run folder '{run_dir}' is in use by {holder} (a train, resume or tune trial): "
                           "wait for it to finish or stop it, then run again") from None
        if not _same_file(fd, path):  # replaced by a takeover meanwhile: lock the new file
            os.close(fd)
            continue
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return fd
    raise RunError(f"run folder '{run_dir}': could not take '{path}' (it keeps changing): run again")


@contextlib.contextmanager
def lock_run(run_dir: str | Path):
    """Exclusive use of a run folder for the duration of the block, so two processes never
    train into the same folder; ``.lock`` is removed again on the way out."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"'{run_dir}' is not a run folder: pass a folder written by python -m kerasxai.train")
    fd = _acquire(run_dir)
    try:
        yield run_dir
    finally:
        if _same_file(fd, run_dir / LOCK):
            (run_dir / LOCK).unlink(missing_ok=True)
        os.close(fd)


def in_use(run_dir: str | Path) -> bool:
    """Whether a live process holds the run folder's lock (see :func:`lock_run`)."""
    path = Path(run_dir) / LOCK
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _lock_pid(fd)
            return pid is None or pid_alive(pid)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


# what an interrupted atomic write (kerasxai.runtime.files) leaves: ``.<name>.<random>.tmp`` /
# ``.<name>.<random>.keras``; the patterns also match ``.<stem>.<random>.keras``
TEMP_PATTERNS = (".*.tmp", f".{Path(LAST).stem}.*.keras", f".{Path(BEST).stem}.*.keras")
STALE_AFTER_S = 3600.0  # no write takes this long: older temp files in an unlocked folder are left over


def remove_temp_files(run_dir: str | Path, min_age_s: float = 0.0) -> list[Path]:
    """Remove what killed atomic writes left in `run_dir` (older than `min_age_s`); the caller
    makes sure no live process writes there. Returns what was removed."""
    removed, now = [], time.time()
    for pattern in TEMP_PATTERNS:
        for p in Path(run_dir).glob(pattern):
            try:
                if p.is_file() and now - p.stat().st_mtime >= min_age_s:
                    p.unlink()
                    removed.append(p)
            except FileNotFoundError:
                pass
    return removed


def sweep_runs_dir(root: str | Path, keep: Path | None = None) -> list[Path]:
    """Temp files of killed runs in the run folders under `root` that no live process holds,
    older than STALE_AFTER_S (a run of an older version may write without a lock); `keep` is
    left alone. Returns what was removed."""
    removed = []
    for run_dir in sorted(Path(root).iterdir()) if Path(root).is_dir() else []:
        if run_dir.is_dir() and run_dir != keep and not in_use(run_dir):
            removed += remove_temp_files(run_dir, STALE_AFTER_S)
    return removed


def resolve_run(run: str | Path) -> Path:
    """A run folder, or the folder of a model shipped with the package (by its name).

    A folder that exists wins over a shipped name; anything else is a :class:`RunError` that
    lists the shipped names.
    """
    path = Path(run)
    if path.is_dir():
        return path
    from kerasxai.pretrained import pretrained_dir, pretrained_names

    if str(run) in pretrained_names():
        return pretrained_dir(str(run))
    names = ", ".join(pretrained_names()) or "none"
    raise RunError(f"'{run}' is neither a run folder nor a shipped model (shipped: {names}): "
                   "pass a folder written by python -m kerasxai.train or one of those names")


def run_config(run_dir: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """The config stored in a run folder or shipped model (with optional ``key=value`` overrides)."""
    run_dir = resolve_run(run_dir)
    if not (run_dir / CONFIG).is_file():
        raise RunError(f"'{run_dir}' is not a run folder: '{CONFIG}' is missing (pass a folder under runs/)")
    try:
        return load_config(run_dir / CONFIG, overrides)
    except ConfigError as exc:
        raise RunError(f"'{run_dir / CONFIG}': {exc}") from exc


def load_run(run_dir: str | Path, which: str = "best"):
    """Load a finished (or interrupted) run, or a shipped model by name: ``(Config, keras.Model)``.

    `which` is ``"best"`` or ``"last"``; the model has the {"score", "heatmap"} outputs and
    is returned without its training configuration (ready for predict / evaluate).
    """
    if which not in ("best", "last"):
        raise RunError(f"which must be 'best' or 'last', got '{which}'")
    run_dir = resolve_run(run_dir)
    cfg = run_config(run_dir)
    path = run_dir / (BEST if which == "best" else LAST)
    if not path.is_file():
        raise RunError(
            f"'{path}' not found: the run has no completed epoch yet "
            f"(resume it with python -m kerasxai.train --config {run_dir / CONFIG} --resume {run_dir})"
        )
    import keras

    import kerasxai.models  # noqa: F401  registers the custom layers for deserialization
    from kerasxai.models.cnn import convolution_forms
    from kerasxai.models.contract import inference_view

    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as exc:  # a corrupt or foreign file
        raise RunError(f"'{path}' could not be loaded: {exc}") from exc
    # the convolutions in this backend's forms, whichever backend trained the run
    model = convolution_forms(model, cfg.model.fast_depthwise, cfg.model.fast_pointwise)
    return cfg, inference_view(model)  # last.keras of a distilled DeiT has training outputs too


def versions() -> dict:
    """Library versions recorded in summary.json."""
    import importlib.metadata as md

    out = {}
    for pkg in ("kerasxai", "keras", "jax", "jaxlib", "tensorflow-cpu", "tensorflow", "keras-tuner"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out
