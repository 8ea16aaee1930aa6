"""Run folders: fresh names, crash-safe checkpoints, load_run (atomic writes: test_runtime.py)."""

import zipfile

import keras
import numpy as np
import pytest

from kerasxai import runs, runtime
from kerasxai.config import load_config


def _cfg(tmp_path, name="exp"):
    return load_config(None, [f"name={name}", "data.reader=synthetic", "model.name=vit_tiny_patch16_224",
                              f"train.runs_dir={tmp_path / 'runs'}"])


def _tiny_model():
    inp = keras.Input((4,))
    return keras.Model(inp, {"score": keras.layers.Dense(1, activation="sigmoid")(inp),
                             "heatmap": keras.layers.Reshape((2, 2))(inp)})


def test_new_run_dir_never_reuses_a_folder(tmp_path):
    cfg = _cfg(tmp_path)
    now = 1_800_000_000.0  # the same timestamp every time: names must still differ
    made = [runs.new_run_dir(cfg, now=now) for _ in range(3)]
    assert len({p.name for p in made}) == 3
    assert made[1].name == made[0].name + "-2" and made[2].name == made[0].name + "-3"
    assert all(p.is_dir() and not any(p.iterdir()) for p in made)
    # a folder someone else already filled is skipped, and its files stay untouched
    (made[0] / "best.keras").write_text("other run")
    again = runs.new_run_dir(cfg, now=now)
    assert again not in made and (made[0] / "best.keras").read_text() == "other run"


def test_crash_during_checkpoint_leaves_last_good_one(tmp_path, monkeypatch):
    model = _tiny_model()
    path = tmp_path / "last.keras"
    runs.save_model_atomic(model, path)
    good = [w.copy() for w in model.get_weights()]
    model.set_weights([w + 1 for w in good])

    real_save = keras.Model.save

    def crashing_save(self, filepath, *a, **k):  # writes a partial zip, then dies
        with open(filepath, "wb") as f:
            f.write(b"PK\x03\x04 partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(keras.Model, "save", crashing_save)
    with pytest.raises(KeyboardInterrupt):
        runs.save_model_atomic(model, path)
    monkeypatch.setattr(keras.Model, "save", real_save)
    assert zipfile.is_zipfile(path)
    loaded = keras.saving.load_model(path, compile=False)
    for a, b in zip(loaded.get_weights(), good):
        np.testing.assert_array_equal(a, b)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.keras"]


def test_load_run_round_trip_and_clear_errors(tmp_path):
    cfg = _cfg(tmp_path)
    run_dir = runs.new_run_dir(cfg)
    runs.write_config(run_dir, cfg)
    with pytest.raises(runs.RunError, match="no completed epoch"):
        runs.load_run(run_dir)
    model = _tiny_model()
    runs.save_model_atomic(model, run_dir / runs.BEST)
    loaded_cfg, loaded = runs.load_run(run_dir)
    assert loaded_cfg.name == "exp" and loaded_cfg.model.name == cfg.model.name
    x = np.ones((2, 4), "float32")
    np.testing.assert_allclose(loaded.predict(x, verbose=0)["score"], model.predict(x, verbose=0)["score"])
    with pytest.raises(runs.RunError, match="not a run folder"):
        runs.load_run(tmp_path)
    with pytest.raises(runs.RunError, match="best.*last"):
        runs.load_run(run_dir, which="middle")


def test_files_get_the_umask_permissions(tmp_path, umask):
    """Atomic writes and checkpoints are readable by whom the umask allows (a serving container
    running as another user), not 0600 as the temporary file they start from."""
    from conftest import modes

    runtime.atomic_write_json(tmp_path / "summary.json", {"a": 1})
    runs.save_model_atomic(_tiny_model(), tmp_path / "last.keras")
    runs.write_config(tmp_path, _cfg(tmp_path))
    assert runtime.current_umask() == umask
    got = modes(tmp_path)
    del got["."]
    assert got == {name: 0o666 & ~umask for name in ("summary.json", "last.keras", "config.yaml")}


def test_remove_temp_files_finds_what_atomic_writes_leave(tmp_path):
    """The names kerasxai.runtime gives its temporary files match runs.TEMP_PATTERNS."""
    names = (runs.LAST, runs.BEST, runs.STATE, runs.CONFIG, runs.SUMMARY)
    left = [runtime.temp_path(tmp_path / n, ".keras" if n.endswith(".keras") else ".tmp") for n in names]
    (tmp_path / runs.STATE).write_text("{}")  # a finished file stays
    assert sorted(runs.remove_temp_files(tmp_path)) == sorted(left)
    assert [p.name for p in tmp_path.iterdir()] == [runs.STATE]
