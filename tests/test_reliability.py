"""Reliability of training runs: Ctrl-C stops at a batch end and resumes, resume refuses
overrides that break the run, one process per run folder, damaged prepared caches are
rebuilt, failed starts leave no run folder."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import pytest

from kerasxai import runs, training
from kerasxai.config import load_config
from kerasxai.data import pipeline
from kerasxai.data.pipeline import count_tiles, load_split, prepare_dataset, read_manifest
from kerasxai.train import main as train_main

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from test_train import history_epochs, synthetic_overrides  # noqa: E402

SHORT = {"train.steps_per_epoch": 1, "train.max_val_tiles": 8, "train.max_test_tiles": 8}


def make_run(tmp_path, next_epoch=1, **extra):
    """A run folder as an interrupted training leaves it (no model trained: last.keras is a stub)."""
    cfg = load_config(None, synthetic_overrides(tmp_path, **extra))
    run_dir = runs.new_run_dir(cfg)
    runs.write_config(run_dir, cfg)
    runs.write_state(run_dir, {"next_epoch": next_epoch, "best": 0.5, "train_seconds": 3.0})
    (run_dir / runs.LAST).write_bytes(b"stub")
    return run_dir


def dead_pid() -> int:
    """The PID of a child that has exited and been reaped."""
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


def no_hidden_files(run_dir) -> bool:
    return not [p.name for p in Path(run_dir).iterdir() if p.name.startswith(".")]


# ---------------------------------------------------------------- resume overrides


@pytest.mark.parametrize("override, key", [
    ("model.name=mobilenetv3_large", "model.name"),
    ("data.tile.size=48", "data.tile.size"),
    ("data.options.count=20", "data.options.count"),
    ("train.batch_size=4", "train.batch_size"),
    ("train.optimizer=sgd", "train.optimizer"),
])
def test_resume_refuses_overrides_that_break_the_run_before_writing(tmp_path, capsys, override, key):
    run_dir = make_run(tmp_path)
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    assert train_main(["--resume", str(run_dir), override]) == 2
    err = capsys.readouterr().err
    assert f"key '{key}'" in err and "--resume" in err and "Traceback" not in err
    assert err.strip().count("\n") == 0  # one line
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before  # nothing written, no lock left


def test_resume_allows_train_and_eval_overrides(tmp_path):
    stored = load_config(None, synthetic_overrides(tmp_path))
    same_model = synthetic_overrides(tmp_path, **{"model.name": stored.model.name})  # same value: no change
    for extra in (["train.epochs=9", "train.learning_rate=1e-4", "eval.batch_size=8", "train.augment=null",
                   "train.steps_per_epoch=5"], []):
        training.check_resume_overrides(stored, load_config(None, same_model + extra), "runs/x")


# ---------------------------------------------------------------- run folder lock


def test_second_process_on_a_run_folder_is_refused(tmp_path, capsys):
    run_dir = make_run(tmp_path)
    with runs.lock_run(run_dir):
        assert (run_dir / runs.LOCK).read_text().strip() == str(os.getpid())
        with pytest.raises(runs.RunError, match=re.escape(f"'{run_dir}' is in use by process {os.getpid()}")):
            with runs.lock_run(run_dir):
                pass
        config = (run_dir / runs.CONFIG).read_bytes()
        assert train_main(["--resume", str(run_dir), "train.epochs=3"]) == 2
        err = capsys.readouterr().err
        assert str(run_dir) in err and f"process {os.getpid()}" in err and err.strip().count("\n") == 0
        assert (run_dir / runs.CONFIG).read_bytes() == config  # the override was not written
    assert no_hidden_files(run_dir)  # released: .lock removed
    with runs.lock_run(run_dir):  # and free again
        pass


def test_stale_lock_is_taken_over(tmp_path):
    run_dir = make_run(tmp_path)
    lock = run_dir / runs.LOCK
    lock.write_text(f"{dead_pid()}\n")  # left by a killed process: nobody holds the flock
    with runs.lock_run(run_dir):
        assert lock.read_text().strip() == str(os.getpid())
    # a flock still held (e.g. by a forked child) while the PID in the file is gone
    import fcntl

    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, f"{dead_pid()}\n".encode())
        with runs.lock_run(run_dir):
            assert lock.read_text().strip() == str(os.getpid())
    finally:
        os.close(fd)
    assert no_hidden_files(run_dir)


# ---------------------------------------------------------------- prepared cache


def _prepared(tmp_path, capsys):
    cfg = load_config(None, ["data.reader=synthetic", "data.options.count=12", "data.options.height=64",
                             "data.options.width=64", "data.tile.size=32", "data.tile.overlap=0",
                             "model.name=x", f"data.cache_dir={tmp_path / 'cache'}"])
    out = prepare_dataset(cfg, progress=False)
    capsys.readouterr()
    return cfg, out


def _intact(out):
    m = read_manifest(out)
    for split, names in m["shards"].items():
        for name in names:
            assert pipeline.shard_digest(out / name) == m["shard_digests"][name]
    assert sum(1 for _ in load_split(out, "train")) == count_tiles(out, "train")


def test_manifest_records_shard_sizes_and_checksums(tmp_path, capsys):
    _, out = _prepared(tmp_path, capsys)
    m = read_manifest(out)
    names = [n for ns in m["shards"].values() for n in ns]
    assert names and set(m["shard_digests"]) == set(names)
    for name in names:
        assert m["shard_digests"][name]["bytes"] == (out / name).stat().st_size
    assert pipeline.cache_problem(out) is None


@pytest.mark.parametrize("damage, why", [
    ("truncate", "is damaged"), ("overwrite", "checksum mismatch"), ("remove", "is missing"),
    ("old_manifest", "predates shard checksums"),
])
def test_damaged_cache_is_rebuilt(tmp_path, capsys, damage, why):
    cfg, out = _prepared(tmp_path, capsys)
    shard = out / read_manifest(out)["shards"]["train"][0]
    data = shard.read_bytes()
    if damage == "truncate":
        shard.write_bytes(data[: len(data) // 2])
    elif damage == "overwrite":  # same size, other bytes
        shard.write_bytes(data[:100] + bytes(b ^ 0xFF for b in data[100:200]) + data[200:])
    elif damage == "remove":
        shard.unlink()
    else:  # written before shard checksums existed
        m = read_manifest(out)
        del m["shard_digests"]
        (out / "manifest.json").write_text(json.dumps(m))
    assert pipeline.cache_problem(out) is not None
    assert prepare_dataset(cfg, progress=False) == out
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 1 and why in printed[0] and "rebuilding" in printed[0] and str(out) in printed[0]
    if damage != "old_manifest":
        assert shard.name in printed[0]
    _intact(out)
    assert sorted(p.name for p in out.parent.iterdir() if not p.name.startswith(".lock-")) == [out.name]
    assert prepare_dataset(cfg, progress=False) == out and capsys.readouterr().out == ""  # intact: reused


# ---------------------------------------------------------------- failed starts


def test_empty_validation_split_fails_before_a_run_folder(tmp_path, capsys):
    code = train_main(["--config", str(REPO / "configs" / "demo.yaml"),
                       *synthetic_overrides(tmp_path, **{"data.options.count": 1})])
    err = capsys.readouterr().err
    assert code == 2 and "'val' split" in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()


def test_missing_weights_file_fails_before_a_run_folder(tmp_path, capsys):
    code = train_main(["--config", str(REPO / "configs" / "demo.yaml"),
                       *synthetic_overrides(tmp_path, **{"model.weights": str(tmp_path / "none.weights.h5")})])
    assert code == 2 and "model.weights" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "cache").exists()


def test_failure_before_the_first_epoch_removes_the_run_folder(tmp_path, monkeypatch, capsys):
    def offline(cfg):
        raise OSError("imagenet weights: URL fetch failure (offline)")

    monkeypatch.setattr(training, "build_model", offline)
    cfg = load_config(None, synthetic_overrides(tmp_path))
    with pytest.raises(OSError, match="offline"):
        training.train(cfg, verbose=0)
    assert list((tmp_path / "runs").iterdir()) == []


def test_ctrl_c_before_the_first_epoch_removes_the_run_folder(tmp_path, monkeypatch):
    def interrupted(cfg, run_dir, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "fit", interrupted)
    with pytest.raises(training.TrainingInterrupted) as info:
        training.train(load_config(None, synthetic_overrides(tmp_path)), verbose=0)
    assert list((tmp_path / "runs").iterdir()) == []
    assert "nothing was kept" in info.value.hint()


# ---------------------------------------------------------------- Ctrl-C


class SigintAt(keras.callbacks.Callback):
    """Sends this process SIGINT after batch 0 of `epoch` where a KeyboardInterrupt would be
    swallowed (as Keras' convert_to_numpy does on JAX), and records what the run folder shows then."""

    def __init__(self, epoch, run_root):
        super().__init__()
        self.epoch, self.run_root, self.seen = epoch, Path(run_root), {}

    def on_epoch_begin(self, epoch, logs=None):
        self.current = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.current == self.epoch and batch == 0 and not self.seen:
            (run_dir,) = self.run_root.iterdir()
            self.seen = {"state": runs.read_state(run_dir), "lock": (run_dir / runs.LOCK).read_text().strip()}
            try:
                with runs.lock_run(run_dir):
                    self.seen["locked"] = False
            except runs.RunError:
                self.seen["locked"] = True
            try:
                signal.raise_signal(signal.SIGINT)
            except KeyboardInterrupt:
                pass  # lost: only a stop request set by the handler ends the training


@pytest.mark.slow
def test_ctrl_c_stops_at_a_batch_end_and_the_run_resumes(tmp_path, capsys):
    previous = signal.getsignal(signal.SIGINT)
    cfg = load_config(None, synthetic_overrides(tmp_path, **{"train.epochs": 3}))
    sigint = SigintAt(1, tmp_path / "runs")
    with pytest.raises(training.TrainingInterrupted) as info:
        training.train(cfg, callbacks=[sigint], verbose=0)
    assert signal.getsignal(signal.SIGINT) is previous  # handler restored
    run_dir = info.value.run_dir
    # while training: the folder was locked by this process, and epoch 0 already counted its time
    assert sigint.seen["lock"] == str(os.getpid()) and sigint.seen["locked"]
    assert sigint.seen["state"]["next_epoch"] == 1 and sigint.seen["state"]["train_seconds"] > 0
    # the interrupted epoch 1 is not counted: state, history and last.keras are those of epoch 0
    state = runs.read_state(run_dir)
    assert state["next_epoch"] == 1 and len(state["epoch_seconds"]) == 1
    assert state["train_seconds"] > sigint.seen["state"]["train_seconds"]
    assert history_epochs(run_dir) == [0]
    last = keras.saving.load_model(run_dir / runs.LAST)
    assert int(last.optimizer.iterations) == cfg.train.steps_per_epoch
    assert not (run_dir / runs.SUMMARY).exists() and no_hidden_files(run_dir)
    assert f"python -m kerasxai.train --resume {run_dir}" in info.value.hint()

    assert train_main(["--resume", str(run_dir), "--quiet"]) == 0
    assert "at epoch 2/3" in capsys.readouterr().out
    assert history_epochs(run_dir) == [0, 1, 2]
    summary = json.loads((run_dir / runs.SUMMARY).read_text())
    assert summary["epochs"] == 3 and summary["wall_time_s"] >= state["train_seconds"]


def _wait_for(predicate, proc, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            return False
        if predicate():
            return True
        time.sleep(0.5)
    return False


def _state(pattern, root):
    for path in Path(root).glob(pattern):
        try:
            return json.loads(path.read_text()), path.parent
        except (OSError, ValueError):
            pass
    return None, None


def _child(args, tmp_path, backend, ignore_sigint=False):
    """`python -m args` with stdout / stderr in files (a full pipe would stall the child)."""
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2")
    cmd = [sys.executable, "-m", *args]
    if ignore_sigint:  # the shell execs python with SIGINT ignored
        cmd = ["sh", "-c", 'trap "" INT; exec "$@"', "sh", *cmd]
    with open(tmp_path / "out.txt", "w") as out, open(tmp_path / "err.txt", "w") as err:
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=err)


def _interrupt(proc, pattern, root, timeout=900):
    """Wait until a run under `root` completed an epoch, send SIGINT, return (stderr, run_dir)."""
    err_file = Path(root) / "err.txt"
    try:
        started = _wait_for(lambda: (_state(pattern, root)[0] or {}).get("next_epoch", 0) >= 1, proc, timeout)
        assert started, (proc.poll(), err_file.read_text()[-3000:])
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=180)  # bounded: stops at the next batch end
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return err_file.read_text(), _state(pattern, root)[1]


@pytest.mark.slow
@pytest.mark.parametrize("backend, ignored", [("jax", False), ("tensorflow", True)],
                         ids=["jax", "tensorflow-sigint-ignored"])
def test_sigint_to_the_train_cli_exits_130_and_resumes(tmp_path, backend, ignored):
    """`ignored`: started with SIGINT ignored, as a shell script starts a background job (`&`)."""
    overrides = synthetic_overrides(tmp_path, **SHORT, **{"train.epochs": 500})
    args = ["kerasxai.train", "--config", str(REPO / "configs" / "demo.yaml"), "--quiet", *overrides]
    proc = _child(args, tmp_path, backend, ignore_sigint=ignored)
    err, run_dir = _interrupt(proc, "runs/*/state.json", tmp_path)
    assert proc.returncode == 130, err[-3000:]
    assert f"python -m kerasxai.train --resume {run_dir}" in err and "Traceback" not in err
    state = runs.read_state(run_dir)
    done = state["next_epoch"]
    assert done >= 1 and history_epochs(run_dir) == list(range(done)) and state["train_seconds"] > 0
    assert no_hidden_files(run_dir) and not (run_dir / runs.SUMMARY).exists()

    env = dict(os.environ, KERAS_BACKEND=backend)
    again = subprocess.run([sys.executable, "-m", "kerasxai.train", "--resume", str(run_dir), "--quiet",
                            f"train.epochs={done + 1}"], cwd=REPO, env=env, capture_output=True, text=True,
                           timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert history_epochs(run_dir) == list(range(done + 1))
    summary = json.loads((run_dir / runs.SUMMARY).read_text())
    assert summary["epochs"] == done + 1 and summary["wall_time_s"] > state["train_seconds"]


@pytest.mark.slow
def test_sigint_to_the_tune_cli_stops_the_trial_and_exits_130(tmp_path):
    overrides = synthetic_overrides(tmp_path, **SHORT) + [
        f"tune.dir={tmp_path / 'tuning'}", "tune.batch_sizes=[4,8]", "tune.epochs=500"]
    proc = _child(["kerasxai.tune", "--config", str(REPO / "configs" / "demo.yaml"), "--quiet", "--trials", "2",
                   *overrides], tmp_path, "jax")
    err, run_dir = _interrupt(proc, "tuning/syn/runs/*/state.json", tmp_path)
    assert proc.returncode == 130, err[-3000:]
    assert "run the same command again" in err and "python -m kerasxai.tune --config" in err
    assert "Traceback" not in err
    state = runs.read_state(run_dir)
    assert state["next_epoch"] >= 1 and history_epochs(run_dir) == list(range(state["next_epoch"]))
    assert no_hidden_files(run_dir)


def test_prepared_folder_gets_the_umask_permissions(tmp_path, capsys, umask):
    from conftest import modes

    _, out = _prepared(tmp_path, capsys)
    got = modes(out)
    assert got.pop(".") == 0o777 & ~umask  # not mkdtemp's 0700
    assert got and set(got.values()) == {0o666 & ~umask}


# ---------------------------------------------------------------- leftovers of killed processes


def _leftovers(run_dir: Path, age_s: float = 0.0) -> list[Path]:
    """What a kill during atomic writes leaves: a checkpoint and a state file half-written."""
    made = [run_dir / ".last.k1lld0ne.keras", run_dir / ".best.x7y8z9ab.keras", run_dir / ".state.json.q1w2e3.tmp"]
    for p in made:
        p.write_bytes(b"half")
        if age_s:
            os.utime(p, (time.time() - age_s, time.time() - age_s))
    return made


def test_resume_removes_temp_files_left_by_a_kill(tmp_path, capsys):
    run_dir = make_run(tmp_path, next_epoch=1)
    (run_dir / runs.LAST).unlink()  # the resume stops right after taking the folder
    made = _leftovers(run_dir)
    with pytest.raises(runs.RunError, match="cannot be resumed"):
        training.resume(run_dir)
    assert not any(p.exists() for p in made) and "removed 3 temporary file(s)" in capsys.readouterr().out
    assert (run_dir / runs.STATE).is_file() and (run_dir / runs.CONFIG).is_file()


def test_runs_dir_sweep_spares_live_runs_and_fresh_files(tmp_path):
    root = tmp_path / "runs"
    killed, live, fresh = (root / n for n in ("killed", "live", "fresh"))
    for d in (killed, live, fresh):
        d.mkdir(parents=True)
    old = _leftovers(killed, age_s=2 * runs.STALE_AFTER_S)
    kept = _leftovers(live, age_s=2 * runs.STALE_AFTER_S) + _leftovers(fresh)  # in use / maybe being written
    (killed / runs.LOCK).write_text(f"{dead_pid()}\n")  # a lock its dead holder left
    with runs.lock_run(live):
        assert runs.in_use(live) and not runs.in_use(killed) and not runs.in_use(fresh)
        assert sorted(runs.sweep_runs_dir(root)) == sorted(old)
    assert all(p.exists() for p in kept) and not any(p.exists() for p in old)


def test_prepare_removes_build_folders_of_killed_prepares_of_other_keys(tmp_path, capsys):
    cache = tmp_path / "cache"
    cache.mkdir()
    dead, me = dead_pid(), os.getpid()
    killed = cache / f".tmp-synthetic-aaaa000011112222-{dead}-k1ll3d_"
    replaced = cache / f".tmp-replaced-bbbb000011112222-{dead}-old"
    running = cache / f".tmp-synthetic-cccc000011112222-{me}-l1v3__"  # a live prepare's
    locked = cache / f".tmp-synthetic-dddd000011112222-{dead}-l0ck3d"  # its key's lock is held
    reused = cache / f".tmp-synthetic-eeee000011112222-{me}-r3us3d"  # PID alive, but a day old
    for d in (killed, replaced, running, locked, reused):
        (d / "shard").mkdir(parents=True)
    old = time.time() - 2 * pipeline.STALE_BUILD_S
    os.utime(reused, (old, old))
    import fcntl

    with open(cache / ".lock-dddd000011112222", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _prepared(tmp_path, capsys)
    assert running.is_dir() and locked.is_dir()
    assert not killed.exists() and not replaced.exists() and not reused.exists()


def test_an_interrupted_trial_attempt_is_removed_when_the_trial_runs_again(tmp_path):
    from kerasxai import tuning
    from test_tune import search_and_trial_config

    cfg, trial_cfg = search_and_trial_config(tmp_path, "03")
    root = Path(trial_cfg.train.runs_dir)
    attempt = root / f"{trial_cfg.name}-20260101-120000"
    live = root / f"{trial_cfg.name}-20260101-130000-2"
    other = root / f"{cfg.name}-trial_031-20260101-120000"  # another trial
    for d in (attempt, live, other):
        d.mkdir(parents=True)
    with runs.lock_run(live):
        assert tuning.remove_interrupted_attempts(trial_cfg) == [attempt]
    assert live.is_dir() and other.is_dir() and not attempt.exists()


def test_time_before_a_kill_counts_in_the_state(tmp_path):
    """train_seconds is brought up to date between epochs, so a resume after a kill adds it."""
    run_dir = make_run(tmp_path, next_epoch=1)
    started = time.perf_counter() - 5.0  # training went on for 5 s after the resume began
    cb = training.RunCheckpoint(run_dir, "val_loss", "min", runs.read_state(run_dir), started=started,
                                heartbeat_s=0.0)
    cb.on_train_batch_end(0)
    state = runs.read_state(run_dir)
    assert state["train_seconds"] >= 3.0 + 5.0 and state["next_epoch"] == 1
    quiet = training.RunCheckpoint(run_dir, "val_loss", "min", state, started=started)
    quiet.on_train_batch_end(0)  # within the heartbeat: nothing written
    assert runs.read_state(run_dir) == state
