"""tools/time_to_accuracy.py turns run folders' histories into a CSV and a figure."""

import csv
from pathlib import Path

from conftest import load_tool

from kerasxai.config import load_config, to_yaml

def _tool():
    return load_tool("time_to_accuracy.py")


def _run(root: Path, name: str, seconds: list[float], aucs: list[float]) -> Path:
    run = root / name
    run.mkdir(parents=True)
    cfg = load_config(None, ["data.reader=synthetic", "model.name=mobilenetv3_large_d", "train.batch_size=8",
                             "train.steps_per_epoch=5"])
    (run / "config.yaml").write_text(to_yaml(cfg))
    rows = ["epoch,epoch_seconds,learning_rate,val_score_auc,val_score_accuracy"]
    rows += [f"{i},{s},0.001,{a},{a - 0.1}" for i, (s, a) in enumerate(zip(seconds, aucs))]
    (run / "history.csv").write_text("\n".join(rows) + "\n")
    return run


def test_curves_accumulate_wall_time_and_tiles(tmp_path):
    a = _run(tmp_path, "a", [120.0, 60.0, 60.0], [0.6, 0.8, 0.9])
    b = _run(tmp_path, "b", [90.0, 30.0], [0.7, 0.75])
    out = tmp_path / "tta"
    assert _tool().main(["--out", str(out), "--run", f"recipe={a}", "--run", f"baseline, a comma={b}"]) == 0
    rows = list(csv.DictReader(open(out / "tta.csv")))
    assert [r["recipe"] for r in rows] == ["recipe"] * 3 + ["baseline, a comma"] * 2
    assert [float(r["minutes"]) for r in rows] == [2.0, 3.0, 4.0, 1.5, 2.0]
    assert [int(r["tiles"]) for r in rows[:3]] == [40, 80, 120]
    assert float(rows[2]["val_auc"]) == 0.9 and abs(float(rows[2]["val_accuracy"]) - 0.8) < 1e-9
    assert (out / "tta.png").stat().st_size > 10_000
