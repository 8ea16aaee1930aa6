"""tools/time_to_accuracy.py turns run folders' histories into a CSV and a figure."""

import csv

from conftest import history_run, load_tool


def _tool():
    return load_tool("time_to_accuracy.py")


def test_curves_accumulate_wall_time_and_tiles(tmp_path):
    a = history_run(tmp_path, "a", [120.0, 60.0, 60.0], [0.6, 0.8, 0.9])
    b = history_run(tmp_path, "b", [90.0, 30.0], [0.7, 0.75])
    out = tmp_path / "tta"
    assert _tool().main(["--out", str(out), "--run", f"recipe={a}", "--run", f"baseline, a comma={b}"]) == 0
    rows = list(csv.DictReader(open(out / "tta.csv")))
    assert [r["recipe"] for r in rows] == ["recipe"] * 3 + ["baseline, a comma"] * 2
    assert [float(r["minutes"]) for r in rows] == [2.0, 3.0, 4.0, 1.5, 2.0]
    assert [int(r["tiles"]) for r in rows[:3]] == [40, 80, 120]
    assert float(rows[2]["val_auc"]) == 0.9 and abs(float(rows[2]["val_accuracy"]) - 0.8) < 1e-9
    assert (out / "tta.png").stat().st_size > 10_000
