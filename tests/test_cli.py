"""The `kerasxai` console script (a thin dispatcher to each command's main(argv)) and the
error mapping every command shares."""

import importlib
import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

import kerasxai
from kerasxai import cli

REPO = Path(__file__).resolve().parents[1]


def test_help_lists_every_command_with_its_description(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    for name in cli.COMMANDS:
        desc = importlib.import_module(f"kerasxai.cli.{name}").DESCRIPTION
        assert any(line.split() == [name, *desc.split()] for line in lines), (name, out)


def test_no_command_is_usage_on_stderr_exit_2(capsys):
    assert cli.main([]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("usage: kerasxai")


@pytest.mark.parametrize("command", ["nope", "--config", "Train"])
def test_unknown_command_one_line_exit_2(capsys, command):
    assert cli.main([command, "--config", "x.yaml"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and repr(command) in err
    assert all(name in err for name in cli.COMMANDS)


def test_version(capsys):
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.split() == ["kerasxai", kerasxai.__version__]


@pytest.mark.parametrize("command", cli.COMMANDS)
def test_passes_argv_and_exit_code_through(monkeypatch, command):
    seen = []
    module = importlib.import_module(f"kerasxai.cli.{command}")
    monkeypatch.setattr(module, "main", lambda argv: seen.append(argv) or 17)
    argv = ["--config", "c.yaml", "train.epochs=2", "--help"]
    assert cli.main([command, *argv]) == 17
    assert seen == [argv]


@pytest.mark.parametrize("command", cli.COMMANDS)
def test_python_m_module_starts_the_same_command(command):
    """``python -m kerasxai.<command>`` and ``kerasxai <command>`` run the same main."""
    assert importlib.import_module(f"kerasxai.{command}").main is importlib.import_module(f"kerasxai.cli.{command}").main


def test_prepare_help_is_prepares_usage(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["prepare", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m kerasxai.prepare") and "--config" in out


def test_prepare_bad_input_exit_2(tmp_path, capsys):
    missing = tmp_path / "missing.yaml"
    assert cli.main(["prepare", "--config", str(missing)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "missing.yaml" in err


def test_installed_entry_point_and_version():
    (ep,) = importlib.metadata.entry_points(group="console_scripts", name="kerasxai")
    assert ep.load() is cli.main
    assert importlib.metadata.version("kerasxai") == kerasxai.__version__


HEAVY = ("keras", "jax", "tensorflow", "omegaconf", "numpy")


def test_help_imports_no_framework():
    code = (
        "import contextlib, io, sys\n"
        "from kerasxai import cli\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    assert cli.main(['--help']) == 0 and cli.main(['--version']) == 0\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


@pytest.mark.parametrize("launcher", ["script", "module"])
def test_command_line_exit_codes(tmp_path, launcher):
    if launcher == "script":
        script = Path(sys.executable).parent / "kerasxai"
        if not script.exists():
            pytest.skip(f"{script} not installed (pip install -e .)")
        base = [str(script)]
    else:
        base = [sys.executable, "-m", "kerasxai"]
    r = subprocess.run([*base, "prepare", "--help"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "usage: python -m kerasxai.prepare" in r.stdout
    r = subprocess.run([*base, "nope"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "prepare" in r.stderr


def test_dispatch_tunes_malloc_before_the_command(monkeypatch):
    calls = []
    monkeypatch.setattr(cli, "keep_large_blocks", lambda: calls.append("malloc"))
    monkeypatch.setattr(importlib.import_module("kerasxai.cli.prepare"), "main", lambda argv: calls.append(argv) or 0)
    assert cli.main(["prepare", "--help"]) == 0
    assert calls == ["malloc", ["--help"]]
    calls.clear()
    assert cli.main(["--version"]) == 0 and calls == []  # no command ran


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the malloc tuning is Linux/glibc only")
@pytest.mark.parametrize("command", cli.COMMANDS)
def test_python_m_command_tunes_malloc(command):
    """``python -m kerasxai.<command>`` starts through cli.run like the console script."""
    code = (
        "import contextlib, io, runpy, sys\n"
        "from kerasxai.runtime import malloc\n"
        "sys.argv = ['x', '--help']\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        f"    runpy.run_module('kerasxai.{command}', run_name='__main__')\n"
        "print(malloc.TUNED)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "KERASXAI_MALLOC"}
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "True"


# ------------------------------------------------------------------ the error mapping, every command

# command -> (module, function its first library step calls, argv)
FIRST_STEP = {
    "prepare": ("kerasxai.config", "load_config", ["--config", "c.yaml"]),
    "train": ("kerasxai.config", "load_config", ["--config", "c.yaml"]),
    "tune": ("kerasxai.config", "load_config", ["--config", "c.yaml"]),
    "evaluate": ("kerasxai.run_evaluation", "evaluate_runs", ["--runs", "r"]),
    "predict": ("kerasxai.runs", "resolve_run", ["--run", "r", "x.png", "--out", "o"]),
    "export": ("kerasxai.runs", "resolve_run", ["--run", "r", "--out", "o/1"]),
    "demo": ("kerasxai.cli.demo", "_run", []),
}


def _fail_first_step(monkeypatch, command, exc):
    module, name, argv = FIRST_STEP[command]

    def fail(*args, **kwargs):
        raise exc

    monkeypatch.setattr(importlib.import_module(module), name, fail)
    return argv


def test_every_command_is_checked_here():
    assert sorted(FIRST_STEP) == sorted(cli.COMMANDS)


@pytest.mark.parametrize("command", cli.COMMANDS)
def test_ctrl_c_exits_130_with_one_line(monkeypatch, capsys, tmp_path, command):
    monkeypatch.chdir(tmp_path)
    argv = _fail_first_step(monkeypatch, command, KeyboardInterrupt())
    assert cli.main([command, *argv]) == 130
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "interrupted" in err and "Traceback" not in err, err


@pytest.mark.parametrize("command", cli.COMMANDS)
def test_bad_input_exits_2_with_the_message(monkeypatch, capsys, tmp_path, command):
    from kerasxai.runs import RunError

    monkeypatch.chdir(tmp_path)
    argv = _fail_first_step(monkeypatch, command, RunError("'r' is not a run folder: pass another"))
    assert cli.main([command, *argv]) == 2
    prefix = {"predict": "kerasxai.predict: error", "export": "kerasxai.export: error", "demo": "demo"}
    assert capsys.readouterr().err.splitlines() == [f"{prefix.get(command, 'error')}: 'r' is not a run folder: pass another"]


@pytest.mark.parametrize("command", ["train", "predict"])
def test_a_bug_keeps_its_traceback(monkeypatch, tmp_path, command):
    monkeypatch.chdir(tmp_path)
    argv = _fail_first_step(monkeypatch, command, ZeroDivisionError("a bug"))
    with pytest.raises(ZeroDivisionError):
        cli.main([command, *argv])


def test_train_ctrl_c_says_what_was_kept(monkeypatch, capsys, tmp_path):
    from kerasxai import training

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("name: x\n")

    def interrupted(run, *args, **kwargs):
        raise training.TrainingInterrupted(run)

    monkeypatch.setattr(training, "resume", interrupted)
    assert cli.main(["train", "--resume", str(run_dir)]) == 130
    assert f"--resume {run_dir}" in capsys.readouterr().err
    monkeypatch.setattr(training, "resume", lambda *a, **k: interrupted(None))
    assert cli.main(["train", "--resume", str(run_dir)]) == 130
    assert "nothing was kept" in capsys.readouterr().err
