"""``python -m kerasxai.predict``: files per image, summary CSV, bad input, no partial files.

The run folder (``standin_run`` in tests/conftest.py) holds the CAM-by-construction stand-in
model of tests/test_localize.py (see its docstring for why), saved as ``best.keras`` next to a
real resolved ``config.yaml``.
"""

from __future__ import annotations

import csv
import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from kerasxai import predict, prediction
from test_localize import iou, synthetic_board

REPO = Path(__file__).resolve().parents[1]
TRUTH = [(30, 40, 46, 56), (120, 20, 134, 34)]


@pytest.fixture()
def run_dir(standin_run) -> Path:
    return standin_run  # tests/conftest.py


@pytest.fixture()
def images(tmp_path) -> Path:
    d = tmp_path / "in"
    d.mkdir()
    cv2.imwrite(str(d / "board_a.png"), synthetic_board(100, 170, TRUTH, gray=True))  # gray PNG
    cv2.imwrite(str(d / "board_b.png"), synthetic_board(90, 130, [], seed=1))  # colour, no defect
    cv2.imwrite(str(d / "small.png"), synthetic_board(40, 50, [(10, 10, 22, 22)], seed=2))  # < one tile
    (d / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    (d / "notes.txt").write_text("not an image, not listed")
    return d


def test_predict_writes_outputs_and_reports_bad_input(run_dir, images, tmp_path, capsys):
    out = tmp_path / "preds"
    code = predict.main(["--run", str(run_dir), str(images), str(tmp_path / "missing.png"),
                         "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1
    assert "broken.jpg" in err and "missing.png" in err
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(f"{s}{suffix}" for s in ("board_a", "board_b", "small")
                           for suffix in ("_overlay.png", "_mask.png", ".json")) + ["summary.csv"]

    doc = json.loads((out / "board_a.json").read_text())
    assert doc["verdict"] == "defective" and (doc["height"], doc["width"]) == (100, 170)
    boxes = [r["box"] for r in doc["regions"]]
    for t in TRUTH:
        assert max(iou(t, b) for b in boxes) > 0.5, (t, boxes)
    assert all(0 < r["score"] <= 1 and r["area"] > 0 for r in doc["regions"])
    assert len(doc["tiles"]) == 6  # 100x170 at 64/8: rows [0, 36], cols [0, 56, 106]

    mask = cv2.imread(str(out / "board_a_mask.png"), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (100, 170) and set(np.unique(mask)) <= {0, 255}
    for x1, y1, x2, y2 in TRUTH:
        assert mask[(y1 + y2) // 2, (x1 + x2) // 2] == 255
    overlay = cv2.imread(str(out / "board_a_overlay.png"))
    assert overlay.shape == (100, 170, 3)
    assert json.loads((out / "board_b.json").read_text())["verdict"] == "good"
    assert json.loads((out / "small.json").read_text())["verdict"] == "defective"

    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert [Path(r["image"]).name for r in rows] == ["board_a.png", "board_b.png", "broken.jpg", "small.png"]
    assert [r["status"] for r in rows] == ["ok", "ok", "error", "ok"]
    assert [r["verdict"] for r in rows] == ["defective", "good", "", "defective"]


def test_clean_batch_exits_zero_and_thresholds_apply(run_dir, images, tmp_path):
    (images / "broken.jpg").unlink()
    out = tmp_path / "p"
    assert predict.main(["--run", str(run_dir), str(images), "--out", str(out), "--no-progress"]) == 0
    # a threshold above every score: nothing is defective, no region, empty masks
    out2 = tmp_path / "p2"
    assert predict.main(["--run", str(run_dir), str(images / "board_a.png"), "--out", str(out2),
                         "--threshold", "0.999999", "--batch-size", "2", "--no-progress"]) == 0
    doc = json.loads((out2 / "board_a.json").read_text())
    assert doc["verdict"] == "good" and doc["regions"] == [] and doc["score_threshold"] == 0.999999
    assert not cv2.imread(str(out2 / "board_a_mask.png"), cv2.IMREAD_UNCHANGED).any()


def test_write_atomic_leaves_nothing_partial(tmp_path, monkeypatch):
    with pytest.raises(TypeError):
        prediction.write_atomic({"a.png": b"ok", "a.json": None}, tmp_path)  # second part fails
    assert list(tmp_path.iterdir()) == []
    real_replace = os.replace

    def replace(src, dst):  # the second rename fails after the first one landed
        if Path(dst).name == "a.json":
            raise OSError(errno.ENOSPC, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError):
        prediction.write_atomic({"a.png": b"1", "a.json": b"2"}, tmp_path)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    prediction.write_atomic({"a.png": b"1", "a.json": b"2"}, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "a.png"]


def test_unique_stems():
    paths = [Path("x/a.png"), Path("y/a.jpg"), Path("b.png"), Path("z/a.png")]
    assert prediction.unique_stems(paths) == ["a", "a-2", "b", "a-3"]
    # a suffixed stem never takes the name of another image, whatever the case
    paths = [Path("a-2.png"), Path("x/a.png"), Path("y/a.png"), Path("B.png"), Path("z/b.png")]
    assert prediction.unique_stems(paths) == ["a-2", "a", "a-3", "B", "b-2"]


def _cli(*args, cwd=REPO):
    env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-m", "kerasxai.predict", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300)


def test_cli_bad_run_folder_is_one_clear_line(tmp_path):
    r = _cli("--run", str(tmp_path / "nope"), "x.png", "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "run folder" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "empty").mkdir()
    r = _cli("--run", str(tmp_path / "empty"), "x.png", "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "config.yaml" in r.stderr and "Traceback" not in r.stderr


def test_cli_subprocess_exit_code(run_dir, images, tmp_path):
    out = tmp_path / "preds"
    r = _cli("--run", str(run_dir), str(images / "broken.jpg"), str(images / "small.png"), "--out", str(out))
    assert r.returncode == 1, r.stderr
    assert "broken.jpg" in r.stderr and "Traceback" not in r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["small.json", "small_mask.png", "small_overlay.png", "summary.csv"]


def test_unwritable_output_fails_that_image_only(run_dir, images, tmp_path, monkeypatch):
    """A write failing for one image (disk full on its mask) drops all of that image's files,
    shows it as an error row in summary.csv, and the others are still written (exit 1)."""
    (images / "broken.jpg").unlink()
    real_replace = os.replace

    def replace(src, dst):
        if Path(dst).name == "board_b_mask.png":
            raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    out = tmp_path / "preds"
    assert predict.main(["--run", str(run_dir), str(images), "--out", str(out), "--no-progress"]) == 1
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(f"{s}{suffix}" for s in ("board_a", "small")
                           for suffix in ("_overlay.png", "_mask.png", ".json")) + ["summary.csv"]
    rows = {Path(r["image"]).name: r for r in csv.DictReader((out / "summary.csv").open())}
    assert [rows[n]["status"] for n in ("board_a.png", "board_b.png", "small.png")] == ["ok", "error", "ok"]
    assert "No space left on device" in rows["board_b.png"]["error"] and rows["board_b.png"]["json"] == ""
