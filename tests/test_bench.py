"""tools/bench.py --quick writes a complete bench.json and bench.md (smoke run at 64 px)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quick_bench_writes_expected_fields(tmp_path):
    out = tmp_path / "bench"
    cmd = [sys.executable, str(REPO / "tools" / "bench.py"), "--out", str(out), "--quick", "--size", "64",
           "--models", "mobilenetv3_large", "--tf-models", "mobilenetv3_large", "--batches", "1,2",
           "--rounds", "1", "--min-time", "0"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:] + (out / "bench.log").read_text()[-3000:]
    res = json.loads((out / "bench.json").read_text())
    assert {"date", "versions", "machine", "targets", "jax_models", "tf_models", "posthoc", "pipeline", "predict"} <= set(res)
    assert res["machine"]["cores"] >= 1 and len(res["machine"]["loadavg_start"]) == 3
    for key in ("jax_models", "tf_models"):
        rec = res[key]["models"]["mobilenetv3_large"]
        assert res[key]["matmul_peak_gflops"] > 0
        assert rec["params"] == rec["params_score_only"] > 1e6 and rec["heatmap_shape"] == [2, 2]
        for batch in ("1", "2"):
            for variant in ("score_only", "score_heatmap"):
                cell = rec["batches"][batch][variant]
                assert cell["tiles_per_s"] > 0 and cell["peak_rss_mib"] > 0 and cell["ratio_to_score_only"] > 0
    jax_rec = res["jax_models"]["models"]["mobilenetv3_large"]
    assert jax_rec["gflops"] > 0 and jax_rec["fast_depthwise_layers"] > 0  # auto mode: on for JAX on CPU
    assert res["tf_models"]["models"]["mobilenetv3_large"]["fast_depthwise_layers"] == 0
    post = res["posthoc"]["posthoc"]["mobilenetv3_large"]
    assert post["single_pass"]["tiles_per_s"] > 0 and post["posthoc"]["tiles_per_s"] > 0
    assert res["pipeline"]["runs"] and all(r["tiles_per_s"] > 0 for r in res["pipeline"]["runs"])
    pred = res["predict"]["predict"]
    assert pred["images_per_s"] > 0 and 0 < pred["model_share"] <= 1
    names = [t["target"] for t in res["targets"]]
    assert any("JAX / TF" in n for n in names) and any("post-hoc" in n for n in names)
    assert any("predict" in n for n in names) and any("timm" in n for n in names)
    md = (out / "bench.md").read_text()
    assert "| mobilenetv3_large |" in md and "Targets" in md and ("met" in md or "missed" in md)


def test_bench_rollout_times_each_fusion(tmp_path):
    """tools/bench_rollout.py times the rollout with and without the discard, per fusion."""
    out = tmp_path / "rollout.json"
    cmd = [sys.executable, str(REPO / "tools" / "bench_rollout.py"), "--size", "64", "--batch", "2",
           "--rounds", "1", "--fusions", "max,min", "--json", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["model"] and res["batch"] == 2 and set(res["fusions"]) == {"max", "min"}
    for cell in res["fusions"].values():
        assert cell["rollout"]["wall_ms"] > 0 and cell["rollout_discard_0"]["cpu_ms"] > 0
    assert "| max |" in done.stdout and "| min |" in done.stdout
