"""Measurements inside ONE Keras backend process (run by tools/bench.py, one per backend).

    KERAS_BACKEND=jax python tools/bench_worker.py models --models mobilenetv3_large --json out.json

Tasks:
- ``models``: per model, score-only vs score+heatmap tiles/s at each batch size (the two
  variants interleaved round by round, order alternating, so load drift hits both alike),
  peak RSS during the timed passes, compile time, parameters, heatmap resolution, GFLOPs
  (JAX: XLA HLO cost analysis) and the backend's f32 matmul peak GFLOPS.
- ``posthoc``: single-pass score+heatmap vs post-hoc Grad-CAM / gradient rollout
  (kerasxai.explain) on the same tiles, interleaved.
- ``predict``: full images end to end through kerasxai.localize (images/s, model share).
- ``train``: per model, train-step tiles/s (random init, Adam, kerasxai.training's model,
  loss and metrics; every batch size for CNNs, the smallest for transformers, interleaved),
  peak RSS, compile time and the share of process CPU time spent in the kernel; under JAX
  both the step split over the cores (train.host_parallel=auto) and one execution (off).
- ``epoch``: a short real kerasxai.training run (synthetic tiles, or ``--data CONFIG``): epoch
  wall time, the time inside train steps and the share outside them (validation, callbacks,
  checkpoints; waits for tf.data when it falls behind are inside the step).
``train`` and ``epoch`` take ``--precision`` (train.precision: the dtype policy of the models).
Writes one JSON file (temp file + rename).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

from _checkout import REPO

from kerasxai.runtime import atomic_write_text


class PeakRSS:
    """Samples the process RSS every few ms while active; `.peak_mib` is the maximum seen."""

    def __init__(self, interval=0.02):
        import psutil

        self.proc, self.interval, self.peak = psutil.Process(), interval, 0
        self._stop = threading.Event()

    def __enter__(self):
        self.peak = self.proc.memory_info().rss
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(self.interval)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)

    @property
    def peak_mib(self):
        return self.peak / 2**20


def timed(fn, min_time, with_cpu=False):
    """Wall seconds per call of `fn()` (and process CPU seconds per call, all threads, if
    `with_cpu`): calls it until `min_time` has passed (at least once)."""
    n, t0, c0 = 0, time.perf_counter(), time.process_time()
    while True:
        fn()
        n += 1
        dt = time.perf_counter() - t0
        if dt >= min_time:
            return (dt / n, (time.process_time() - c0) / n) if with_cpu else dt / n


def interleaved(fns: dict, rounds, min_time, batch):
    """Median tiles/s of each callable and median per-round ratios to the first, interleaved.

    `batch`: tiles per call, one number for all callables or a dict of them by name. Process
    CPU time is also split into user and system (kernel) time over the timed rounds."""
    import psutil

    names = list(fns)
    tiles = batch if isinstance(batch, dict) else dict.fromkeys(names, batch)
    per = {k: [] for k in names}
    cpu = {k: [] for k in names}
    user = dict.fromkeys(names, 0.0)
    system = dict.fromkeys(names, 0.0)
    peaks = {k: 0.0 for k in names}
    proc = psutil.Process()
    for r in range(rounds):
        order = names if r % 2 == 0 else names[::-1]
        for k in order:
            with PeakRSS() as mem:
                c0 = proc.cpu_times()
                wall, cpu_s = timed(fns[k], min_time, with_cpu=True)
                c1 = proc.cpu_times()
            per[k].append(wall)
            cpu[k].append(cpu_s)
            user[k] += c1.user - c0.user
            system[k] += c1.system - c0.system
            peaks[k] = max(peaks[k], mem.peak_mib)
    base = names[0]
    out = {}
    for k in names:
        ratios = [b / a for a, b in zip(per[k], per[base])]  # time(base)/time(k) = tps(k)/tps(base)
        cpu_ratios = [b / a for a, b in zip(cpu[k], cpu[base])]
        busy = user[k] + system[k]
        out[k] = {
            "tiles_per_s": tiles[k] / statistics.median(per[k]),
            "seconds_per_batch": [round(t, 5) for t in per[k]],
            "tiles_per_cpu_s": tiles[k] / statistics.median(cpu[k]),
            "cpu_user_s": round(user[k], 3),
            "cpu_system_s": round(system[k], 3),
            "cpu_system_share": round(system[k] / busy, 4) if busy > 0 else None,
            "cpu_seconds_per_batch": [round(t, 5) for t in cpu[k]],
            "peak_rss_mib": round(peaks[k], 1),
            f"ratio_to_{base}": statistics.median(ratios),
            f"cpu_ratio_to_{base}": statistics.median(cpu_ratios),
        }
    return out


def matmul_peak(n=2048, repeats=5):
    """GFLOPS of a plain f32 (n x n) @ (n x n) matmul under the active backend (median)."""
    import keras
    import numpy as np

    a = np.random.default_rng(0).standard_normal((n, n)).astype("float32")
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        x = jax.device_put(a)
        f = jax.jit(lambda u: u @ u)
        run = lambda: f(x).block_until_ready()  # noqa: E731
    elif backend == "tensorflow":
        import tensorflow as tf

        x = tf.constant(a)
        f = tf.function(lambda u: tf.matmul(u, u))
        run = lambda: f(x).numpy()  # noqa: E731
    else:
        x = keras.ops.convert_to_tensor(a)
        run = lambda: keras.ops.convert_to_numpy(keras.ops.matmul(x, x))  # noqa: E731
    run()
    times = [timed(run, 0.2, with_cpu=True) for _ in range(repeats)]
    wall = statistics.median(t for t, _ in times)
    cpu = statistics.median(c for _, c in times)
    return {"gflops": 2 * n**3 / wall / 1e9, "gflops_per_cpu_s": 2 * n**3 / cpu / 1e9}


def xla_gflops(model, shape):
    """GFLOPs of one forward pass at `shape` from XLA's HLO cost analysis (JAX backend only)."""
    import keras

    if keras.backend.backend() != "jax":
        return None
    import jax
    import numpy as np

    tv = [v.value for v in model.trainable_variables]
    ntv = [v.value for v in model.non_trainable_variables]
    f = jax.jit(lambda t, n, x: model.stateless_call(t, n, x, training=False)[0])
    cost = f.lower(tv, ntv, np.zeros(shape, "float32")).cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0]
    return float(cost["flops"]) / 1e9


def _tiles(batch, size, seed=0):
    import numpy as np

    return np.random.default_rng(seed).uniform(0, 255, (batch, size, size, 3)).astype("float32")


def _build_variants(name, size):
    """score+heatmap (defaults), score-only, and for transformers the map without discard."""
    from kerasxai.models import build_model, is_transformer

    heat = build_model(name, input_shape=(size, size, 3))
    score = build_model(name, input_shape=(size, size, 3), heatmap=False)
    score.set_weights(heat.get_weights())
    extra = {}
    if is_transformer(name):  # what the per-image discard (a k-th smallest of T*T values) costs
        extra["score_heatmap_discard0"] = build_model(name, input_shape=(size, size, 3), discard_ratio=0.0)
        extra["score_heatmap_discard0"].set_weights(heat.get_weights())
    return heat, score, extra


def task_models(args):
    import keras

    from kerasxai.models import fast_depthwise, host_parallel, is_transformer

    peak = matmul_peak()
    result = {"matmul_peak_gflops": peak["gflops"], "matmul_peak_gflops_per_cpu_s": peak["gflops_per_cpu_s"], "models": {}}
    for name in args.models:
        t0 = time.perf_counter()
        heat, score, extra = _build_variants(name, args.size)
        parallel = host_parallel.HostParallelPredictor(heat)
        parallel_score = host_parallel.HostParallelPredictor(score)
        rec = {
            "build_s": round(time.perf_counter() - t0, 1),
            "params": int(heat.count_params()),
            "params_score_only": int(score.count_params()),
            "heatmap_shape": list(heat.output["heatmap"].shape[1:]),
            "transformer": is_transformer(name),
            "fast_depthwise_layers": sum(isinstance(l, fast_depthwise.FastDepthwiseConv2D) for l in _all_layers(heat)),
            "host_parallel_parts": parallel.parts,
            "batches": {},
        }
        rec["gflops"] = xla_gflops(heat, (1, args.size, args.size, 3))
        rec["gflops_score_only"] = xla_gflops(score, (1, args.size, args.size, 3))
        for batch in args.batches:
            x = _tiles(batch, args.size)
            fns = {"score_only": lambda: score.predict_on_batch(x), "score_heatmap": lambda: heat.predict_on_batch(x)}
            fns.update({k: (lambda m=m: m.predict_on_batch(x)) for k, m in extra.items()})
            if parallel.parts > 1 and batch >= parallel.parts:  # what predict / evaluate run (model.host_parallel=auto)
                fns["score_heatmap_host_parallel"] = lambda: parallel.predict_on_batch(x)
                fns["score_only_host_parallel"] = lambda: parallel_score.predict_on_batch(x)
            compile_s = {}
            for k, fn in fns.items():
                t0 = time.perf_counter()
                fn()
                compile_s[k] = round(time.perf_counter() - t0, 2)
                fn()  # second call: any lazy work done
            cell = interleaved(fns, args.rounds, args.min_time, batch)
            for k in cell:
                cell[k]["first_call_s"] = compile_s[k]
            rec["batches"][str(batch)] = cell
            print(f"[{keras.backend.backend()}] {name} b={batch}: "
                  + ", ".join(f"{k} {v['tiles_per_s']:.1f}/s" for k, v in cell.items()), file=sys.stderr, flush=True)
        result["models"][name] = rec
        parallel.close()
        parallel_score.close()
        del heat, score, extra, parallel, parallel_score
        keras.backend.clear_session()
    return result


def _all_layers(model):
    import keras

    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


def task_posthoc(args):
    import keras

    from kerasxai.explain import GradCAMExplainer, GradRolloutExplainer
    from kerasxai.models import build_model, explain_model, is_transformer

    out = {}
    batch = max(args.batches)
    for name in args.models:
        model = build_model(name, input_shape=(args.size, args.size, 3))
        explainer_model = explain_model(model)
        if is_transformer(name):
            explainer, method = GradRolloutExplainer(explainer_model), "gradient rollout"
        else:
            explainer, method = GradCAMExplainer(explainer_model), "Grad-CAM (+Grad-CAM++ from the same gradient)"
        x = _tiles(batch, args.size, seed=1)
        fns = {"single_pass": lambda: model.predict_on_batch(x), "posthoc": lambda: explainer(x)}
        for fn in fns.values():
            fn()
            fn()
        cell = interleaved(fns, args.rounds, args.min_time, batch)
        cell["method"] = method
        cell["batch"] = batch
        out[name] = cell
        print(f"[posthoc] {name}: single {cell['single_pass']['tiles_per_s']:.1f}/s, "
              f"{method} {cell['posthoc']['tiles_per_s']:.1f}/s", file=sys.stderr, flush=True)
        keras.backend.clear_session()
    return {"posthoc": out}


def task_predict(args):
    from kerasxai.localize import Localizer, benchmark
    from kerasxai.models import build_model

    images = sorted(str(p) for p in (REPO / "kerasxai" / "sample_data" / "deeppcb").rglob("*.jpg"))
    if not images:
        raise SystemExit("bench_worker predict: no sample images under kerasxai/sample_data/deeppcb")
    name = args.models[0]
    model = build_model(name, input_shape=(args.size, args.size, 3))
    batch = max(args.batches)
    loc = Localizer(model, tile_size=args.size, overlap=2, batch_size=batch)
    runs = [benchmark(loc, images, repeats=1, warmup=(r == 0)) for r in range(max(args.rounds, 1))]
    best = sorted(runs, key=lambda r: r["images_per_s"])[len(runs) // 2]  # the median run
    best["model"] = name
    best["image_hw"] = [640, 640]
    best["runs_images_per_s"] = [r["images_per_s"] for r in runs]
    best["runs_model_share"] = [r["model_share"] for r in runs]
    return {"predict": best}


def _train_config(name, args, **train):
    """kerasxai.training's config for `name` at --size with Adam and --precision; the data of
    --data CONFIG, else synthetic images of 2x2 tiles, enough for --epoch-steps full batches.
    `train`: further train.* keys."""
    from kerasxai.config import load_config

    work = Path(args.json).resolve().parent / "train_work"
    items = {"model.name": name, "data.tile.size": args.size, "train.optimizer": "adam",
             "train.precision": args.precision, "train.runs_dir": work / "runs",
             **{f"train.{k}": v for k, v in train.items()}}
    if not args.data:
        # 4 tiles an image, 70 % of the images train, at least 2 validation images
        images = max(20, -(-args.epoch_steps * min(args.batches) // (4 * 0.7)) + 4)
        items.update({"data.reader": "synthetic", "data.options.count": int(images),
                      "data.options.height": 2 * args.size, "data.options.width": 2 * args.size,
                      "data.tile.overlap": 0, "data.cache_dir": work / "data_cache"})
    return load_config(args.data, [f"{k}={v}" for k, v in items.items()])


def _compiled_for_training(cfg):
    """The model kerasxai.training trains for `cfg`, compiled as it compiles it."""
    from kerasxai import training

    model = training.build_model(cfg)
    return training.compile_model(model, cfg, distill=training.has_dist_head(model))


def _train_targets(model, batch):
    """Half defective labels on "score" (and the distillation head), dummies on the rest."""
    import numpy as np

    from kerasxai import training

    label = (np.arange(batch) % 2).astype("float32")[:, None]
    return {k: np.asarray(v) for k, v in training.targets(label, training.output_keys(model)).items()}


def task_train(args):
    """Train-step tiles/s per model and batch size; under JAX with the batch split over the
    cores (train.host_parallel=auto), also one execution a step (train.host_parallel=off) on a
    copy of the model with the same weights, interleaved with it."""
    import keras

    from kerasxai.models import is_transformer
    from kerasxai.training import host_parallel

    result = {"precision": args.precision, "optimizer": "adam", "models": {}}
    for name in args.models:
        t0 = time.perf_counter()
        cfg = _train_config(name, args)
        model = _compiled_for_training(cfg)
        rec = {"build_s": round(time.perf_counter() - t0, 1), "params": int(model.count_params()),
               "transformer": is_transformer(name), "host_parallel_parts": host_parallel.resolve_parts(cfg),
               "batches": {}}
        variants = {"train_step": model}
        if rec["host_parallel_parts"] > 1:
            one = _compiled_for_training(_train_config(name, args, host_parallel="off"))
            one.set_weights(model.get_weights())
            variants["train_step_one_execution"] = one
        batches = [min(args.batches)] if rec["transformer"] else args.batches
        fns, first, where = {}, {}, {}  # where: callable's name -> (batch, variant)
        for b in batches:
            x = _tiles(b, args.size, seed=2)
            for variant, m in variants.items():
                key = f"{variant} b{b}"
                fns[key] = lambda m=m, x=x, y=_train_targets(m, b): m.train_on_batch(x, y)
                where[key] = (b, variant)
                t0 = time.perf_counter()
                fns[key]()
                first[key] = round(time.perf_counter() - t0, 2)  # tracing + compilation + one step
                fns[key]()
        cells = interleaved(fns, args.rounds, args.min_time, {k: b for k, (b, _) in where.items()})
        for key, (b, variant) in where.items():
            rec["batches"].setdefault(str(b), {})[variant] = dict(cells[key], first_call_s=first[key])
        result["models"][name] = rec
        print(f"[{keras.backend.backend()} train] {name}: "
              + ", ".join(f"{k} {c['tiles_per_s']:.1f}/s" for k, c in cells.items()), file=sys.stderr, flush=True)
        del model, variants, fns
        keras.backend.clear_session()
    return result


def step_clock():
    """A Keras callback recording, per epoch, the wall time, the time inside train steps (batch
    begin to end, the step's results fetched), the validation time and the process CPU time
    split user/system (`.epochs`: one dict an epoch)."""
    import keras
    import numpy as np
    import psutil

    class StepClock(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.epochs, self.proc = [], psutil.Process()

        def on_epoch_begin(self, epoch, logs=None):
            self.rec = {"epoch": epoch, "steps": 0, "train_step_s": 0.0, "validation_s": 0.0}
            self.t0, self.c0 = time.perf_counter(), self.proc.cpu_times()

        def on_train_batch_begin(self, batch, logs=None):
            self.tb = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            for v in (logs or {}).values():  # JAX dispatches asynchronously: wait for the step
                np.asarray(v)
            self.rec["train_step_s"] += time.perf_counter() - self.tb
            self.rec["steps"] += 1

        def on_test_begin(self, logs=None):
            self.tv = time.perf_counter()

        def on_test_end(self, logs=None):
            self.rec["validation_s"] += time.perf_counter() - self.tv

        def on_epoch_end(self, epoch, logs=None):  # last callback: after checkpoints and logs
            wall, c1 = time.perf_counter() - self.t0, self.proc.cpu_times()
            user, system = c1.user - self.c0.user, c1.system - self.c0.system
            self.rec.update(wall_s=wall, outside_train_step_share=1 - self.rec["train_step_s"] / wall,
                            cpu_user_s=user, cpu_system_s=system,
                            cpu_system_share=system / (user + system) if user + system > 0 else None)
            self.epochs.append({k: round(v, 4) if isinstance(v, float) else v for k, v in self.rec.items()})

    return StepClock()


def task_epoch(args):
    """A short real training (kerasxai.training.train) of the first model; the last epoch is
    the steady one (the first includes compilation)."""
    from kerasxai import training

    batch = min(args.batches)
    name = args.models[0]
    cfg = _train_config(name, args, epochs=args.epochs, batch_size=batch, steps_per_epoch=args.epoch_steps,
                        max_test_tiles=0, warmup_epochs=0)
    s = cfg.data.split
    cfg.train.max_val_tiles = max(batch, round(args.epoch_steps * batch * s.val / max(s.train, 1e-9)))
    clock = step_clock()
    run_dir, summary = training.train(cfg, callbacks=[clock], verbose=0, progress=False)
    return {"epoch": {"model": name, "batch": batch, "precision": args.precision, "data": args.data or "synthetic",
                      "steps_per_epoch": summary["steps_per_epoch"], "tiles": summary["tiles"],
                      "epochs": clock.epochs, "steady": clock.epochs[-1], "run_dir": str(run_dir)}}


TASKS = {"models": task_models, "posthoc": task_posthoc, "predict": task_predict, "train": task_train,
         "epoch": task_epoch}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("task", choices=sorted(TASKS))
    p.add_argument("--models", type=lambda s: s.split(","), required=True)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batches", type=lambda s: [int(b) for b in s.split(",")], default=[1, 32])
    p.add_argument("--rounds", type=int, default=5, help="timed rounds per variant (median)")
    p.add_argument("--min-time", type=float, default=1.0, help="seconds per timed round (calls repeat until then)")
    p.add_argument("--precision", default="float32", help="train, epoch: train.precision (float32 | mixed_bfloat16)")
    p.add_argument("--data", help="epoch: a config whose data section to train on (default: synthetic images)")
    p.add_argument("--epoch-steps", type=int, default=20, help="epoch: train steps an epoch")
    p.add_argument("--epochs", type=int, default=2, help="epoch: epochs (the first includes compilation)")
    p.add_argument("--json", required=True)
    args = p.parse_args(argv)

    import keras

    from kerasxai.models import fast_depthwise

    t0 = time.perf_counter()
    result = TASKS[args.task](args)
    result.update(
        backend=keras.backend.backend(),
        fast_depthwise_auto=fast_depthwise.resolve("auto"),
        task_wall_s=round(time.perf_counter() - t0, 1),
        loadavg_end=list(os.getloadavg()),
    )
    atomic_write_text(args.json, json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    from kerasxai.cli import run

    sys.exit(run(main))
