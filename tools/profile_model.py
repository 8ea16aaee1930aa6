"""Where a model's forward pass spends its time on XLA's CPU runtime, by layer scope (JAX backend).

    python tools/profile_model.py                                   # ViT-Tiny score+heatmap, batch 32
    python tools/profile_model.py --score-only                      # the same model without the map
    python tools/profile_model.py --model mobilenetv3_large --depth 1 --top 15

The model's inference function is compiled once, run a few times, then traced with
`jax.profiler` for `--calls` calls. Each XLA operation the trace shows on XLA's worker threads is
charged to the Keras scope that created it (the HLO `op_name` metadata: `block_3_attn/dot_general`,
`rollout/while/...`; block numbers are folded into `block_*`; operations XLA made without a
scope are grouped by kind), and the table lists the scopes by time per call. Times are the
operations' own durations ("op time"): operations that split their work over both cores count
once, at their wall duration, so op time is close to the wall time of a call, not to its CPU
time. On a shared machine op times move by 10-20 % from run to run: compare scopes within one
run. `--json` also writes the figures (temp file + rename).
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
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

import numpy as np  # noqa: E402

WORKER_THREAD = "XLAEigen"  # XLA's CPU runtime runs operations on threads named tf_XLAEigen/...
WRAPPERS = ("ThunkExecutor::",)  # events that enclose operations: not charged
POOL_WAIT = "SlinkyThreadPool::Await"  # a thread waiting for its share of a parallel operation


def op_scopes(hlo_text: str) -> dict:
    """Instruction name -> Keras scope (`op_name` metadata without the jit(...) prefix)."""
    scopes = {}
    for m in re.finditer(r'^\s*(?:ROOT )?%?([\w.\-]+) = .*?op_name="([^"]*)"', hlo_text, re.M):
        scope = re.sub(r"^jit\([^)]*\)/", "", m.group(2))
        scopes.setdefault(m.group(1), re.sub(r"\bblock_\d+_", "block_*_", scope))
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


def by_scope(ms: dict, count: dict, scopes: dict, depth: int) -> list[dict]:
    """Rows {scope, ms, ops} summed over the first `depth` components of each operation's scope."""
    rows = collections.defaultdict(lambda: {"ms": 0.0, "ops": 0.0})
    for name, t in ms.items():
        if name == POOL_WAIT:
            key = "(waiting for a parallel operation's other thread)"
        else:
            # operations XLA made itself (no metadata) are grouped by kind: dot.61 -> dot
            kind = re.sub(r"\.\d+$", "", name)
            key = "/".join(scopes.get(name, f"(made by XLA: {kind})").split("/")[:depth])
        rows[key]["ms"] += t
        rows[key]["ops"] += count[name]
    return sorted(({"scope": k, **v} for k, v in rows.items()), key=lambda r: -r["ms"])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="vit_tiny_patch16_224", help="registry name (random init)")
    p.add_argument("--score-only", action="store_true", help="the model without the heatmap output")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--calls", type=int, default=3, help="traced calls (after 3 untraced ones)")
    p.add_argument("--depth", type=int, default=2, help="scope components to group by")
    p.add_argument("--top", type=int, default=25, help="rows to print")
    p.add_argument("--json", help="also write the figures here")
    args = p.parse_args(argv)
    if args.calls < 1 or args.depth < 1:
        raise SystemExit("--calls and --depth must be at least 1")

    import jax
    import keras

    from kerasxai.models import build_model
    from kerasxai.runs import atomic_write_json

    if keras.backend.backend() != "jax":
        raise SystemExit("profile_model traces XLA: run with KERAS_BACKEND=jax")
    model = build_model(args.model, input_shape=(args.size, args.size, 3), heatmap=not args.score_only)
    x = np.random.default_rng(0).uniform(0, 255, (args.batch, args.size, args.size, 3)).astype("float32")
    trainable = [v.value for v in model.trainable_variables]
    frozen = [v.value for v in model.non_trainable_variables]
    fn = jax.jit(lambda tv, ntv, x: model.stateless_call(tv, ntv, x, training=False)[0])
    compiled = fn.lower(trainable, frozen, x).compile()
    for _ in range(3):
        jax.block_until_ready(compiled(trainable, frozen, x))
    with tempfile.TemporaryDirectory() as trace_dir:
        t0 = time.perf_counter()
        jax.profiler.start_trace(trace_dir)
        for _ in range(args.calls):
            jax.block_until_ready(compiled(trainable, frozen, x))
        jax.profiler.stop_trace()
        wall_ms = (time.perf_counter() - t0) * 1e3 / args.calls  # includes the tracing's own cost
        ms, count = op_times(trace_dir, args.calls)
    rows = by_scope(ms, count, op_scopes(compiled.as_text()), args.depth)
    total = sum(r["ms"] for r in rows)
    variant = "score-only" if args.score_only else "score+heatmap"
    print(f"{args.model} ({variant}), batch {args.batch} at {args.size}: op time {total:.1f} ms a call, "
          f"wall {wall_ms:.1f} ms a call while traced; {args.calls} traced calls\n")
    print("| scope | ms a call | operations a call | share of op time |")
    print("|---|---:|---:|---:|")
    for r in rows[: args.top]:
        print(f"| {r['scope']} | {r['ms']:.2f} | {r['ops']:.0f} | {100 * r['ms'] / total:.1f} % |")
    if args.json:
        record = {"model": args.model, "variant": variant, "batch": args.batch, "size": args.size,
                  "calls": args.calls, "op_ms": total, "wall_ms_traced": wall_ms, "scopes": rows}
        atomic_write_json(args.json, record)


if __name__ == "__main__":
    main()
