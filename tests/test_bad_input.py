"""Bad input through the CLIs: exit code 2 and one clear stderr line naming the file or key.

The predict cases must be refused before the model loads (``Localizer.from_run`` is made to
fail), so a clash with a ground-truth mask never costs a model load, let alone the mask.
Prepare cases use the synthetic reader, so nothing is read from disk but the YAML file.
"""

from __future__ import annotations

import csv
import os
import struct
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from kerasxai import predict, prepare, train, tune
from kerasxai.localize import Localizer, LocalizeError, load_image
from kerasxai.models import weights

REPO = Path(__file__).resolve().parents[1]


def _setup(tmp: Path) -> dict:
    """Input images, an --out holding a ground-truth mask, a file, YAML files; names by role."""
    images = tmp / "images"
    images.mkdir()
    cv2.imwrite(str(images / "board.png"), np.full((40, 50, 3), 90, np.uint8))
    truth = tmp / "truth"
    truth.mkdir()
    cv2.imwrite(str(truth / "board_mask.png"), np.zeros((40, 50), np.uint8))  # an annotation
    (tmp / "notes.txt").write_text("a file, not a folder")
    (tmp / "list.yaml").write_text("- data: {reader: synthetic}\n- model: {name: mobilenetv3_large_d}\n")
    (tmp / "scalar.yaml").write_text("mobilenetv3_large_d\n")
    (tmp / "ok.yaml").write_text("data: {reader: synthetic, cache_dir: %s}\nmodel: {name: mobilenetv3_large_d}\n"
                                 % (tmp / "cache"))
    return {"images": images, "truth": truth, "file": tmp / "notes.txt", "tmp": tmp}


# (cli, argv with {role} placeholders, text the one stderr line must hold)
CASES = {
    "predict --out is a file": (
        "predict", ["--run", "{run}", "{images}", "--out", "{file}"], "notes.txt' is a file"),
    "predict --out below a file": (
        "predict", ["--run", "{run}", "{images}", "--out", "{file}/preds"], "notes.txt' is a file"),
    "predict --out holds a ground-truth mask": (
        "predict", ["--run", "{run}", "{images}", "--out", "{truth}"], "board_mask.png', which predict would overwrite"),
    "predict --out holds the input images": (
        "predict", ["--run", "{run}", "{images}", "--out", "{images}"], "holds the input image"),
    "predict --run unknown": (
        "predict", ["--run", "no-such-model", "{images}", "--out", "{tmp}/p"], "'no-such-model' is neither a run folder"),
    "prepare YAML top level a list": (
        "prepare", ["--config", "{tmp}/list.yaml", "--quiet"], "list.yaml': the top level is a list"),
    "prepare YAML top level a scalar": (
        "prepare", ["--config", "{tmp}/scalar.yaml", "--quiet"], "scalar.yaml': the top level is a scalar"),
    "prepare data.max_images=-1": (
        "prepare", ["--config", "{tmp}/ok.yaml", "data.max_images=-1", "--quiet"], "data.max_images"),
    "prepare eval.score_threshold=2": (
        "prepare", ["--config", "{tmp}/ok.yaml", "eval.score_threshold=2", "--quiet"], "eval.score_threshold"),
    "train model.weights=imagenet offline": (
        "train", ["--config", "{tmp}/ok.yaml", "model.weights=imagenet", "--quiet"], "KERASXAI_OFFLINE is set"),
    "tune model.weights=imagenet offline": (
        "tune", ["--config", "{tmp}/ok.yaml", "model.weights=imagenet", "--quiet"], "KERASXAI_OFFLINE is set"),
}
MAINS = {"predict": predict.main, "prepare": prepare.main, "train": train.main, "tune": tune.main}


def _argv(argv: list[str], paths: dict) -> list[str]:
    return [a.format(**{k: str(v) for k, v in paths.items()}) for a in argv]


@pytest.fixture()
def no_model_load(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the bad input was refused")

    monkeypatch.setattr(Localizer, "from_run", refuse)
    # offline, with no ImageNet weights in the Keras cache (whatever this machine has there)
    monkeypatch.setenv("KERASXAI_OFFLINE", "1")
    monkeypatch.setattr(weights, "imagenet_cached", lambda arch: False)


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_exits_2_with_one_line(case, standin_run, tmp_path, capsys, no_model_load):
    cli, argv, text = CASES[case]
    paths = dict(_setup(tmp_path), run=standin_run)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    code = MAINS[cli](_argv(argv, paths))
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and text in lines[0] and "Traceback" not in err, err
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before  # nothing touched


@pytest.mark.parametrize("case", ["predict --out holds a ground-truth mask", "prepare YAML top level a list",
                                  "train model.weights=imagenet offline"])
def test_bad_input_as_a_process(case, standin_run, tmp_path):
    """The same through ``python -m``: no traceback reaches the terminal."""
    cli, argv, text = CASES[case]
    paths = dict(_setup(tmp_path), run=standin_run)
    if cli == "train" and any(weights.imagenet_cached(a) for a in weights.IMAGENET_FILES):
        pytest.skip("ImageNet weights are in this machine's Keras cache: offline cannot be simulated")
    env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="3", KERASXAI_OFFLINE="1")
    r = subprocess.run([sys.executable, "-m", f"kerasxai.{cli}", *_argv(argv, paths)], capture_output=True,
                       text=True, cwd=REPO, env=env, timeout=120)
    assert r.returncode == 2 and text in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_unwritable_out_is_refused_before_the_model_loads(standin_run, tmp_path, capsys, monkeypatch, no_model_load):
    paths = _setup(tmp_path)
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # as if the parent were read-only
    code = predict.main(["--run", str(standin_run), str(paths["images"]), "--out", str(tmp_path / "new" / "p")])
    err = capsys.readouterr().err
    assert code == 2 and "cannot be created" in err and f"'{tmp_path}' is not writable" in err, err
    assert not (tmp_path / "new").exists()


def _huge_png(path: Path) -> Path:
    """A PNG header claiming 20000x20000 pixels: a few bytes on disk, 1.2 GB decoded."""
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + struct.pack(">I4sII", 13, b"IHDR", 20000, 20000) + b"\x08\x02\x00\x00\x00")
    return path


def test_load_image_refuses_images_above_the_pixel_cap(tmp_path, monkeypatch):
    with pytest.raises(LocalizeError, match=r"huge\.png' is 20000x20000 .*KERASXAI_MAX_PIXELS"):
        load_image(_huge_png(tmp_path / "huge.png"))
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((40, 50, 3), np.uint8))
    monkeypatch.setenv("KERASXAI_MAX_PIXELS", "1999")
    with pytest.raises(LocalizeError, match=r"a\.png' is 50x40"):
        load_image(tmp_path / "a.png")
    monkeypatch.setenv("KERASXAI_MAX_PIXELS", "2000")
    assert load_image(tmp_path / "a.png").shape == (40, 50, 3)


def test_predict_skips_an_image_above_the_pixel_cap(standin_run, tmp_path, capsys):
    paths = _setup(tmp_path)
    _huge_png(paths["images"] / "huge.png")
    out = tmp_path / "preds"
    assert predict.main(["--run", str(standin_run), str(paths["images"]), "--out", str(out), "--no-progress"]) == 1
    assert "huge.png' is 20000x20000" in capsys.readouterr().err
    rows = {Path(r["image"]).name: r["status"] for r in csv.DictReader((out / "summary.csv").open())}
    assert rows == {"board.png": "ok", "huge.png": "error"}
