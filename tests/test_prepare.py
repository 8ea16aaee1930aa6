"""The prepare CLI: table, reuse, one-line errors with exit 2, real DeepPCB on a few images."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kerasxai.data.pipeline import read_manifest
from kerasxai.prepare import main

REPO = Path(__file__).resolve().parents[1]


def _config(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return str(p)


SYN = """
data:
  reader: synthetic
  options: {count: 8, height: 64, width: 80, seed: 1}
  tile: {size: 32, overlap: 2}
model: {name: mobilenetv3_large}
"""


def test_prepare_prints_table_and_reuses(tmp_path, capsys):
    cfg = _config(tmp_path, SYN)
    assert main(["--config", cfg, f"data.cache_dir={tmp_path / 'cache'}", "--quiet"]) == 0
    out = capsys.readouterr().out
    folder = Path(out.split("prepared dataset: ")[1].split()[0])
    m = read_manifest(folder)
    lines = {l.split()[0]: l.split() for l in out.splitlines() if l.split() and l.split()[0] in ("train", "val", "test", "all")}
    for split in ("train", "val", "test"):
        images, good, defect, tiles = (int(v) for v in lines[split][1:5])
        assert (good, defect) == (m["counts"][split]["good"], m["counts"][split]["defect"])
        assert images == m["images"][split] and tiles == good + defect
    assert int(lines["all"][4]) == 8 * 9  # 64x80 with 32/2 tiles: 3 x 3 per image
    stamp = (folder / "manifest.json").stat().st_mtime_ns
    assert main(["--config", cfg, f"data.cache_dir={tmp_path / 'cache'}", "--quiet"]) == 0
    assert (folder / "manifest.json").stat().st_mtime_ns == stamp


@pytest.mark.parametrize(
    "text, overrides, needle",
    [
        (SYN, ["data.reader=pascal"], "data.reader 'pascal' is unknown"),
        (SYN, ["data.tile.sise=3"], "data.tile.sise"),
        ("data: {reader: deeppcb, root: /nonexistent/deeppcb}\nmodel: {name: x}\n", [],
         "'/nonexistent/deeppcb' is not a folder"),
        (SYN, ["data.options.count=0"], "yields no images"),
    ],
)
def test_bad_input_one_line_exit_2(tmp_path, capsys, text, overrides, needle):
    cfg = _config(tmp_path, text)
    assert main(["--config", cfg, f"data.cache_dir={tmp_path / 'cache'}", "--quiet", *overrides]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and err.startswith("error: ") and len(err.splitlines()) == 1
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_module_entry_point_exit_code(tmp_path):
    r = subprocess.run([sys.executable, "-m", "kerasxai.prepare", "--config", str(tmp_path / "missing.yaml")],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "missing.yaml' not found" in r.stderr and "Traceback" not in r.stderr


def test_real_deeppcb_few_images(deeppcb_root, tmp_path, capsys):
    cfg = str(REPO / "configs" / "deeppcb_mobilenet.yaml")
    args = ["--config", cfg, f"data.root={deeppcb_root}", "data.max_images=10", f"data.cache_dir={tmp_path}", "--quiet"]
    assert main(args) == 0
    folder = Path(capsys.readouterr().out.split("prepared dataset: ")[1].split()[0])
    m = read_manifest(folder)
    assert sum(m["images"].values()) == 10 and len(m["tiles"]) == 90  # 640x640 -> 3x3 tiles of 224
    assert {(t["y"], t["x"]) for t in m["tiles"]} == {(y, x) for y in (0, 222, 416) for x in (0, 222, 416)}
    templates = [t for t in m["tiles"] if t["source"].endswith("_temp")]
    assert templates and all(t["label"] == 0 for t in templates)  # templates are defect-free
    assert any(t["label"] == 1 for t in m["tiles"])
    assert json.loads(json.dumps(m["config"]))["tile"]["size"] == 224
