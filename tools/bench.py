"""Benchmark suite: what the heatmap costs, JAX vs TF, post-hoc cost, pipeline, predict, training.

    python tools/bench.py --out bench_out/            # full run (~20-25 min on 2 idle cores)
    python tools/bench.py --out bench_out/ --quick    # smoke run (2 models, fewer rounds)
    python tools/bench.py --out bench_out/ --only train,epoch --precision mixed_bfloat16
    python tools/bench.py --out bench_out/ --only train --peer-python /tmp/peer/bin/python

Each backend runs in its own child process (tools/bench_worker.py with KERAS_BACKEND set);
inside a child, the variants being compared (score-only vs score+heatmap, single pass vs
post-hoc) are interleaved round by round, so their ratio is measured side by side. Every
figure is the median of several timed rounds after warm-up (compilation excluded and
reported separately). Training: train-step tiles/s per model on both backends (kerasxai.training's
model, loss, metrics and Adam on random tiles; under JAX as training runs it and as one
execution), with --peer-python the PyTorch/timm peer's train step right after each model's
figures; and one short real training run whose epoch wall time is split into train steps and
the rest. Writes ``bench.json`` (all raw figures, machine load, versions, targets) and
``bench.md`` (tables + targets met/missed) into --out, atomically.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _checkout import REPO

from kerasxai.runtime import atomic_write_text, cores as cpu_cores
from kerasxai.tables import markdown_table
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
# The training peer: shared/peers/bench_torch_train.py (beside the checkout; its README says how
# to install it), run with --peer-python; our models -> its model names. It times 224 px tiles.
PEERS = REPO.parent / "shared" / "peers"
PEER_TRAIN = {"mobilenetv3_large": "mnv3", "efficientnetv2_s": "effv2s", "vit_tiny_patch16_224": "vit"}
TRAIN_BATCH = 32  # the training targets' batch size, and the peer's
# Training targets (wall-clock train tiles/s at TRAIN_BATCH): JAX / TF for every model, JAX / peer,
# absolute JAX tiles/s; and the end-to-end epoch's share of wall time outside the train steps (at most).
TRAIN_JAX_VS_TF = 1.0
TRAIN_JAX_VS_PEER = {"mobilenetv3_large": 1.5, "vit_tiny_patch16_224": 1.5}
TRAIN_JAX_TILES_PER_S = {"mobilenetv3_large_d": 40.0}
EPOCH_OUTSIDE_SHARE_MAX = 0.10
KEY_MODELS = ["mobilenetv3_large", "efficientnetv2_s", "vit_tiny_patch16_224"]  # measured first
# what --skip / --only name; "tf" is every run on the TensorFlow backend
SECTIONS = ("models", "tf", "posthoc", "predict", "pipeline", "train", "epoch")


def run_child(argv, env_backend, log, timeout):
    """Run a child process; returns (returncode, stdout). stderr goes to the log file."""
    env = dict(os.environ, KERAS_BACKEND=env_backend, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO))
    with open(log, "a") as err:
        err.write(f"\n$ KERAS_BACKEND={env_backend} {' '.join(map(str, argv))}\n")
        err.flush()
        done = subprocess.run([sys.executable, *map(str, argv)], env=env, stdout=subprocess.PIPE,
                              stderr=err, text=True, timeout=timeout, cwd=REPO)
    return done.returncode, done.stdout


def worker(task, backend, models, args, work, log, batches=None, extra=()):
    out = work / f"{task}_{backend}.json"
    out.unlink(missing_ok=True)  # an earlier call's figures must not pass for this one's
    argv = [WORKER, task, "--models", ",".join(models), "--size", args.size,
            "--batches", ",".join(map(str, batches or args.batches)), "--rounds", args.rounds,
            "--min-time", args.min_time, "--json", out, *extra]
    print(f"bench: {task} on {backend}: {', '.join(models)}", file=sys.stderr, flush=True)
    rc, _ = run_child(argv, backend, log, args.timeout)
    if rc != 0 or not out.is_file():
        return {"error": f"worker {task}/{backend} ({','.join(models)}) exited {rc}; see {log}"}
    return json.loads(out.read_text())


def peer_script() -> Path:
    """The peer's train benchmark script; ValueError saying where it was looked for when absent."""
    script = PEERS / "bench_torch_train.py"
    if not script.is_file():
        raise ValueError(f"--peer-python: the peer script {script} is not there; the peers folder "
                         f"must sit beside the checkout as {PEERS} (see its README.md), or drop --peer-python")
    return script


def run_peer(python, script, model, batch, log, timeout) -> dict:
    """One peer train step figure for `model`: the JSON line `python script NAME batch` prints,
    as a worker result ({"models": {model: {"batches": {batch: {"train_step": ...}}}}}), or {"error": ...}."""
    argv = [python, script, PEER_TRAIN[model], batch]
    print(f"bench: peer train step: {model}", file=sys.stderr, flush=True)
    with open(log, "a") as err:
        err.write(f"\n$ {' '.join(map(str, argv))}\n")
        err.flush()
        try:
            done = subprocess.run(list(map(str, argv)), stdout=subprocess.PIPE, stderr=err, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"error": f"peer {PEER_TRAIN[model]} ran past {timeout} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    try:
        rec = json.loads(lines[-1]) if done.returncode == 0 and lines else {}
    except json.JSONDecodeError:
        rec = {}
    if not isinstance(rec.get("tiles_per_s"), (int, float)):
        return {"error": f"peer {PEER_TRAIN[model]} exited {done.returncode} without a JSON line with tiles_per_s; see {log}"}
    return {"framework": rec.get("framework"), "python": str(python), "script": str(script),
            "models": {model: {"peer_model": PEER_TRAIN[model], "batches": {str(batch): {"train_step": rec}}}}}


def merge_models(results, key, res):
    """Add one child's result for some models to results[key]: models side by side, errors joined."""
    cur = results.setdefault(key, {"models": {}})
    if "error" in res:
        cur["error"] = "; ".join(filter(None, (cur.get("error"), res["error"])))
        return
    models = {**cur.get("models", {}), **res.get("models", {})}
    cur.update({k: v for k, v in res.items() if k != "models"})
    cur["models"] = models


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
# Throughput is judged on process CPU time (all threads) when the children recorded it: on the
# shared machine, other jobs stretch wall time by a varying factor, much less CPU time. Wall-time
# figures are kept beside them. Absolute figures are compared as an idle-machine estimate,
# tiles per CPU-second x cores (an upper bound: it assumes the work keeps every core busy).
def _cell(res, model, batch, variant):
    try:
        return res["models"][model]["batches"][str(batch)][variant]
    except (KeyError, TypeError):
        return None


def _tps(cell, cpu):
    if cell is None:
        return None
    return cell.get("tiles_per_cpu_s") if cpu else cell["tiles_per_s"]


def _ratio(cell, base, cpu):
    if cell is None:
        return None
    return cell.get(f"cpu_ratio_to_{base}") if cpu else cell[f"ratio_to_{base}"]


def _per_round(cell, base, cpu):
    """Per-round throughput ratios cell / base (time(base) / time(cell), rounds interleaved), or None."""
    key = "cpu_seconds_per_batch" if cpu else "seconds_per_batch"
    if not (cell and base and key in cell and key in base):
        return None
    return [b / a for a, b in zip(cell[key], base[key])]


def _spread(ratios):
    """'; per-round quartiles a-b': how far one round's ratio strays (the noise a median hides)."""
    if not ratios or len(ratios) < 2:
        return ""
    q1, _, q3 = statistics.quantiles(ratios, n=4)
    return f"; per-round quartiles {q1:.2f}-{q3:.2f}"


def _split_ratios(jax_, model, batch, cpu=False):
    """score+heatmap / score-only throughput, both split over the cores, per round (or None)."""
    return _per_round(_cell(jax_, model, batch, "score_heatmap_host_parallel"),
                      _cell(jax_, model, batch, "score_only_host_parallel"), cpu)


def _split_ratio(jax_, model, batch, cpu=False):
    """score+heatmap / score-only throughput, both split over the cores: median of per-round ratios."""
    ratios = _split_ratios(jax_, model, batch, cpu)
    return statistics.median(ratios) if ratios else None


def _jax_served(jax_, model, batch):
    """The JAX figure `predict` / `evaluate` deliver: the host-parallel run when measured, else one execution."""
    return _cell(jax_, model, batch, "score_heatmap_host_parallel") or _cell(jax_, model, batch, "score_heatmap")


def _uses_cpu(results):
    cells = [c for key in ("jax_models", "tf_models") for m in results.get(key, {}).get("models", {}).values()
             for b in m["batches"].values() for c in b.values()]
    return bool(cells) and all("tiles_per_cpu_s" in c for c in cells)


def targets(results, batch, cores):
    """Each target: what, threshold, measured value, met (bool or None when not measured)."""
    jax_ = results.get("jax_models", {})
    tf_ = results.get("tf_models", {})
    load = results["machine"]["loadavg_max"]
    cpu = _uses_cpu(results)
    basis = "CPU time" if cpu else "wall time"
    rows = []

    def add(name, threshold, value, note=""):
        met = None if value is None else value >= threshold
        rows.append({"target": name, "threshold": threshold, "value": value, "met": met, "note": note, "basis": basis})

    def wall(x):
        return "" if x is None else f"wall-clock: {x:.2f}"

    for model, rec in jax_.get("models", {}).items():
        c = _cell(jax_, model, batch, "score_heatmap")
        want = 0.90 if rec.get("transformer") else 0.97
        note = wall(_ratio(c, "score_only", False))
        if rec.get("transformer"):
            d0 = _cell(jax_, model, batch, "score_heatmap_discard0")
            note += f"; score-only: attention without probabilities out (explicit on JAX CPU); with discard_ratio 0: {_f(_ratio(d0, 'score_only', cpu), 2)}"
        note += _spread(_per_round(c, _cell(jax_, model, batch, "score_only"), cpu))
        add(f"{model}: score+heatmap / score-only (JAX, batch {batch})", want, _ratio(c, "score_only", cpu), note)
        split = _split_ratios(jax_, model, batch)
        if split:
            add(f"{model}: score+heatmap / score-only, both split over the cores (JAX, batch {batch})", want,
                statistics.median(split), "wall clock; model.host_parallel=auto, what predict / evaluate run" + _spread(split))
    for model in JAX_VS_TF_MODELS:
        a, b = _jax_served(jax_, model, batch), _cell(tf_, model, batch, "score_heatmap")
        one = _cell(jax_, model, batch, "score_heatmap")
        ratio = a and b and a["tiles_per_s"] / b["tiles_per_s"]
        per_cpu = a and b and cpu and _tps(a, True) / _tps(b, True)
        note = "separate processes, one after the other; per CPU-second: " + _f(per_cpu, 2)
        if per_cpu:
            note += (f"; CPU s per wall s: JAX {a['cpu_seconds_per_batch'][0] / a['seconds_per_batch'][0]:.2f}, "
                     f"TF {b['cpu_seconds_per_batch'][0] / b['seconds_per_batch'][0]:.2f}")
        if a is not one and one and b:
            note += (f"; JAX batch split over the cores (model.host_parallel=auto, what predict/evaluate run); "
                     f"one execution: {one['tiles_per_s']:.1f} tiles/s = {one['tiles_per_s'] / b['tiles_per_s']:.2f}x TF")
        add(f"{model}: JAX / TF tiles/s (score+heatmap, batch {batch}, wall clock)", 0.8, ratio, note)
    for model, cell in results.get("posthoc", {}).get("posthoc", {}).items():
        r = _ratio(cell["posthoc"], "single_pass", cpu)
        rw = _ratio(cell["posthoc"], "single_pass", False)
        note = wall(1 / rw)
        if not model.startswith(("vit", "deit")):
            note += ("; kerasxai.explain's Grad-CAM differentiates only the GAP+Dense head on the last feature map: "
                     "one forward pass to the features + a tiny gradient, so it costs about one forward pass")
        add(f"{model}: single pass / post-hoc {cell['method'].split(' (')[0]} (batch {cell['batch']})", 2.0, r and 1.0 / r, note)
    pred = results.get("predict", {}).get("predict")
    note = ""
    if pred:
        t = pred["timings"]
        note = (f"wall time, same process; PNG rendering runs on the output thread, overlapping inference "
                f"(render time {100 * t['render'] / pred['wall_s']:.1f} % of wall time)")
    add("predict (full images): share of wall time in the model", 0.85, pred and pred["model_share"], note)
    for model, peer in list(PEER_FORWARD.items()) + [(m, v) for m, v in PEER_GRADCAM.items()]:
        c = _jax_served(jax_, model, 32)
        what = "timm plain forward" if (model, peer) in PEER_FORWARD.items() else "pytorch-grad-cam Grad-CAM"
        note = f"wall clock at load avg up to {load:.1f} on {cores} cores (peer: idle machine)" if c else ""
        add(f"{model}: score+heatmap tiles/s (JAX, batch 32) >= {what} ({peer})", peer, c and c["tiles_per_s"], note)
    return rows + training_targets(results)


def _train_tps(res, model, variant="train_step"):
    """Wall-clock train tiles/s of `model` at TRAIN_BATCH in a train result (or the peer's), or None."""
    c = _cell(res, model, TRAIN_BATCH, variant)
    return c and c["tiles_per_s"]


def training_targets(results) -> list:
    """The training targets, on wall-clock tiles/s at TRAIN_BATCH: JAX's step as training runs it
    (train.host_parallel=auto) against TF for every model trained, against the peer, absolute; and
    the end-to-end epoch's share outside the train steps (at most)."""
    jax_, tf_, peer = (results.get(k, {}) for k in ("jax_train", "tf_train", "peer_train"))
    load = results.get("machine", {}).get("loadavg_max")
    rows = []

    def add(name, threshold, value, note, at_most=False):
        met = None if value is None else (value <= threshold if at_most else value >= threshold)
        rows.append({"target": name, "threshold": threshold, "value": value, "met": met, "note": note, "basis": "wall time"})

    def missing(res, model, what):
        if "error" in res and model not in res.get("models", {}):
            return f"{what} failed: {res['error']}"
        return f"{what} not measured at batch {TRAIN_BATCH}"

    for model in dict.fromkeys([*jax_.get("models", {}), *tf_.get("models", {})]):
        a, t, one = _train_tps(jax_, model), _train_tps(tf_, model), _train_tps(jax_, model, "train_step_one_execution")
        if a and t:
            note = "separate processes, one right after the other" + (f"; JAX one execution: {one / t:.2f}x TF" if one else "")
        else:
            note = missing(jax_, model, "JAX") if not a else missing(tf_, model, "TF")
        add(f"{model}: JAX / TF train tiles/s (batch {TRAIN_BATCH})", TRAIN_JAX_VS_TF, a and t and a / t, note)
    for model, want in TRAIN_JAX_VS_PEER.items():
        a, p, one = _train_tps(jax_, model), _train_tps(peer, model), _train_tps(jax_, model, "train_step_one_execution")
        if a and p:
            note = (f"peer {p:.1f} tiles/s ({peer.get('framework')}, timm, 2 threads), run right after our figures"
                    + (f"; JAX one execution: {one / p:.2f}x" if one else ""))
        elif not peer:
            note = "no --peer-python: the peer was not run"
        else:
            note = missing(jax_, model, "JAX") if not a else missing(peer, model, "peer")
        add(f"{model}: JAX / PyTorch+timm train tiles/s (batch {TRAIN_BATCH})", want, a and p and a / p, note)
    for model, want in TRAIN_JAX_TILES_PER_S.items():
        a = _train_tps(jax_, model)
        note = f"wall clock at load avg up to {load:.1f}" if a and load is not None else ("" if a else missing(jax_, model, "JAX"))
        add(f"{model}: train tiles/s (JAX, batch {TRAIN_BATCH})", want, a, note)
    e = results.get("jax_epoch", {}).get("epoch")
    note = (f"{e['model']}, batch {e['batch']}, {e['steady']['steps']} steps, last epoch; "
            f"epoch wall {e['steady']['wall_s']:.2f} s, train steps {e['steady']['train_step_s']:.2f} s") if e else "JAX epoch not measured"
    tf_e = results.get("tf_epoch", {}).get("epoch")
    if tf_e:
        note += f"; TF: {tf_e['steady']['outside_train_step_share']:.2f}"
    add("end-to-end epoch (JAX): share of wall time outside the train steps, at most", EPOCH_OUTSIDE_SHARE_MAX,
        e and e["steady"]["outside_train_step_share"], note, at_most=True)
    return rows


# ----------------------------------------------------------------------------- markdown
def _f(x, nd=1):
    return "—" if x is None else f"{x:.{nd}f}"


def _heatmap_cells(cell, cpu):
    """The end of a score-only vs score+heatmap row: `cell`'s throughput and its overhead over
    score-only (on the CPU: per CPU-second, then wall-clock)."""
    cells = [f"{_f(_tps(cell, cpu))} ({_f(cell['tiles_per_s'])})", f"{_f((1 / _ratio(cell, 'score_only', cpu) - 1) * 100)} %"]
    if cpu:
        cells.append(f"{_f((1 / cell['ratio_to_score_only'] - 1) * 100)} %")
    return cells


def markdown(results, cmd):
    jax_ = results.get("jax_models", {})
    tf_ = results.get("tf_models", {})
    m = results["machine"]
    cpu = _uses_cpu(results)
    b_small, b_big = min(results["batches"]), max(results["batches"])
    lines = [
        f"Command: `{cmd}` — {results['date']}, {m['cores']} cores, load avg {_f(m['loadavg_start'][0], 2)} at start, "
        f"up to {_f(m['loadavg_max'], 2)} during the run; total {_f(results['wall_s'] / 60)} min"
        + ("" if results.get("complete", True) else " (**incomplete run**: sections missing below were not reached)")
        + f". Versions: {', '.join(f'{k} {v}' for k, v in results['versions'].items())}.",
        "",
        f"Medians of {results['rounds']} timed rounds after warm-up (compile excluded); variants compared are "
        "interleaved in one process, order alternating. Overhead = time(score+heatmap) / time(score-only) - 1 "
        "(median of per-round ratios; the targets give these ratios' quartiles too). "
        + ("`CPU`: process CPU seconds (all threads), which load from other jobs disturbs much less than wall "
           "time; `wall`: wall-clock. " if cpu else "")
        + "GFLOPs per tile: XLA HLO cost analysis of the JAX graph at batch 1 (multiply-add = 2 FLOPs); for the "
        "transformers the map's extra FLOPs are mostly the discard's counting comparisons "
        "(XLA counts a while loop's body once). "
        "Peak memory: process RSS sampled every 20 ms during the timed passes. "
        f"Matmul peak (f32 2048², same backend): JAX {_f(jax_.get('matmul_peak_gflops'))} GFLOPS wall"
        + (f" / {_f(jax_.get('matmul_peak_gflops_per_cpu_s'))} per CPU-s" if jax_.get("matmul_peak_gflops_per_cpu_s") else "")
        + f", TF {_f(tf_.get('matmul_peak_gflops'))} wall"
        + (f" / {_f(tf_.get('matmul_peak_gflops_per_cpu_s'))} per CPU-s" if tf_.get("matmul_peak_gflops_per_cpu_s") else "")
        + ".",
        "",
    ]
    rows = []
    peak = jax_.get("matmul_peak_gflops_per_cpu_s") if cpu else jax_.get("matmul_peak_gflops")
    for model, rec in jax_.get("models", {}).items():
        h = _cell(jax_, model, b_big, "score_heatmap")
        sc = _cell(jax_, model, b_big, "score_only")
        fl = rec.get("gflops_score_only")
        extra = fl and rec.get("gflops") and 100 * (rec["gflops"] / fl - 1)
        achieved = sc and fl and fl * _tps(sc, cpu)
        rows.append([model, _f(rec["params"] / 1e6, 2), _f(fl, 2), "x".join(map(str, rec["heatmap_shape"])),
                     f"{_f(extra, 2)} %", _f(h and h["peak_rss_mib"], 0),
                     f"{_f(achieved)}{' per CPU-s' if cpu else ''} ({_f(achieved and peak and 100 * achieved / peak)} %)"])
    lines.append(markdown_table(["model", "params (M)", "GFLOPs (score-only)", "heatmap", "map: extra XLA FLOPs",
                                 f"peak RSS b{b_big} score+map (MiB)",
                                 f"achieved GFLOPS b{b_big} score-only (share of matmul peak)"], rows))
    unit = "tiles per CPU-s" if cpu else "tiles/s"
    rows = []
    for model in jax_.get("models", {}):
        for b in sorted({b_small, b_big}):
            s, h = _cell(jax_, model, b, "score_only"), _cell(jax_, model, b, "score_heatmap")
            if not (s and h):
                continue
            rows.append([model, b, f"{_f(_tps(s, cpu))} ({_f(s['tiles_per_s'])})", *_heatmap_cells(h, cpu)])
            d0 = _cell(jax_, model, b, "score_heatmap_discard0")
            if d0:
                rows.append([f"{model}, discard_ratio 0", b, "", *_heatmap_cells(d0, cpu)])
            hp = _cell(jax_, model, b, "score_heatmap_host_parallel")
            sp = _cell(jax_, model, b, "score_only_host_parallel")
            if hp:  # what predict / evaluate run (model.host_parallel=auto)
                overs = [_split_ratio(jax_, model, b, c) for c in ((True, False) if cpu else (False,))]
                rows.append([f"{model}, both split over the cores", b, f"{_f(_tps(sp, cpu))} ({_f(sp and sp['tiles_per_s'])})",
                             f"{_f(_tps(hp, cpu))} ({_f(hp['tiles_per_s'])})",
                             *(f"{_f(o and (1 / o - 1) * 100)} %" for o in overs)])
    lines += ["", f"Score-only vs score+heatmap, JAX ({unit}; wall-clock tiles/s in brackets):", "",
              markdown_table(["model", "batch", "score-only", "score+heatmap",
                              *(("overhead CPU", "overhead wall") if cpu else ("overhead",))], rows)]
    rows = []
    for model, rec in tf_.get("models", {}).items():
        for b in results["batches"]:
            a, t = _cell(jax_, model, b, "score_heatmap"), _cell(tf_, model, b, "score_heatmap")
            p = _jax_served(jax_, model, b)
            n = jax_.get("models", {}).get(model, {}).get("fast_depthwise_layers")
            split = _cell(jax_, model, b, "score_heatmap_host_parallel")
            rows.append([model, b, f"{_f(_tps(a, cpu))} ({_f(a and a['tiles_per_s'])})",
                         f"{_f(_tps(split, cpu))} ({_f(split and split['tiles_per_s'])})",
                         f"{_f(_tps(t, cpu))} ({_f(t and t['tiles_per_s'])})",
                         _f(p and t and p["tiles_per_s"] / t["tiles_per_s"], 2), n])
    lines += ["", f"JAX vs TensorFlow backend, score+heatmap ({unit}; wall-clock in brackets; separate processes, "
              "one after the other):", "",
              markdown_table(["model", "batch", "JAX, one execution", "JAX, batch split over the cores", "TF",
                              "JAX / TF (wall, split)", "JAX fast depthwise layers"], rows)]
    if not (jax_.get("models") or tf_.get("models")):  # the inference sections did not run: no empty tables
        lines = lines[:2]
    post = results.get("posthoc", {}).get("posthoc", {})
    if post:
        lines += ["", f"Single pass vs post-hoc (JAX, same tiles, interleaved; {unit}):", "",
                  markdown_table(["model", "batch", "single pass", "post-hoc method", "post-hoc", "single-pass speed-up"],
                                 [[model, c["batch"], _f(_tps(c["single_pass"], cpu)), c["method"], _f(_tps(c["posthoc"], cpu)),
                                   f"{_f(1 / _ratio(c['posthoc'], 'single_pass', cpu), 2)}x"] for model, c in post.items()])]
    pipe = results.get("pipeline", {})
    if pipe.get("runs"):
        lines += ["", f"tf.data pipeline alone (`{pipe.get('command', '')}`, bundled sample, batch {b_big}):", "",
                  markdown_table(["pipeline", "tiles/s", "tiles per CPU-s"],
                                 [[r.get("pipeline"), r.get("tiles_per_s"), r.get("tiles_per_cpu_s", "—")] for r in pipe["runs"]])]
    pred = results.get("predict", {}).get("predict")
    if pred:
        t = pred["timings"]
        lines += ["", f"`predict` end to end ({pred['model']}, {pred['images']} DeepPCB sample images of 640x640, "
                  f"batch {pred['batch_size']}, wall clock): {_f(pred['images_per_s'], 2)} images/s, "
                  f"{_f(100 * pred['model_share'])} % of wall time in the model; outside it (s): "
                  + ", ".join(f"{k} {_f(v, 3)}" for k, v in t.items() if k != "model") + "."]
    lines += training_markdown(results)
    lines += ["", f"Targets (issue 7; ratios within one process on {'CPU' if cpu else 'wall'} time, JAX/TF and absolute "
              "figures on wall time; training: wall-clock train tiles/s):", "",
              markdown_table(["target", "threshold", "measured", "met", "note"],
                             [[r["target"], r["threshold"], _f(r["value"], 2),
                               "n/a" if r["met"] is None else ("met" if r["met"] else "**missed**"), r["note"]]
                              for r in results["targets"]])]
    return "\n".join(lines) + "\n"


def training_markdown(results) -> list:
    """The training rows: train-step figures per model and backend, then the end-to-end epoch."""
    lines = []
    steps = [(b, results[k]) for b, k in (("JAX", "jax_train"), ("TF", "tf_train")) if results.get(k, {}).get("models")]
    if steps:
        prec = ", ".join(sorted({r.get("precision", "float32") for _, r in steps}))
        jax_, tf_, peer = (results.get(k, {}) for k in ("jax_train", "tf_train", "peer_train"))
        lines += ["", f"Train step (random init, Adam, binary cross-entropy and metrics on the score as kerasxai.training "
                  f"compiles them; precision {prec}; batch sizes interleaved, compile excluded; wall-clock tiles/s). "
                  "JAX: what training runs (train.host_parallel=auto: the batch split into parts over the cores, "
                  "or one execution where auto keeps the model on one) and, where split, one execution a step (off), "
                  "interleaved in one process; TF: one execution, its own process right after JAX's; peer: "
                  + (f"PyTorch + timm (shared/peers/bench_torch_train.py, {peer.get('framework')}, 2 threads, batch "
                     f"{TRAIN_BATCH}, 224 px), run right after the model's JAX and TF figures" if peer.get("models")
                     else f"failed ({peer['error']})" if "error" in peer else "not run (--peer-python)")
                  + ". Ratios: JAX as training runs it.", "",
        ]
        rows = []
        for model in dict.fromkeys([*jax_.get("models", {}), *tf_.get("models", {})]):
            recs = [r.get("models", {}).get(model, {}).get("batches", {}) for r in (jax_, tf_)]
            for b in sorted({int(b) for r in recs for b in r}):
                parts = jax_.get("models", {}).get(model, {}).get("host_parallel_parts")
                one = "train_step" if parts == 1 else "train_step_one_execution"  # auto kept it on one execution
                a, o, t, p = (_cell(res, model, b, v) for res, v in ((jax_, "train_step"), (jax_, one),
                                                                    (tf_, "train_step"), (peer, "train_step")))
                tps = [c and c["tiles_per_s"] for c in (a, o, t, p)]
                rows.append([model, b, parts or "—", *map(_f, tps), _f(tps[0] and tps[2] and tps[0] / tps[2], 2),
                             _f(tps[0] and tps[3] and tps[0] / tps[3], 2)])
        lines.append(markdown_table(["model", "batch", "JAX parts a step", "JAX tiles/s", "JAX, one execution", "TF tiles/s",
                                     "peer (torch+timm) tiles/s", "JAX / TF", "JAX / peer"], rows))
        lines += ["", "Train step per process (JAX's peak RSS holds both variants' models; kernel share: "
                  "system / (user + system) CPU time):", ""]
        rows = []
        for backend, res in steps:
            for model, rec in res["models"].items():
                for b, cell in rec["batches"].items():
                    for variant, label in (("train_step", backend), ("train_step_one_execution", f"{backend}, one execution")):
                        c = cell.get(variant)
                        if c is None:
                            continue
                        share = c.get("cpu_system_share")
                        rows.append([model, label, b, _f(c["tiles_per_s"]), _f(c["tiles_per_cpu_s"]),
                                     f"{_f(share and 100 * share)} %", _f(c["peak_rss_mib"], 0), _f(c["first_call_s"])])
        lines.append(markdown_table(["model", "backend", "batch", "train tiles/s", "tiles per CPU-s", "kernel share of CPU",
                                     "peak RSS (MiB)", "first call, compile included (s)"], rows))
    epochs = [(b, results[k]["epoch"]) for b, k in (("JAX", "jax_epoch"), ("TF", "tf_epoch")) if "epoch" in results.get(k, {})]
    if epochs:
        lines += ["", "End-to-end epoch (a short `kerasxai.training` run; the last epoch, the first includes compilation; "
                  "train steps: batch begin to end, any wait for tf.data included; outside: validation, callbacks, "
                  "checkpoints):", "",
        ]
        rows = []
        for backend, e in epochs:
            st = e["steady"]
            share = st.get("cpu_system_share")
            rows.append([e["model"], backend, e["data"], e["batch"], st["steps"], _f(st["wall_s"], 2), _f(st["train_step_s"], 2),
                         f"{_f(100 * st['outside_train_step_share'])} %", _f(st["validation_s"], 2), f"{_f(share and 100 * share)} %"])
        lines.append(markdown_table(["model", "backend", "data", "batch", "steps", "epoch wall (s)", "train steps (s)",
                                     "outside train steps", "validation (s)", "kernel share of CPU"], rows))
    return lines


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="output folder (bench.json, bench.md, bench.log)")
    p.add_argument("--quick", action="store_true", help="2 models, fewer rounds: a smoke run")
    p.add_argument("--models", type=lambda s: s.split(","), help="default: all seven (quick: 2)")
    p.add_argument("--tf-models", type=lambda s: s.split(","),
                   help=f"inference: models also run under TF (default: {','.join(JAX_VS_TF_MODELS)}, quick: 1); "
                        "train runs every model under both")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batches", type=lambda s: [int(b) for b in s.split(",")], help="default 1,32 (quick 1,8)")
    p.add_argument("--rounds", type=int, help="timed rounds per figure (default 3, quick 2)")
    p.add_argument("--min-time", type=float, help="seconds per timed round (default 1.0, quick 0.2)")
    p.add_argument("--skip", type=lambda s: s.split(","), default=[],
                   help=f"sections to skip: {','.join(SECTIONS)} (tf: every run on the TensorFlow backend)")
    p.add_argument("--only", type=lambda s: s.split(","), default=[],
                   help="run only these sections (tf: the TF inference comparison; train and epoch run on "
                        "both backends unless --skip tf)")
    p.add_argument("--train-batches", type=lambda s: [int(b) for b in s.split(",")],
                   help="train: batch sizes, CNNs all, transformers the smallest (default 32,64)")
    p.add_argument("--epoch-steps", type=int, help="epoch: train steps an epoch (default 20, quick 3)")
    p.add_argument("--precision", default="float32", choices=["float32", "mixed_bfloat16"],
                   help="train, epoch: train.precision, the dtype policy of the trained model")
    p.add_argument("--peer-python", metavar="PATH",
                   help="train: this Python (with torch and timm) runs the PyTorch peer's train step "
                        f"({PEERS / 'bench_torch_train.py'}) after each of {', '.join(PEER_TRAIN)}; default: not run")
    p.add_argument("--data", metavar="CONFIG", help="epoch: train on this config's data (default: synthetic tiles)")
    p.add_argument("--render", metavar="BENCH_JSON", help="only re-write bench.md from an existing bench.json")
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
    args.train_batches = args.train_batches or [32, 64]
    args.epoch_steps = args.epoch_steps or (3 if q else 20)
    bad = sorted(set(args.skip + args.only) - set(SECTIONS))
    if bad:
        p.error(f"unknown section(s) {bad} in --skip/--only; use {', '.join(SECTIONS)}")
    if args.data and not Path(args.data).is_file():
        p.error(f"--data: config file '{args.data}' not found")
    peer = None
    if args.peer_python:
        if not Path(args.peer_python).is_file():
            p.error(f"--peer-python: '{args.peer_python}' not found; give a Python with torch and timm")
        if args.size != 224:
            p.error(f"--peer-python: the peer times 224 px tiles; drop --size {args.size} or --peer-python")
        try:
            peer = peer_script()
        except ValueError as e:
            p.error(str(e))

    def wanted(section):
        return section not in args.skip and (not args.only or section in args.only)

    out = Path(args.out)
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    log = out / "bench.log"
    log.write_text("")
    cores = cpu_cores()
    cmd = "python tools/bench.py " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.render:
        results = json.loads(Path(args.render).read_text())
        results["targets"] = targets(results, max(results["batches"]), results["machine"]["cores"])
        atomic_write_text(out / "bench.md", markdown(results, results["command"]))
        return 0
    t0 = time.perf_counter()
    loads = [os.getloadavg()]
    results = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "command": cmd,
        "size": args.size, "batches": args.batches, "rounds": args.rounds, "min_time_s": args.min_time,
        "versions": versions(),
    }
    key = [m for m in KEY_MODELS if m in args.models]
    rest = [m for m in args.models if m not in key]

    def save(final=False):
        """Write bench.json / bench.md with what is measured so far (a late stop keeps it)."""
        loads.append(os.getloadavg())
        results["wall_s"] = time.perf_counter() - t0
        results["complete"] = final
        results["machine"] = {
            "cores": cores, "platform": platform.platform(), "processor": platform.processor(),
            "loadavg_start": list(loads[0]), "loadavg_end": list(loads[-1]),
            "loadavg_samples": [list(x) for x in loads], "loadavg_max": max(x[0] for x in loads),
        }
        results["targets"] = targets(results, max(args.batches), cores)
        atomic_write_text(out / "bench.json", json.dumps(results, indent=1))
        atomic_write_text(out / "bench.md", markdown(results, cmd))

    # Most important first, so that a run cut short still answers the targets.
    if wanted("models"):
        results["jax_models"] = worker("models", "jax", key or rest, args, work, log)
        save()
    if wanted("tf"):
        results["tf_models"] = worker("models", "tensorflow", args.tf_models, args, work, log)
        save()
    if wanted("posthoc"):
        post_models = [m for m in KEY_MODELS if m in args.models]
        results["posthoc"] = worker("posthoc", "jax", post_models or args.models[:1], args, work, log)
        save()
    cnn = [m for m in args.models if not m.startswith(("vit", "deit"))]
    if wanted("predict"):
        results["predict"] = worker("predict", "jax", (cnn or args.models)[:1], args, work, log)
        save()
    if wanted("pipeline"):
        results["pipeline"] = pipeline(args, work, log)
        save()
    backends = ["jax"] + (["tensorflow"] if "tf" not in args.skip else [])
    train_args = ["--precision", args.precision, "--epoch-steps", args.epoch_steps, *(["--data", args.data] if args.data else [])]
    if wanted("train"):  # model by model: its JAX, TF and peer figures within the same minutes
        for model in args.models:
            for backend in backends:
                merge_models(results, f"{'jax' if backend == 'jax' else 'tf'}_train", worker(
                    "train", backend, [model], args, work, log, batches=args.train_batches, extra=train_args))
                save()
            if peer and model in PEER_TRAIN:
                merge_models(results, "peer_train", run_peer(args.peer_python, peer, model, TRAIN_BATCH, log, args.timeout))
                save()
    if wanted("epoch"):
        for backend in backends:
            results[f"{'jax' if backend == 'jax' else 'tf'}_epoch"] = worker(
                "epoch", backend, (cnn or args.models)[:1], args, work, log, batches=args.train_batches, extra=train_args)
            save()
    if key and rest and wanted("models"):
        more = worker("models", "jax", rest, args, work, log)
        if "models" in more and "models" in results["jax_models"]:
            results["jax_models"]["models"].update(more["models"])
        else:
            results["jax_models_rest"] = more
    save(final=True)
    errors = [k for k, v in results.items() if isinstance(v, dict) and "error" in v]
    print(f"bench: wrote {out / 'bench.json'} and {out / 'bench.md'} in {results['wall_s'] / 60:.1f} min"
          + (f"; errors in {errors} (see {log})" if errors else ""), file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    from kerasxai.cli import run

    sys.exit(run(main))
