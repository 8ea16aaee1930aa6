"""Where a model's forward pass spends its time on XLA's CPU runtime, by layer scope (JAX backend).

    python tools/profile_model.py                                   # ViT-Tiny score+heatmap, batch 32
    python tools/profile_model.py --score-only                      # the same model without the map
    python tools/profile_model.py --model mobilenetv3_large --depth 1 --top 15
    python tools/profile_model.py --train --model mobilenetv3_large_d   # one train step

The model's inference function is compiled once, run a few times, then traced with
`jax.profiler` for `--calls` calls. Each XLA operation the trace shows on XLA's worker threads is
charged to the Keras scope that created it (the HLO `op_name` metadata: `block_3_attn/dot_general`,
`rollout/while/...`; block numbers are folded into `block_*`; operations XLA made without a
scope are grouped by kind), and the table lists the scopes by time per call. Times are the
operations' own durations ("op time"): operations that split their work over both cores count
once, at their wall duration, so op time is close to the wall time of a call, not to its CPU
time. On a shared machine op times move by 10-20 % from run to run: compare scopes within one
run. `--json` also writes the figures (temp file + rename).

`--train` profiles one train step instead: the model kerasxai.training builds and compiles
(random init, Adam, its loss and metrics; `--precision`), its `train_step` (forward, backward,
optimizer and metric updates) compiled with jax.jit. Each operation is also charged to a pass:
`backward` (gradient operations: JAX's `transpose(...)` in the op name), `forward` (the
differentiated forward pass, `jvp(...)`) or `update` (optimizer, metrics, the rest), so
e.g. the depthwise convolutions' backward shows as `backward` rows of their layer scopes.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile
import time

import _checkout  # noqa: F401
import numpy as np

from kerasxai.tables import markdown_table

WORKER_THREAD = "XLAEigen"  # XLA's CPU runtime runs operations on threads named tf_XLAEigen/...
WRAPPERS = ("ThunkExecutor::",)  # events that enclose operations: not charged
POOL_WAIT = "SlinkyThreadPool::Await"  # a thread waiting for its share of a parallel operation


BLOCK_NUMBER = re.compile(r"\b(block_|expanded_conv_|block)\d+[a-z]?_")  # block_3_, expanded_conv_3_, block2a_


def split_op_name(op_name: str) -> tuple[str, str]:
    """(Keras scope, pass) of an HLO `op_name`: JAX's transformation wrappers are taken off
    (`jit(f)/transpose(jvp(backbone))/conv_3/...` -> `backbone/conv_3/...`), block numbers
    folded (`block_*_`); the pass is backward under transpose(...), forward under jvp(...),
    else update."""
    parts, kinds = [], set()
    for part in op_name.split("/"):
        if part.startswith("jit("):
            continue  # a jitted function's name, not a layer scope
        while (m := re.fullmatch(r"(\w+)\((.*)\)", part)):
            kinds.add(m.group(1))
            part = m.group(2)
        parts.append(part)
    stage = "backward" if "transpose" in kinds else "forward" if "jvp" in kinds else "update"
    return BLOCK_NUMBER.sub(r"\1*_", "/".join(parts)), stage


def op_scopes(hlo_text: str) -> dict:
    """Instruction name -> (Keras scope, pass) from the `op_name` metadata."""
    scopes = {}
    for m in re.finditer(r'^\s*(?:ROOT )?%?([\w.\-]+) = .*?op_name="([^"]*)"', hlo_text, re.M):
        scopes.setdefault(m.group(1), split_op_name(m.group(2)))
    return scopes


def op_times(trace_dir: str, calls: int) -> tuple[dict, dict]:
    """Per operation name: milliseconds and events per call, from the Chrome trace jax.profiler wrote."""
    files = glob.glob(os.path.join(trace_dir, "plugins", "profile", "*", "*.trace.json.gz"))
    if not files:
        raise SystemExit(f"jax.profiler wrote no trace under '{trace_dir}'")
    with gzip.open(files[0]) as f:
        events = json.load(f)["traceEvents"]
    threads = {(e["pid"], e["tid"]): e["args"]["name"] for e in events
               if e.get("ph") == "M" and e.get("name") == "thread_name"}
    ms, count = collections.Counter(), collections.Counter()
    for e in events:
        name = e.get("name", "")
        if (e.get("ph") != "X" or WORKER_THREAD not in threads.get((e["pid"], e["tid"]), "")
                or name.startswith(WRAPPERS) or name.startswith("end: ")):
            continue
        ms[name] += e["dur"] / 1e3 / calls
        count[name] += 1 / calls
    return ms, count


def by_scope(ms: dict, count: dict, scopes: dict, depth: int, passes: bool = False) -> list[dict]:
    """Rows {scope, ms, ops} summed over the first `depth` components of each operation's scope
    (with `passes`, per scope and pass: rows {scope, pass, ms, ops})."""
    rows = collections.defaultdict(lambda: {"ms": 0.0, "ops": 0.0})
    for name, t in ms.items():
        stage = "-"
        if name == POOL_WAIT:
            key = "(waiting for a parallel operation's other thread)"
        else:
            # operations XLA made itself (no metadata) are grouped by kind: dot.61 -> dot
            kind = re.sub(r"\.\d+$", "", name)
            scope, stage = scopes.get(name, (f"(made by XLA: {kind})", "-"))
            key = "/".join(scope.split("/")[:depth])
        rows[(key, stage) if passes else key]["ms"] += t
        rows[(key, stage) if passes else key]["ops"] += count[name]
    out = [{"scope": k[0], "pass": k[1], **v} if passes else {"scope": k, **v} for k, v in rows.items()]
    return sorted(out, key=lambda r: -r["ms"])


def inference_step(model, x):
    """(compiled function, its arguments): the model's inference pass."""
    import jax

    trainable = [v.value for v in model.trainable_variables]
    frozen = [v.value for v in model.non_trainable_variables]
    fn = jax.jit(lambda tv, ntv, x: model.stateless_call(tv, ntv, x, training=False)[0])
    return fn.lower(trainable, frozen, x).compile(), (trainable, frozen, x)


def train_step(model, x, y):
    """(compiled function, its arguments): the compiled model's JAX `train_step` on (x, y)."""
    import jax

    model._symbolic_build(data_batch=(x, y))  # creates the optimizer and metric variables, as fit does
    state = tuple([v.value for v in vs] for vs in (model.trainable_variables, model.non_trainable_variables,
                                                    model.optimizer.variables, model.metrics_variables))
    return jax.jit(model.train_step).lower(state, (x, y)).compile(), (state, (x, y))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="vit_tiny_patch16_224", help="registry name (random init)")
    p.add_argument("--score-only", action="store_true", help="the model without the heatmap output")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--calls", type=int, default=3, help="traced calls (after 3 untraced ones)")
    p.add_argument("--depth", type=int, default=2, help="scope components to group by")
    p.add_argument("--top", type=int, default=25, help="rows to print")
    p.add_argument("--train", action="store_true", help="profile one train step (forward, backward, update)")
    p.add_argument("--precision", default="float32", choices=["float32", "mixed_bfloat16"],
                   help="--train: train.precision, the dtype policy of the trained model")
    p.add_argument("--json", help="also write the figures here")
    args = p.parse_args(argv)
    if args.calls < 1 or args.depth < 1:
        raise SystemExit("--calls and --depth must be at least 1")
    if args.train and args.score_only:
        raise SystemExit("--train profiles the model training builds (score and heatmap): drop --score-only")

    import jax
    import keras

    from kerasxai.models import build_model
    from kerasxai.runtime import atomic_write_json

    if keras.backend.backend() != "jax":
        raise SystemExit("profile_model traces XLA: run with KERAS_BACKEND=jax")
    x = np.random.default_rng(0).uniform(0, 255, (args.batch, args.size, args.size, 3)).astype("float32")
    if args.train:
        from bench_worker import _compiled_for_training, _train_targets
        from kerasxai.config import load_config

        cfg = load_config(None, ["data.reader=synthetic", f"model.name={args.model}", f"data.tile.size={args.size}",
                                 "train.optimizer=adam", f"train.precision={args.precision}"])
        model = _compiled_for_training(cfg)
        compiled, call_args = train_step(model, x, _train_targets(model, args.batch))
        variant = f"train step, {args.precision}"
    else:
        model = build_model(args.model, input_shape=(args.size, args.size, 3), heatmap=not args.score_only)
        compiled, call_args = inference_step(model, x)
        variant = "score-only" if args.score_only else "score+heatmap"
    for _ in range(3):
        jax.block_until_ready(compiled(*call_args))
    with tempfile.TemporaryDirectory() as trace_dir:
        t0 = time.perf_counter()
        jax.profiler.start_trace(trace_dir)
        for _ in range(args.calls):
            jax.block_until_ready(compiled(*call_args))
        jax.profiler.stop_trace()
        wall_ms = (time.perf_counter() - t0) * 1e3 / args.calls  # includes the tracing's own cost
        ms, count = op_times(trace_dir, args.calls)
    rows = by_scope(ms, count, op_scopes(compiled.as_text()), args.depth, passes=args.train)
    total = sum(r["ms"] for r in rows)
    print(f"{args.model} ({variant}), batch {args.batch} at {args.size}: op time {total:.1f} ms a call, "
          f"wall {wall_ms:.1f} ms a call while traced; {args.calls} traced calls\n")
    record = {"model": args.model, "variant": variant, "batch": args.batch, "size": args.size,
              "calls": args.calls, "op_ms": total, "wall_ms_traced": wall_ms, "scopes": rows}
    if args.train:
        record["passes"] = {s: sum(r["ms"] for r in rows if r["pass"] == s) for s in ("forward", "backward", "update", "-")}
        print("op time by pass: " + ", ".join(f"{s} {v:.1f} ms ({100 * v / total:.1f} %)"
                                               for s, v in record["passes"].items()) + "\n")
    by_pass = ["pass"] if args.train else []
    print(markdown_table(
        ["scope", *by_pass, "ms a call", "operations a call", "share of op time"],
        [[r["scope"], *(r["pass"] for _ in by_pass), f"{r['ms']:.2f}", f"{r['ops']:.0f}", f"{100 * r['ms'] / total:.1f} %"]
         for r in rows[: args.top]],
        align="l" * (1 + len(by_pass)) + "rrr"))
    if args.json:
        atomic_write_json(args.json, record)


if __name__ == "__main__":
    from kerasxai.cli import run

    sys.exit(run(main))
