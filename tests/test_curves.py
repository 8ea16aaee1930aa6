"""kerasxai.curves: a run's per-epoch validation curve and the figure of several runs."""

import pytest
from conftest import history_run

from kerasxai.curves import plot_curves, run_curve
from kerasxai.runs import RunError


def test_a_curve_accumulates_minutes_and_tiles_and_reads_either_metric_name(tmp_path):
    rows = run_curve("a", history_run(tmp_path, "a", [120.0, 60.0], [0.6, 0.8]))
    assert [(r["epoch"], r["minutes"], r["tiles"], r["val_auc"]) for r in rows] == [(1, 2.0, 40, 0.6), (2, 3.0, 80, 0.8)]
    old = run_curve("b", history_run(tmp_path, "b", [60.0], [0.7], prefix="val_"))  # metrics named without the output
    assert old[0]["val_auc"] == 0.7 and old[0]["val_accuracy"] == pytest.approx(0.6)


def test_a_run_without_a_completed_epoch_is_named(tmp_path):
    run = history_run(tmp_path, "a", [60.0], [0.7])
    (run / "history.csv").unlink()
    with pytest.raises(RunError, match="history.csv' not found: the run has no completed epoch"):
        run_curve("a", run)


def test_the_figure_draws_against_epochs_or_minutes_only(tmp_path):
    rows = run_curve("best", history_run(tmp_path, "a", [60.0, 60.0], [0.6, 0.7]))
    rows += run_curve("other trial", history_run(tmp_path, "b", [60.0, 60.0], [0.5, 0.6]))
    plot_curves(rows, tmp_path / "c.png", "curves", x="epoch", faint=frozenset({"other trial"}))
    assert (tmp_path / "c.png").stat().st_size > 10_000
    with pytest.raises(ValueError, match="x must be one of"):
        plot_curves(rows, tmp_path / "d.png", "curves", x="tiles")
