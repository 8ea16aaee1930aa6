"""The benchmark and profiling tools under tools/ run and write what they promise (small sizes)."""

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


def run_tool(script, args, out):
    """Run tools/<script> with `args` and `--json out`; (its stdout, the JSON it wrote)."""
    cmd = [sys.executable, str(REPO / "tools" / script), *args, "--json", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout, json.loads(out.read_text())


def test_bench_rollout_times_each_fusion(tmp_path):
    """tools/bench_rollout.py times the rollout with and without the discard, per fusion."""
    stdout, res = run_tool("bench_rollout.py", ["--size", "64", "--batch", "2", "--rounds", "1", "--fusions", "max,min"],
                           tmp_path / "rollout.json")
    assert res["model"] and res["batch"] == 2 and set(res["fusions"]) == {"max", "min"}
    for cell in res["fusions"].values():
        assert cell["rollout"]["wall_ms"] > 0 and cell["rollout_discard_0"]["cpu_ms"] > 0
    assert "| max |" in stdout and "| min |" in stdout


def test_profile_model_charges_operations_to_layer_scopes(tmp_path):
    """tools/profile_model.py traces a compiled forward pass and sums operation time by Keras scope."""
    stdout, res = run_tool("profile_model.py", ["--size", "64", "--batch", "2", "--calls", "1", "--depth", "1"],
                           tmp_path / "profile.json")
    scopes = {r["scope"]: r for r in res["scopes"]}
    assert res["op_ms"] > 0 and abs(sum(r["ms"] for r in res["scopes"]) - res["op_ms"]) < 1e-6
    # the map's own operations are charged to the rollout layer, the blocks' to block_*_... scopes
    assert scopes["rollout"]["ms"] > 0 and scopes["rollout"]["ops"] >= 1
    assert any(s.startswith("block_*_") for s in scopes) and not any(s.startswith("block_0") for s in scopes)
    assert "| rollout |" in stdout


def test_map_ratio_targets_show_the_per_round_spread():
    """A median ratio near the threshold says little without the round-to-round spread."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_tool", REPO / "tools" / "bench.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    ratios = [0.80, 0.84, 0.88, 0.92, 0.96]  # score+heatmap / score-only, one a round

    def cell(cpu_seconds, ratio):
        return {"tiles_per_s": 32.0, "tiles_per_cpu_s": 16.0, "seconds_per_batch": [1.0] * len(cpu_seconds),
                "cpu_seconds_per_batch": cpu_seconds, "ratio_to_score_only": ratio, "cpu_ratio_to_score_only": ratio}

    batches = {"32": {"score_only": cell([2.0] * 5, 1.0), "score_heatmap": cell([2.0 / r for r in ratios], 0.88)}}
    results = {"machine": {"loadavg_max": 1.0},
               "jax_models": {"models": {"vit_tiny_patch16_224": {"transformer": True, "batches": batches}}}}
    rows = [r for r in bench.targets(results, 32, 2) if "score-only" in r["target"]]
    assert len(rows) == 1 and rows[0]["value"] == 0.88 and rows[0]["met"] is False
    assert "per-round quartiles 0.82-0.94" in rows[0]["note"]

