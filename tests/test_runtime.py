"""kerasxai.runtime: the core count, the auto / on / off switches, atomic file writes."""

import ast
import os
import subprocess
import sys

import pytest

from kerasxai import runtime


def test_cores_follows_the_affinity_then_the_cpu_count(monkeypatch):
    if hasattr(os, "sched_getaffinity"):
        assert runtime.cores() == len(os.sched_getaffinity(0))
        monkeypatch.delattr(os, "sched_getaffinity")
    monkeypatch.setattr(os, "cpu_count", lambda: 7)
    assert runtime.cores() == 7
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert runtime.cores() == 1


def test_switch_on_auto_means_jax_on_cpu():
    import jax
    import keras

    assert runtime.switch_on("on", "model.x") is True and runtime.switch_on("off", "model.x") is False
    on_cpu = keras.backend.backend() == "jax" and jax.default_backend() == "cpu"
    assert runtime.jax_on_cpu() is on_cpu and runtime.switch_on("auto", "model.x") is on_cpu
    with pytest.raises(ValueError, match=r"key 'model\.x': must be auto, on or off, got 'fast'"):
        runtime.switch_on("fast", "model.x")
    # YAML reads a bare on / off as a boolean; OmegaConf's str keys hold it as "True" / "False"
    assert runtime.switch_on(True, "model.x") is True and runtime.switch_on("False", "model.x") is False


def test_atomic_text_keeps_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "summary.json"
    runtime.atomic_write_json(path, {"a": 1})

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        runtime.atomic_write_json(path, {"a": 2})
    monkeypatch.undo()
    assert path.read_text().strip().startswith("{") and '"a": 1' in path.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]  # no temp file left behind


def test_atomic_path_replaces_on_success_only(tmp_path, umask):
    path = tmp_path / "new" / "plot.png"  # the folder is created
    with runtime.atomic_path(path, suffix=".png") as tmp:
        assert tmp.parent == path.parent and tmp.name.startswith(".plot.png.") and tmp.suffix == ".png"
        assert not path.exists()
        tmp.write_bytes(b"one")
    assert path.read_bytes() == b"one" and path.stat().st_mode & 0o777 == 0o666 & ~umask
    with pytest.raises(RuntimeError), runtime.atomic_path(path, suffix=".png") as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("writer failed")
    assert path.read_bytes() == b"one"
    assert [p.name for p in path.parent.iterdir()] == ["plot.png"]


def test_temp_path_is_hidden_beside_the_target_with_umask_permissions(tmp_path, umask):
    tmp = runtime.temp_path(tmp_path / "a.json")
    assert tmp.parent == tmp_path and tmp.name.startswith(".a.json.") and tmp.name.endswith(".tmp")
    assert tmp.stat().st_size == 0 and tmp.stat().st_mode & 0o777 == 0o666 & ~umask
    assert runtime.temp_path(tmp_path / "a.json") != tmp


def test_runtime_is_the_ground_floor():
    """Importing kerasxai.runtime loads no other kerasxai module and no framework."""
    code = ("import sys, kerasxai.runtime\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('kerasxai', 'keras', 'jax', 'tensorflow', 'numpy')))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    loaded = ast.literal_eval(r.stdout)
    assert loaded and all(m == "kerasxai" or m.startswith("kerasxai.runtime") for m in loaded), loaded
