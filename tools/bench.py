"""Benchmark suite: what the heatmap costs, JAX vs TF, post-hoc cost, pipeline, predict.

    python tools/bench.py --out bench_out/            # full run (~20-25 min on 2 idle cores)
    python tools/bench.py --out bench_out/ --quick    # smoke run (2 models, fewer rounds)

Each backend runs in its own child process (tools/bench_worker.py with KERAS_BACKEND set);
inside a child, the variants being compared (score-only vs score+heatmap, single pass vs
post-hoc) are interleaved round by round, so their ratio is measured side by side. Every
figure is the median of several timed rounds after warm-up (compilation excluded and
reported separately). Writes ``bench.json`` (all raw figures, machine load, versions,
targets) and ``bench.md`` (tables + targets met/missed) into --out, atomically.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORKER = REPO / "tools" / "bench_worker.py"
PIPELINE = REPO / "tools" / "bench_pipeline.py"

ALL_MODELS = [
    "mobilenetv3_large", "mobilenetv3_large_d", "efficientnetv2_s", "efficientnetv2_s_d",
    "vit_tiny_patch16_224", "deit_tiny_patch16_224", "deit_tiny_distilled_patch16_224",
]
# The peer: timm 1.0.31 / torch 2.14 on this machine, CPU, 2 threads, batch 32, 224x224,
# random init, plain forward (issue 7). pytorch-grad-cam's Grad-CAM on MobileNetV3-L: 15/s.
PEER_FORWARD = {"mobilenetv3_large": 40.0, "efficientnetv2_s": 8.6, "vit_tiny_patch16_224": 35.0}
PEER_GRADCAM = {"mobilenetv3_large": 15.0}
JAX_VS_TF_MODELS = ["mobilenetv3_large", "efficientnetv2_s"]


def _cores():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def run_child(argv, env_backend, log, timeout):
    """Run a child process; returns (returncode, stdout). stderr goes to the log file."""
    env = dict(os.environ, KERAS_BACKEND=env_backend, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO))
    with open(log, "a") as err:
        err.write(f"\n$ KERAS_BACKEND={env_backend} {' '.join(map(str, argv))}\n")
        err.flush()
        done = subprocess.run([sys.executable, *map(str, argv)], env=env, stdout=subprocess.PIPE,
                              stderr=err, text=True, timeout=timeout, cwd=REPO)
    return done.returncode, done.stdout


def worker(task, backend, models, args, work, log):
    out = work / f"{task}_{backend}.json"
    argv = [WORKER, task, "--models", ",".join(models), "--size", args.size,
            "--batches", ",".join(map(str, args.batches)), "--rounds", args.rounds,
            "--min-time", args.min_time, "--json", out]
    print(f"bench: {task} on {backend}: {', '.join(models)}", file=sys.stderr, flush=True)
    rc, _ = run_child(argv, backend, log, args.timeout)
    if rc != 0 or not out.is_file():
        return {"error": f"worker {task}/{backend} exited {rc}; see {log}"}
    return json.loads(out.read_text())


def pipeline(args, work, log):
    """tf.data throughput alone, via the data engineer's tools/bench_pipeline.py."""
    if not PIPELINE.is_file():
        return {"error": "tools/bench_pipeline.py not found"}
    argv = [PIPELINE, "--config", REPO / "configs" / "demo.yaml", f"data.cache_dir={work / 'data_cache'}",
            f"data.tile.size={args.size}", "--batch", max(args.batches), "--epochs", 2 if args.quick else 3]
    print("bench: tf.data pipeline", file=sys.stderr, flush=True)
    rc, stdout = run_child(argv, "jax", log, args.timeout)
    rows = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    return {"runs": rows, "command": "python tools/bench_pipeline.py --config configs/demo.yaml"} if rc == 0 else \
        {"error": f"bench_pipeline exited {rc}; see {log}", "runs": rows}


def versions():
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("keras", "jax", "jaxlib", "tensorflow-cpu", "tensorflow", "numpy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


# ----------------------------------------------------------------------------- targets
def _cell(res, model, batch, variant):
    try:
        return res["models"][model]["batches"][str(batch)][variant]
    except (KeyError, TypeError):
        return None


def targets(results, batch, cores):
    """Each target: what, threshold, measured value, met (bool or None when not measured)."""
    jax_ = results.get("jax_models", {})
    tf_ = results.get("tf_models", {})
    load = results["machine"]["loadavg_max"]
    busy = load > cores
    rows = []

    def add(name, threshold, value, note="", higher=True):
        met = None if value is None else (value >= threshold if higher else value <= threshold)
        rows.append({"target": name, "threshold": threshold, "value": value, "met": met, "note": note})

    for model, rec in jax_.get("models", {}).items():
        c = _cell(jax_, model, batch, "score_heatmap")
        want = 0.90 if rec.get("transformer") else 0.97
        add(f"{model}: score+heatmap / score-only (JAX, batch {batch})", want,
            c and c["ratio_to_score_only"],
            "score-only uses fused attention" if rec.get("transformer") else "")
    for model in JAX_VS_TF_MODELS:
        a, b = _cell(jax_, model, batch, "score_heatmap"), _cell(tf_, model, batch, "score_heatmap")
        add(f"{model}: JAX / TF tiles/s (score+heatmap, batch {batch})", 0.8,
            a and b and a["tiles_per_s"] / b["tiles_per_s"], "separate processes, run one after the other")
    for model, cell in results.get("posthoc", {}).get("posthoc", {}).items():
        add(f"{model}: single pass / post-hoc {cell['method'].split(' (')[0]} (batch {cell['batch']})", 2.0,
            1.0 / cell["posthoc"]["ratio_to_single_pass"],
            "" if model.startswith(("vit", "deit")) else
            "kerasxai.explain's Grad-CAM differentiates only the GAP+Dense head on the last feature map: "
            "one forward pass + a tiny gradient, so it cannot cost 2x a forward pass")
    pred = results.get("predict", {}).get("predict")
    render_note = ""
    if pred:
        t = pred["timings"]
        render_note = (f"without PNG rendering of the outputs: {100 * t['model'] / (pred['wall_s'] - t['render']):.1f} %; "
                       f"render {100 * t['render'] / pred['wall_s']:.1f} % of wall time")
    add("predict (full images): share of wall time in the model", 0.85, pred and pred["model_share"], render_note)
    note = f"absolute figure; load avg up to {load:.1f} on {cores} cores during this run" if busy else "absolute figure"
    for model, peer in PEER_FORWARD.items():
        c = _cell(jax_, model, 32, "score_heatmap")
        add(f"{model}: score+heatmap tiles/s (JAX, batch 32) >= timm plain forward", peer, c and c["tiles_per_s"], note)
    for model, peer in PEER_GRADCAM.items():
        c = _cell(jax_, model, 32, "score_heatmap")
        add(f"{model}: single-pass tiles/s >= pytorch-grad-cam Grad-CAM", peer, c and c["tiles_per_s"], note)
    return rows


# ----------------------------------------------------------------------------- markdown
def _f(x, nd=1):
    return "—" if x is None else f"{x:.{nd}f}"


def markdown(results, cmd):
    jax_ = results.get("jax_models", {})
    tf_ = results.get("tf_models", {})
    m = results["machine"]
    b_small, b_big = min(results["batches"]), max(results["batches"])
    lines = [
        f"Command: `{cmd}` — {results['date']}, {m['cores']} cores, load avg {_f(m['loadavg_start'][0], 2)} at start, "
        f"up to {_f(m['loadavg_max'], 2)} during the run; total {_f(results['wall_s'] / 60)} min. "
        f"Versions: {', '.join(f'{k} {v}' for k, v in results['versions'].items())}.",
        "",
        f"Tiles/s are medians of {results['rounds']} timed rounds after warm-up; score-only and score+heatmap are "
        "interleaved in one process (overhead = time(score+heatmap) / time(score-only) - 1, median of per-round "
        "ratios). GFLOPs per tile: XLA HLO cost analysis of the JAX graph at batch 1 (a multiply-add = 2 FLOPs). "
        f"Peak memory: process RSS sampled during the timed passes. Matmul peak (f32 2048², same backend): "
        f"JAX {_f(jax_.get('matmul_peak_gflops'))} GFLOPS, TF {_f(tf_.get('matmul_peak_gflops'))} GFLOPS.",
        "",
        f"| model | params (M) | GFLOPs | heatmap | b{b_small} score-only | b{b_small} score+map | overhead | "
        f"b{b_big} score-only | b{b_big} score+map | overhead | peak RSS b{b_big} (MiB) | GFLOPS (share of peak) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    peak = jax_.get("matmul_peak_gflops")
    for model, rec in jax_.get("models", {}).items():
        row = [model, _f(rec["params"] / 1e6, 2), _f(rec["gflops"], 2), "x".join(map(str, rec["heatmap_shape"]))]
        for b in (b_small, b_big):
            s, h = _cell(jax_, model, b, "score_only"), _cell(jax_, model, b, "score_heatmap")
            over = h and (1 / h["ratio_to_score_only"] - 1) * 100
            row += [_f(s and s["tiles_per_s"]), _f(h and h["tiles_per_s"]), f"{_f(over)} %"]
        h = _cell(jax_, model, b_big, "score_heatmap")
        row.append(_f(h and h["peak_rss_mib"], 0))
        achieved = h and rec["gflops"] and rec["gflops"] * h["tiles_per_s"]
        row.append(f"{_f(achieved)} ({_f(achieved and peak and 100 * achieved / peak)} %)")
        lines.append("| " + " | ".join(row) + " |")
    for model, rec in jax_.get("models", {}).items():
        d0 = [(b, _cell(jax_, model, b, "score_heatmap_discard0")) for b in (b_small, b_big)]
        if any(c for _, c in d0):
            lines.append("")
            lines.append(f"{model} with discard_ratio 0 (no per-image k-th smallest search): overhead "
                         + ", ".join(f"b{b} {_f(c and (1 / c['ratio_to_score_only'] - 1) * 100)} %" for b, c in d0) + ".")
    lines += ["", "JAX vs TensorFlow backend (tiles/s, score+heatmap; separate processes, one after the other):", "",
              f"| model | batch | JAX | TF | JAX / TF | JAX fast depthwise layers |", "|---|---|---|---|---|---|"]
    for model, rec in tf_.get("models", {}).items():
        for b in results["batches"]:
            a, t = _cell(jax_, model, b, "score_heatmap"), _cell(tf_, model, b, "score_heatmap")
            n = jax_.get("models", {}).get(model, {}).get("fast_depthwise_layers")
            lines.append(f"| {model} | {b} | {_f(a and a['tiles_per_s'])} | {_f(t and t['tiles_per_s'])} | "
                         f"{_f(a and t and a['tiles_per_s'] / t['tiles_per_s'], 2)} | {n} |")
    post = results.get("posthoc", {}).get("posthoc", {})
    if post:
        lines += ["", "Single pass vs post-hoc (JAX, same tiles, interleaved):", "",
                  "| model | batch | single pass tiles/s | post-hoc | post-hoc tiles/s | speed-up |", "|---|---|---|---|---|---|"]
        for model, c in post.items():
            lines.append(f"| {model} | {c['batch']} | {_f(c['single_pass']['tiles_per_s'])} | {c['method']} | "
                         f"{_f(c['posthoc']['tiles_per_s'])} | {_f(1 / c['posthoc']['ratio_to_single_pass'], 2)}x |")
    pipe = results.get("pipeline", {})
    if pipe.get("runs"):
        lines += ["", f"tf.data pipeline alone ({pipe.get('command', '')}, batch {b_big}):", "",
                  "| pipeline | tiles/s |", "|---|---|"]
        lines += [f"| {r.get('pipeline')} | {r.get('tiles_per_s')} |" for r in pipe["runs"]]
    pred = results.get("predict", {}).get("predict")
    if pred:
        t = pred["timings"]
        lines += ["", f"`predict` end to end ({pred['model']}, {pred['images']} DeepPCB sample images of 640x640, "
                  f"batch {pred['batch_size']}): {_f(pred['images_per_s'], 2)} images/s, "
                  f"{_f(100 * pred['model_share'])} % of wall time in the model; outside it (s): "
                  + ", ".join(f"{k} {_f(v, 3)}" for k, v in t.items() if k != "model") + "."]
    lines += ["", "Targets (issue 7):", "", "| target | threshold | measured | met | note |", "|---|---|---|---|---|"]
    for r in results["targets"]:
        met = "n/a" if r["met"] is None else ("met" if r["met"] else "**missed**")
        lines.append(f"| {r['target']} | {r['threshold']} | {_f(r['value'], 2)} | {met} | {r['note']} |")
    return "\n".join(lines) + "\n"


def _write(path: Path, text: str):
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="output folder (bench.json, bench.md, bench.log)")
    p.add_argument("--quick", action="store_true", help="2 models, fewer rounds: a smoke run")
    p.add_argument("--models", type=lambda s: s.split(","), help="default: all seven (quick: 2)")
    p.add_argument("--tf-models", type=lambda s: s.split(","),
                   help=f"models also run under TF (default: {','.join(JAX_VS_TF_MODELS)}, quick: 1)")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batches", type=lambda s: [int(b) for b in s.split(",")], help="default 1,32 (quick 1,8)")
    p.add_argument("--rounds", type=int, help="timed rounds per figure (default 3, quick 2)")
    p.add_argument("--min-time", type=float, help="seconds per timed round (default 1.0, quick 0.2)")
    p.add_argument("--skip", type=lambda s: s.split(","), default=[],
                   help="sections to skip: tf,posthoc,pipeline,predict")
    p.add_argument("--timeout", type=int, default=3600, help="per child process, seconds")
    args = p.parse_args(argv)
    q = args.quick
    args.models = args.models or (["mobilenetv3_large", "vit_tiny_patch16_224"] if q else ALL_MODELS)
    unknown = sorted(set(args.models + (args.tf_models or [])) - set(ALL_MODELS))
    if unknown:
        p.error(f"unknown model name(s) {unknown}; use {', '.join(ALL_MODELS)}")
    args.tf_models = args.tf_models or (["mobilenetv3_large"] if q else JAX_VS_TF_MODELS)
    args.batches = args.batches or ([1, 8] if q else [1, 32])
    args.rounds = args.rounds or (2 if q else 3)
    args.min_time = args.min_time if args.min_time is not None else (0.2 if q else 1.0)

    out = Path(args.out)
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    log = out / "bench.log"
    log.write_text("")
    cores = _cores()
    cmd = "python tools/bench.py " + " ".join(sys.argv[1:] if argv is None else argv)
    t0 = time.perf_counter()
    loads = [os.getloadavg()]
    results = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "command": cmd,
        "size": args.size, "batches": args.batches, "rounds": args.rounds, "min_time_s": args.min_time,
        "versions": versions(),
    }
    results["jax_models"] = worker("models", "jax", args.models, args, work, log)
    loads.append(os.getloadavg())
    if "tf" not in args.skip:
        results["tf_models"] = worker("models", "tensorflow", args.tf_models, args, work, log)
        loads.append(os.getloadavg())
    if "posthoc" not in args.skip:
        post_models = [m for m in ("mobilenetv3_large", "efficientnetv2_s", "vit_tiny_patch16_224") if m in args.models]
        results["posthoc"] = worker("posthoc", "jax", post_models or args.models[:1], args, work, log)
        loads.append(os.getloadavg())
    if "pipeline" not in args.skip:
        results["pipeline"] = pipeline(args, work, log)
        loads.append(os.getloadavg())
    if "predict" not in args.skip:
        cnn = [m for m in args.models if not m.startswith(("vit", "deit"))]
        results["predict"] = worker("predict", "jax", (cnn or args.models)[:1], args, work, log)
        loads.append(os.getloadavg())
    results["wall_s"] = time.perf_counter() - t0
    results["machine"] = {
        "cores": cores, "platform": platform.platform(), "processor": platform.processor(),
        "loadavg_start": list(loads[0]), "loadavg_end": list(loads[-1]), "loadavg_samples": [list(x) for x in loads],
        "loadavg_max": max(x[0] for x in loads),
    }
    results["targets"] = targets(results, max(args.batches), cores)
    _write(out / "bench.json", json.dumps(results, indent=1))
    _write(out / "bench.md", markdown(results, cmd))
    errors = [k for k, v in results.items() if isinstance(v, dict) and "error" in v]
    print(f"bench: wrote {out / 'bench.json'} and {out / 'bench.md'} in {results['wall_s'] / 60:.1f} min"
          + (f"; errors in {errors} (see {log})" if errors else ""), file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
