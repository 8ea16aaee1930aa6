"""Reproduce the study's experiment flow (thesis figure 3.1) end to end and write RESULTS.md.

    python tools/reproduce_study.py --dataset deeppcb --budget small
    python tools/reproduce_study.py --dataset deeppcb --budget small --report-only   # re-evaluate + re-render
    python tools/reproduce_study.py --dataset deeppcb --budget cpu    # models that learn: 2-3 days on 2 cores
    python tools/reproduce_study.py --dataset deeppcb --budget full --weights imagenet  # GPU-sized

For each of the seven models: a KerasTuner search (`python -m kerasxai.tune`), the best
trial's run as the trained model (each trial is a full training run, as the thesis picks
"the best hyperparameter search trial run"), then one evaluation of all best runs
(`python -m kerasxai.evaluate`: tables 3.4/3.5, full-vs-downscaled bars, fusion x discard
grids, baselines) and RESULTS.md rendered from the saved files only, with every trial's learning
curve (`<out>/curves/`) drawn from its history.

Budgets (BUDGETS): `small` shows the flow in under two hours (a few hundred tiles an epoch: every
model stays a base-rate classifier); `cpu` trains every model with the random-init recipe of
configs/deeppcb_locator.yaml on all training tiles each epoch, two trials per model, and
evaluates on all test tiles: about two to three days on 2 CPU cores with the TensorFlow backend
(its default here), nearly half of it the two EfficientNetV2-S; `full` is the thesis' 10 trials x
20 epochs.

Every step runs in its own process (clean memory, crash isolation) and is recorded in
`<out>/state.json` when it completes. Stop the study at any time (Ctrl-C, `kill PID`, a reboot)
and rerun the same command, as often as needed: finished steps are skipped (the evaluation too,
while the runs it scored are the best ones), finished trials are kept, and the interrupted trial
continues its run folder from its last completed epoch (kerasxai.tuning). Ctrl-C and `kill`
let the running trial stop at its next batch end. Progress and an estimate of the remaining time
are printed between steps. The searches run cheapest first (`run_order`), so that a study stopped
half-way holds as many trained models as its hours allow, CNNs and transformers both; DeiT-distilled
learns its distillation head from the best CNN of the study (hard-label distillation), so it runs
last. RESULTS.md lists the models in the study's order (MODELS).
"""

from __future__ import annotations

import argparse
import codecs
import csv
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from _checkout import REPO

from kerasxai.metrics import UNGATED_KEYS  # light: NumPy and SciPy only
from kerasxai.runtime import atomic_write_json, atomic_write_text, cores
from kerasxai.tables import markdown_table
# the study's own PCB numbers (thesis tables 3.2 and 3.4), for comparison
from kerasxai.thesis import THESIS_MAPS, THESIS_TRAINING

# (model name, config stem) in the thesis' order, which the tables keep.
MODELS = [
    ("mobilenetv3_large", "mobilenet"),
    ("mobilenetv3_large_d", "mobilenet_d"),
    ("efficientnetv2_s", "efficientnet"),
    ("efficientnetv2_s_d", "efficientnet_d"),
    ("vit_tiny_patch16_224", "vit_tiny"),
    ("deit_tiny_patch16_224", "deit_tiny"),
    ("deit_tiny_distilled_patch16_224", "deit_tiny_distilled"),
]
CNNS = {m for m, _ in MODELS[:4]}
# Relative wall time of one search at the small budget, measured on the 2-core machine
# (python tools/reproduce_study.py --dataset deeppcb --budget small, 2026-11-28): weights the ETA.
COST = {"mobilenetv3_large": 1.0, "mobilenetv3_large_d": 0.91, "efficientnetv2_s": 4.28,
        "efficientnetv2_s_d": 2.4, "vit_tiny_patch16_224": 0.76, "deit_tiny_patch16_224": 0.79,
        "deit_tiny_distilled_patch16_224": 1.41}

# Budgets: config overrides for every search ("overrides", or "recipe": see recipe_overrides),
# trials per search, evaluation overrides. "small" fits a 2-core CPU in under two hours (a subset
# of tiles per epoch, two trials); "full" is the study's 10 trials x 20 epochs (meant for a GPU).
#
# "cpu": the random-init recipe of configs/deeppcb_locator.yaml for every model, sized for 2 CPU
# cores. Its curve (BENCHMARKS.md, "Time to accuracy") reaches validation AUC 0.977 after its 11
# passes over the training tiles, still rising slowly: the passes decide, so every epoch is a
# full pass (train.steps_per_epoch=null, at either batch size) and a CNN gets the recipe's
# passes. A transformer gets twice as many: without a CNN's locality and translation
# equivariance a ViT / DeiT from random init learns from 12,600 tiles more slowly (DeiT trains
# 300 epochs on ImageNet where a ResNet takes about 90); twice is what a budget of days affords,
# and each trial's history.csv shows whether it was enough. Search space: the learning rate
# log-uniform around the recipe's (CNNs: half to twice it; transformers: a twentieth to a half
# of it, not measured here: AdamW on a transformer from scratch is run well below a CNN's Adam
# rate, and the thesis' [1e-5, 1e-4] is a fine-tuning range), the batch size the recipe's or
# twice it; two trials, the fewest that make a search. model.pooling (the recipe's log-sum-exp)
# goes to the CNNs only: a transformer's score has no CAM to pool (the key is not read for it).
# Validation, test summaries and the evaluation use every tile. The TensorFlow backend is the
# default here: it trains the CNNs faster than JAX on CPU (BENCHMARKS.md, "Training speed");
# KERAS_BACKEND still wins. Cost, estimated from the recipe's ~9.5 min a pass
# (mobilenetv3_large_d) and COST: about 33 h for the CNNs (EfficientNetV2-S 16 h), 22 h for the
# transformers, 1.5 h for the evaluation.
BUDGETS = {
    "small": {
        "trials": 2,
        "overrides": ["tune.epochs=3", "train.steps_per_epoch=12", "train.max_val_tiles=256",
                      "train.max_test_tiles=512", "train.balance=true", "train.reduce_lr.patience=1",
                      "train.bn_momentum=0.9"],  # MobileNetV3's 0.999 gives constant scores on short runs
        "eval": ["eval.max_tiles=400", "eval.batch_size=32"],
        "caveat": "these models start from random weights and see a few hundred tiles per epoch for a few epochs "
                  "(budget above), so their maps are those of weak classifiers",
    },
    "cpu": {
        "trials": 2,
        "recipe": "configs/deeppcb_locator.yaml",
        "passes": {"cnn": 1, "transformer": 2},  # multiples of the recipe's train.epochs
        "lr_space": {"cnn": (0.5, 2.0), "transformer": (0.05, 0.5)},  # multiples of its learning rate
        "batch_space": (1, 2),  # multiples of its batch size
        "eval": [],
        "backend": "tensorflow",
        # the evaluation in units of a mobilenetv3_large search, for the ETA: the small budget's
        # evaluation (564 s for 400 tiles) scaled to 3,600 tiles, against 2 x 11 passes of ~10 min
        "eval_cost": 0.4,
        "caveat": "these models start from random weights and train for the recipe's passes over every training "
                  "tile (budget above)",
    },
    "full": {"trials": 10, "overrides": ["tune.epochs=20"], "eval": []},
}

THESIS_COLS = ["pooled_f1", "pooled_precision", "pooled_jaccard", "pooled_accuracy", "pooled_recall", "pointing_game"]


class StudyError(RuntimeError):
    """A step failed; the message names it and where its log is."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (`kill PID`): the study stops like on Ctrl-C, the running step at its batch end."""


# ------------------------------------------------------------------------------ budgets


def family(model: str) -> str:
    return "cnn" if model in CNNS else "transformer"


def _flat(section: dict, prefix: str) -> dict:
    out = {}
    for k, v in section.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _value(v) -> str:
    """A YAML value as an override's right-hand side."""
    return "null" if v is None else json.dumps(v) if isinstance(v, (bool, list)) else str(v)


def recipe_overrides(recipe: Path, model: str, budget: dict) -> dict[str, object]:
    """``{key: value}`` overrides that train `model` with the recipe config's ``train:`` keys
    (its epochs scaled by the budget's passes for the model's family, every epoch a full pass,
    the learning rate the centre of the search space: the recipe's for CNNs), its ``model:`` keys
    but the name for CNNs, a search space around its learning rate and batch size, and every
    validation and test tile."""
    import yaml

    try:
        doc = yaml.safe_load(recipe.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise StudyError(f"recipe config {recipe} is unreadable ({exc}): the cpu budget reads its train: section")
    train = doc.get("train") or {}
    missing = [k for k in ("epochs", "learning_rate", "batch_size") if k not in train]
    if missing:
        raise StudyError(f"recipe config {recipe}: train.{missing[0]} is not set; the cpu budget needs "
                         "train.epochs, train.learning_rate and train.batch_size there")
    kind = family(model)
    epochs = int(budget["passes"][kind] * train["epochs"])
    lo, hi = (float(f"{f * float(train['learning_rate']):.6g}") for f in budget["lr_space"][kind])
    ov = _flat(train, "train.")
    ov.update({"train.epochs": epochs, "train.learning_rate": float(f"{(lo * hi) ** 0.5:.6g}"),
               "train.steps_per_epoch": None, "train.max_val_tiles": None, "train.max_test_tiles": None,
               "tune.epochs": epochs, "tune.lr_min": lo, "tune.lr_max": hi,
               "tune.batch_sizes": [int(f * train["batch_size"]) for f in budget["batch_space"]]})
    if kind == "cnn":
        ov.update(_flat({k: v for k, v in (doc.get("model") or {}).items() if k != "name"}, "model."))
    return ov


def needs_teacher(model: str) -> bool:
    """Whether `model` learns from the study's best CNN (the distilled DeiT's distillation head)."""
    return model.startswith("deit_tiny_distilled")


def run_order(models: list[tuple[str, str]], budget: str) -> list[tuple[str, str]]:
    """The searches in the order they run: cheapest first, those that need a teacher last (after
    every CNN)."""
    return sorted(models, key=lambda m: (needs_teacher(m[0]), cost(budget, m[0])))


def budget_overrides(name: str, model: str) -> list[str]:
    """The config overrides of budget `name` for the search of `model`."""
    budget = BUDGETS[name]
    if "recipe" not in budget:
        return list(budget["overrides"])
    return [f"{k}={_value(v)}" for k, v in recipe_overrides(REPO / budget["recipe"], model, budget).items()]


def backend(budget: str) -> str:
    """The Keras backend the steps run with: KERAS_BACKEND, else the budget's, else JAX."""
    return os.environ.get("KERAS_BACKEND") or BUDGETS[budget].get("backend", "jax")


def cost(budget: str, model: str) -> float:
    """Relative wall time of `model`'s search at `budget` (COST scaled by the passes per trial)."""
    return COST[model] * BUDGETS[budget].get("passes", {}).get(family(model), 1)


# ------------------------------------------------------------------------------ state


def load_state(out: Path) -> dict:
    path = out / "state.json"
    return json.loads(path.read_text()) if path.is_file() else {"steps": {}}


def save_state(out: Path, state: dict) -> None:
    atomic_write_json(out / "state.json", state)


def eta_seconds(state: dict, remaining: list[str], budget: str = "small") -> float | None:
    """Remaining time from the seconds per cost unit of the finished search steps."""
    done = [(k, v["seconds"]) for k, v in state["steps"].items() if k.startswith("tune:")]
    if not done:
        return None
    per_unit = sum(s for _, s in done) / sum(cost(budget, k.split(":", 1)[1]) for k, _ in done)
    evaluation = BUDGETS[budget].get("eval_cost", 0.15 * sum(COST.values()))
    total = 0.0
    for step in remaining:
        kind, _, model = step.partition(":")
        total += per_unit * (cost(budget, model) if kind == "tune" else evaluation)
    return total


def fmt_duration(s: float | None) -> str:
    if s is None:
        return "unknown (after the first search)"
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


# ------------------------------------------------------------------------------ steps


def _stop_with_parent() -> None:
    """In the step's process (Linux): SIGINT when the study's process dies, so even a `kill -9`
    of the study stops the step at a batch end instead of leaving it running alone."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGINT, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _on_sigterm(signum, frame):
    raise Terminated


def run_logged(cmd: list[str], log: Path, step: str, env: dict | None = None) -> None:
    """Run a step's command, its output going to the log (so it outlives this process) and echoed
    here; raise StudyError on failure. The step runs in its own process group and gets one SIGINT
    for each interrupt of the study (Ctrl-C, `kill -INT`, `kill`): the first stops it at its next
    batch end, a second at once; the study waits for it before the interrupt goes on."""
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"$ {shlex.join(cmd)}", flush=True)
    env = dict(os.environ if env is None else env, PYTHONUNBUFFERED="1")
    with open(log, "a") as fh:
        fh.write(f"\n$ {shlex.join(cmd)}\n")
        fh.flush()
        start = fh.tell()
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                preexec_fn=_stop_with_parent if sys.platform == "linux" else None)
    decode = codecs.getincrementaldecoder("utf-8")(errors="replace").decode
    with open(log, "rb") as tail:
        tail.seek(start)

        def echo():
            text = decode(tail.read())
            if text:
                sys.stdout.write(text)
                sys.stdout.flush()

        try:
            while proc.poll() is None:
                echo()
                time.sleep(0.5)
        except KeyboardInterrupt:
            while True:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait()
                    break
                except KeyboardInterrupt:
                    continue
            echo()
            raise
        echo()
    if proc.returncode != 0:
        raise StudyError(f"step {step} failed (exit {proc.returncode}); its log: {log}. Fix the cause and rerun "
                         "the same command to continue.")


def config_path(dataset: str, stem: str) -> Path:
    path = REPO / "configs" / f"{dataset}_{stem}.yaml"
    if not path.is_file():
        raise StudyError(f"config {path} not found: the study needs configs/{dataset}_<model>.yaml for all seven models")
    return path


def search_overrides(args, out: Path, model: str, state: dict) -> list[str]:
    budget = BUDGETS[args.budget]
    ov = [f"tune.dir={out / 'tuning'}", f"tune.trials={budget['trials']}", *budget_overrides(args.budget, model)]
    if args.weights:
        ov.append(f"model.weights={args.weights}")
    if needs_teacher(model):
        teacher = state.get("teacher_run")
        if teacher:
            ov.append(f"train.teacher_run={teacher}")
    return ov + list(args.overrides)


def trial_rows(out: Path, cfg_name: str) -> list[dict]:
    """The rows of a search's trials.csv (one per trial; "best" is "True" on the best)."""
    with open(out / "tuning" / cfg_name / "trials.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def trial_run(out: Path, cfg_name: str, trial: str) -> Path | None:
    """The run folder of a search's trial (its latest attempt), None if it has none."""
    runs = sorted((out / "tuning" / cfg_name / "runs").glob(f"{cfg_name}-trial_{trial}-*"))
    return runs[-1] if runs else None


def best_trial_run(out: Path, cfg_name: str) -> tuple[dict, Path]:
    """The best row of a finished search and that trial's run folder."""
    folder = out / "tuning" / cfg_name
    best = [r for r in trial_rows(out, cfg_name) if r["best"] == "True"]
    if not best:
        raise StudyError(f"no completed trial in {folder / 'trials.csv'}: see {out / 'logs'}")
    run = trial_run(out, cfg_name, best[0]["trial"])
    if run is None or not (run / "best.keras").is_file():
        raise StudyError(f"the best trial's run folder is missing under {folder / 'runs'}")
    return best[0], run


def pick_teacher(state: dict) -> str | None:
    """The CNN run with the best test accuracy so far (the distilled DeiT's teacher)."""
    best = None
    for model in CNNS:
        info = state["steps"].get(f"tune:{model}")
        if info and (best is None or (info["test_accuracy"] or 0) > (best["test_accuracy"] or 0)):
            best = info
    return best["run"] if best else None


def run_search(args, out: Path, state: dict, model: str, stem: str) -> None:
    from kerasxai.config import load_config

    cfg_file = config_path(args.dataset, stem)
    overrides = search_overrides(args, out, model, state)
    cfg = load_config(cfg_file, overrides)  # validates before anything runs
    cmd = [sys.executable, "-m", "kerasxai.tune", "--config", str(cfg_file), "--quiet", *overrides]
    step = f"tune:{model}"
    t0 = time.time()
    try:
        run_logged(cmd, out / "logs" / f"tune_{model}.log", step, step_env(args))
    except KeyboardInterrupt:  # the time spent counts when the search continues
        partial = state.setdefault("partial_seconds", {})
        partial[step] = round(partial.get(step, 0.0) + time.time() - t0, 1)
        save_state(out, state)
        raise
    best, run = best_trial_run(out, cfg.name)
    summary = json.loads((run / "summary.json").read_text())
    earlier = state.get("partial_seconds", {}).pop(step, 0.0)
    state["steps"][step] = {
        "seconds": round(earlier + time.time() - t0, 1), "config": str(cfg_file.relative_to(REPO)),
        "cfg_name": cfg.name,
        "run": _rel(run), "learning_rate": float(best["learning_rate"]), "batch_size": int(best["batch_size"]),
        "val_loss": summary.get("val_loss"), "val_accuracy": summary.get("val_accuracy"),
        "test_loss": summary.get("test_loss"), "test_accuracy": summary.get("test_accuracy"),
        "seconds_per_epoch": summary.get("seconds_per_epoch"), "epochs": summary.get("epochs"),
        "overrides": budget_overrides(args.budget, model), "backend": backend(args.budget),
    }
    if model in CNNS:
        state["teacher_run"] = pick_teacher(state)


def step_env(args) -> dict:
    return dict(os.environ, KERAS_BACKEND=backend(args.budget))


def best_runs(state: dict) -> list[str]:
    return [state["steps"][f"tune:{m}"]["run"] for m, _ in MODELS if f"tune:{m}" in state["steps"]]


def evaluation_done(out: Path, state: dict) -> bool:
    """Whether the saved evaluation scored exactly the best runs the state holds now."""
    done = state["steps"].get("evaluate")
    return bool(done) and done.get("runs") == best_runs(state) and (out / "report" / "results.json").is_file()


def run_evaluation(args, out: Path, state: dict) -> None:
    runs = best_runs(state)
    report = out / "report"
    cmd = [sys.executable, "-m", "kerasxai.evaluate", "--runs", *runs, "--out", str(report), "--no-progress",
           *BUDGETS[args.budget]["eval"]]
    t0 = time.time()
    run_logged(cmd, out / "logs" / "evaluate.log", "evaluate", step_env(args))
    state["steps"]["evaluate"] = {"seconds": round(time.time() - t0, 1), "report": _rel(report), "runs": runs}


# ------------------------------------------------------------------------------ RESULTS.md


def _f(v, digits=4) -> str:
    if v is None or v == "":
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _table(headers: list[str], rows: list[list]) -> str:
    """A RESULTS.md table: numbers to 4 decimals, missing values as "-"."""
    return markdown_table(headers, [[c if isinstance(c, str) else _f(c) for c in r] for r in rows])


def _rel(path: str | Path) -> str:
    """A path as the state file and RESULTS.md keep it: relative to the repository when inside it
    (the committed study folder stays valid in any clone; steps run with the repository as cwd)."""
    p = Path(path)
    p = (p if p.is_absolute() else REPO / p).resolve()
    try:
        return str(p.relative_to(REPO))
    except ValueError:
        return str(p)


def _row_model(label: str) -> str:
    return label.split(" (")[0]


def _model_of(label: str) -> str:
    """The model name of a table row ("vit_tiny_patch16_224_fmax (model)" -> "vit_tiny_patch16_224")."""
    label = _row_model(label)
    for f in ("min", "mean", "max"):
        if label.endswith(f"_f{f}") and label not in CNNS:
            return label[: -len(f) - 2]
    return label


def _verdict(wins: int, total: int) -> str:
    return "holds" if wins == total else ("holds in part" if wins else "does not hold")


def discussion(metrics: dict[str, dict], state: dict) -> list[str]:
    """Point-by-point check of the study's conclusions, stated from the numbers only: once with
    the thesis protocol (score-gated) and once on the ungated maps (the map apart from the
    classifier; PxAP_ungated is the map's threshold-free quality)."""
    pts = []
    ug = lambda m, k: m.get(f"{k}_ungated")  # noqa: E731
    # 1. Downscaled CNNs localize more precisely.
    pairs = [(m, f"{m}_d") for m in ("mobilenetv3_large", "efficientnetv2_s") if m in metrics and f"{m}_d" in metrics]
    if pairs:
        wins = wins_u = 0
        parts = []
        for full, down in pairs:
            a, b = metrics[full], metrics[down]
            better = [k for k in THESIS_COLS if (b.get(k) or 0) > (a.get(k) or 0)]
            wins += b["pooled_precision"] > a["pooled_precision"]
            wins_u += (ug(b, "pxap") or 0) > (ug(a, "pxap") or 0)
            parts.append(f"{down} vs {full}: precision {_f(b['pooled_precision'])} vs {_f(a['pooled_precision'])}, "
                         f"higher on {len(better)} of 6 thesis metrics; ungated PxAP {_f(ug(b, 'pxap'))} vs "
                         f"{_f(ug(a, 'pxap'))}, ungated pointing game {_f(ug(b, 'pointing_game'))} vs {_f(ug(a, 'pointing_game'))}")
        pts.append(f"**Downscaled CNNs localize more precisely** — thesis protocol: {_verdict(wins, len(pairs))}; "
                   f"ungated maps: {_verdict(wins_u, len(pairs))} ({'; '.join(parts)}).")
    # 2. Max fusion gives the best F1 for ViTs.
    fusion_rows = {}
    for label, m in metrics.items():
        model = _model_of(label)
        if model != label:  # a transformer row: <model>_f<fusion>
            fusion_rows.setdefault(model, {})[label[len(model) + 2:]] = m
    if fusion_rows:
        parts, wins, wins_u, decided, decided_u = [], 0, 0, 0, 0

        def best_of(by, key):  # None when every fusion ties (e.g. all maps gated off: F1 0)
            values = {f: key(by[f]) or 0 for f in by}
            top = max(values, key=values.get)
            return None if len(set(values.values())) == 1 else top

        for model, by in fusion_rows.items():
            best = best_of(by, lambda m: m.get("pooled_f1"))
            best_u = best_of(by, lambda m: ug(m, "pooled_f1"))
            decided, decided_u = decided + (best is not None), decided_u + (best_u is not None)
            wins, wins_u = wins + (best == "max"), wins_u + (best_u == "max")
            parts.append(f"{model}: " + (f"best F1 with {best} fusion" if best else "F1 tied across fusions") + " ("
                         + ", ".join(f"{f} {_f(by[f].get('pooled_f1'))}" for f in by) + "), ungated "
                         + (f"best with {best_u}" if best_u else "tied") + " ("
                         + ", ".join(f"{f} {_f(ug(by[f], 'pooled_f1'))}" for f in by) + ")")
        gated = _verdict(wins, decided) + (f" for the {decided} of {len(fusion_rows)} models with a winner" if decided < len(fusion_rows) else "")
        pts.append(f"**Max fusion gives the best F1 for transformers** — thesis protocol: {gated if decided else 'no winner'}; "
                   f"ungated maps: {_verdict(wins_u, decided_u) if decided_u else 'no winner'} ({'; '.join(parts)}).")
    # 3. CNN CAM beats ViT rollout.
    cnn = {k: v for k, v in metrics.items() if _row_model(k) in CNNS}
    vit = {k: v for k, v in metrics.items() if k not in cnn}
    if cnn and vit:
        bc = max(cnn, key=lambda k: cnn[k].get("pooled_f1") or 0)
        bv = max(vit, key=lambda k: vit[k].get("pooled_f1") or 0)
        better = [k for k in THESIS_COLS if (cnn[bc].get(k) or 0) > (vit[bv].get(k) or 0)]
        verdict = "holds" if len(better) >= 4 else ("mixed" if len(better) >= 2 else "does not hold")
        uc = max(cnn, key=lambda k: ug(cnn[k], "pxap") or 0)
        uv = max(vit, key=lambda k: ug(vit[k], "pxap") or 0)
        verdict_u = "holds" if (ug(cnn[uc], "pxap") or 0) > (ug(vit[uv], "pxap") or 0) else "does not hold"
        pts.append(f"**CNN CAM beats ViT rollout** — thesis protocol: {verdict}: the best CNN by F1 ({bc}, F1 "
                   f"{_f(cnn[bc].get('pooled_f1'))}) is above the best transformer ({bv}, F1 {_f(vit[bv].get('pooled_f1'))}) "
                   f"on {len(better)} of the 6 thesis metrics; ungated maps: {verdict_u}: best ungated PxAP {uc} "
                   f"{_f(ug(cnn[uc], 'pxap'))} vs {uv} {_f(ug(vit[uv], 'pxap'))}.")
    # 4. What the threshold-free metrics add.
    if metrics:
        by_f1 = sorted(metrics, key=lambda k: -(metrics[k].get("pooled_f1") or 0))
        by_ap = sorted(metrics, key=lambda k: -(metrics[k].get("pxap") or 0))
        same = by_f1[0] == by_ap[0]
        pts.append(
            "**Threshold-free metrics** — PxAP and pixel AUROC score the map at every threshold, so they do not depend "
            "on the fixed 127/255 cut. Here the top model by PxAP is "
            f"{by_ap[0]} ({_f(metrics[by_ap[0]].get('pxap'))}) and by pooled F1 {by_f1[0]} "
            f"({_f(metrics[by_f1[0]].get('pooled_f1'))}): the two rankings "
            + ("agree at the top." if same else "disagree at the top: the fixed cut decides part of the thesis-style ranking.")
        )
    return pts


def ungated_discussion(base: list[dict]) -> list[str]:
    """Do the single-pass maps beat the map that knows nothing, once the score gate is taken away?"""
    by_model: dict[str, dict[str, dict]] = {}
    for b in base:
        by_model.setdefault(b["model"], {})[b["method"]] = b
    parts, wins = [], 0
    for model, methods in by_model.items():
        own = next((m for k, m in methods.items() if "single pass" in k), None)
        uniform = methods.get("Uniform")
        if not own or not uniform or own.get("pxap_ungated") is None:
            continue
        a, u = own["pxap_ungated"], uniform["pxap_ungated"]
        wins += a > u
        parts.append(f"{model} {_f(a)} vs {_f(u)}")
    if not parts:
        return []
    verdict = "all" if wins == len(parts) else f"{wins} of {len(parts)}"
    tail = ("where it does, the map carries localization signal that the score gate hides" if wins
            else "at this budget no map carries localization signal beyond the defect pixel share")
    return [f"**Ungated, do the maps know where the defects are?** — the single-pass map beats the uniform map's PxAP "
            f"(the defect pixel share) for {verdict} models ({'; '.join(parts)}): {tail}."]


def used_overrides(args, state: dict) -> str:
    """The search overrides as each search recorded them (the budget's for older states), one
    list when all models shared it, else one per model."""
    by_model = {m: state["steps"][f"tune:{m}"].get("overrides") or budget_overrides(args.budget, m)
                for m, _ in MODELS if f"tune:{m}" in state["steps"]}
    lists = {tuple(v) for v in by_model.values()}
    if len(lists) <= 1:
        return f"`{' '.join(next(iter(lists), ()))}`"
    groups: dict[tuple, list[str]] = {}
    for m, ov in by_model.items():
        groups.setdefault(tuple(ov), []).append(m)
    return "; ".join(f"{', '.join(ms)}: `{' '.join(ov)}`" for ov, ms in groups.items())


def used_backend(args, state: dict) -> str:
    names = sorted({v["backend"] for v in state["steps"].values() if v.get("backend")})
    return ", ".join(names) or backend(args.budget)


def search_space_rows(out: Path, state: dict) -> list[list]:
    """One row per finished search: the space its search.json records."""
    rows = []
    for model, _ in MODELS:
        step = state["steps"].get(f"tune:{model}")
        path = out / "tuning" / step["cfg_name"] / "search.json" if step else None
        if path is None or not path.is_file():
            continue
        space = json.loads(path.read_text())
        rows.append([model, f"{space['tune.lr_min']:.3g} to {space['tune.lr_max']:.3g}",
                     ", ".join(map(str, space["tune.batch_sizes"])), str(space["tune.epochs"])])
    return rows


FAMILY_NAMES = {"cnn": "CNNs", "transformer": "transformers"}


def trial_curves(out: Path, state: dict) -> list[tuple[str, dict, list[dict]]]:
    """``(model, trials.csv row, curve)`` for every trial with a history of every finished search,
    the best trial of each search first; the best trial's curve is labelled with the model, the
    others "<model>, trial N"."""
    from kerasxai.curves import run_curve
    from kerasxai.runs import HISTORY

    found = []
    for model, _ in MODELS:
        step = state["steps"].get(f"tune:{model}")
        if not step or not (out / "tuning" / step["cfg_name"] / "trials.csv").is_file():
            continue
        for row in sorted(trial_rows(out, step["cfg_name"]), key=lambda r: r["best"] != "True"):
            run = trial_run(out, step["cfg_name"], row["trial"])
            if run is not None and (run / HISTORY).is_file():
                label = model if row["best"] == "True" else f"{model}, trial {row['trial']}"
                found.append((model, row, run_curve(label, run)))
    return found


def curve_figure(out: Path, kind: str) -> Path:
    return out / "curves" / f"{kind}.png"


def curves_by_family(curves: list[tuple[str, dict, list[dict]]]) -> dict[str, list[tuple[dict, list[dict]]]]:
    """``{family: [(trials.csv row, curve)]}`` for the families that have curves, in FAMILY_NAMES' order:
    one figure each."""
    groups = {kind: [(row, curve) for model, row, curve in curves if family(model) == kind] for kind in FAMILY_NAMES}
    return {kind: mine for kind, mine in groups.items() if mine}


def write_curve_figures(out: Path, curves: list[tuple[str, dict, list[dict]]]) -> None:
    """One figure per model family: every trial's validation curves against epochs, the best
    trial of each search solid, the others dashed."""
    from kerasxai.curves import plot_curves

    for kind, mine in curves_by_family(curves).items():
        path = curve_figure(out, kind)
        path.parent.mkdir(parents=True, exist_ok=True)
        plot_curves([r for _, curve in mine for r in curve], path,
                    f"Learning curves of the {FAMILY_NAMES[kind]} (validation split)",
                    x="epoch", faint=frozenset(curve[0]["recipe"] for row, curve in mine if row["best"] != "True"))


def curve_rows(curves: list[tuple[str, dict, list[dict]]]) -> list[list]:
    """What each trial reached: its hyperparameters, validation AUC after the first and the last
    epoch, its best and when, the gain over the last quarter of the epochs (still rising or
    not), the last validation accuracy and the test accuracy."""
    rows = []
    for model, trial, curve in curves:
        auc = [r["val_auc"] for r in curve]
        known = [i for i, v in enumerate(auc) if v is not None]
        best = max(known, key=lambda i: auc[i]) if known else None
        back = len(curve) - 1 - max(1, len(curve) // 4)
        gain = auc[-1] - auc[back] if back >= 0 and auc[-1] is not None and auc[back] is not None else None
        acc = lambda v: None if v in (None, "") else 100 * float(v)  # noqa: E731
        rows.append([model, trial["trial"], f"{float(trial['learning_rate']):.2g}", trial["batch_size"], str(len(curve)),
                     _f(auc[0]), _f(auc[-1]), f"{_f(auc[best])} ({best + 1})" if best is not None else "-",
                     "-" if gain is None else f"{gain:+.4f}", _f(acc(curve[-1]["val_accuracy"]), 2),
                     _f(acc(trial["test_accuracy"]), 2), "yes" if trial["best"] == "True" else ""])
    return rows


def render_results(args, out: Path, state: dict, curves: list | None = None) -> str:
    """RESULTS.md's text from the saved files; `curves`: `trial_curves(out, state)` when the
    caller has read them already."""
    report = out / "report"
    results = json.loads((report / "results.json").read_text())
    metrics = {_row_model(r["model"]): r for r in results["metrics"]}
    ranking = {_row_model(r["model"]): r for r in results["ranking"]}
    budget = BUDGETS[args.budget]
    wall = sum(v.get("seconds", 0) for v in state["steps"].values())
    cmd = f"python tools/reproduce_study.py --dataset {args.dataset} --budget {args.budget}"
    step_times = ", ".join(f"{k} {fmt_duration(v.get('seconds'))}" for k, v in state["steps"].items())
    L = [
        "# Results: the study reproduced on DeepPCB",
        "",
        f"Generated by `{cmd}` from the saved runs under `{_rel(out)}/` (rerun with `--report-only` to re-evaluate "
        "the saved runs and regenerate every table; `--render-only` rewrites this file from the saved evaluation).",
        "",
        f"- Data: DeepPCB train/val part (1,000 pairs, tested images and defect-free templates), 224 px tiles with 2 px "
        f"overlap, split by source pair 0.7 / 0.1 / 0.2 (seed 42). Masks are the filled annotation boxes.",
        f"- Budget `{args.budget}`: {budget['trials']} KerasTuner Bayesian trials per model, overrides "
        f"{used_overrides(args, state)}; evaluation `{' '.join(budget['eval']) or 'all test tiles'}`.",
        f"- Weights: {args.weights or 'random initialisation (no pretrained weights offline)'}; backend "
        f"{used_backend(args, state)}; machine: {cores()} CPU cores, {platform.machine()}.",
        f"- Wall time of all steps: {fmt_duration(wall)} ({step_times}).",
        "",
        "The study (thesis tables 3.2 / 3.4) fine-tuned ImageNet weights for 10 trials x 20 epochs on its own PCB "
        "dataset; the numbers beside ours are its PCB numbers, a different dataset and budget: compare trends, not values.",
        "",
        "## Training (cf. table 3.2)",
        "",
    ]
    rows = []
    for model, _ in MODELS:
        s = state["steps"].get(f"tune:{model}")
        if not s:
            continue
        t = THESIS_TRAINING.get(model)
        acc = lambda v: None if v is None else 100 * v  # noqa: E731
        rows.append([model, f"{s['learning_rate']:.2g}", str(s["batch_size"]), s["val_loss"], _f(acc(s["val_accuracy"]), 2),
                     _f(acc(s["test_accuracy"]), 2), _f(s.get("seconds_per_epoch"), 1),
                     f"[run]({_rel(s['run'])})", (f"{t[0]:g} / {t[1]} / {t[4]:.2f}" if t else "-")])
    L.append(_table(["Model", "Learning rate", "Batch size", "Val loss", "Val accuracy, %", "Test accuracy, %",
                     "s / epoch", "Run", "Thesis PCB: lr / batch / test acc %"], rows))
    space = search_space_rows(out, state)
    if space:
        L += ["", "Search space per model (each search's `search.json`): learning rate log-uniform between the "
              "bounds, batch size one of those listed.", "",
              _table(["Model", "Learning rate", "Batch sizes", "Epochs per trial"], space)]
    curves = trial_curves(out, state) if curves is None else curves
    if curves:
        L += ["", "## Learning curves", "",
              "Every trial of every search after each epoch (each run's `history.csv`; at the cpu budget an epoch is "
              "a pass over all training tiles): validation AUC and accuracy, the best trial of each search solid and "
              "the others dashed. The gain over the last quarter of the epochs tells a curve still rising from one "
              "that has levelled off.", ""]
        L += [f"![Learning curves of the {FAMILY_NAMES[kind]}]({_rel(curve_figure(out, kind))})\n"
              for kind in curves_by_family(curves)]
        L.append(_table(["Model", "Trial", "Learning rate", "Batch size", "Epochs", "Val AUC, epoch 1", "Val AUC, last",
                         "Best val AUC (epoch)", "Gain, last quarter", "Val accuracy, last, %", "Test accuracy, %",
                         "Best trial"], curve_rows(curves)))
    L += ["", "Search tables and parallel-coordinates figures per model: "
          + ", ".join(f"[{m}]({_rel(out / 'tuning' / state['steps'][f'tune:{m}']['cfg_name'] / 'trials.md')})"
                      for m, _ in MODELS if f"tune:{m}" in state["steps"]) + ".", ""]

    L += ["## Explainability metrics on the test tiles (cf. table 3.4)", "",
          f"Pooled over all valid pixels of {results['context'].get('tiles', '?')} test tiles; transformers once per head "
          "fusion at the model's discard ratio. Threshold-free metrics (PxAP, pixel AUROC, relevance mass) go beyond the thesis.", ""]
    cols = THESIS_COLS + ["classification_accuracy", "pxap", "pixel_auroc", "relevance_mass"]
    heads = ["Model", "F1", "Precision", "Jaccard", "Accuracy", "Recall", "Pointing game", "Class. acc.", "PxAP", "Pixel AUROC",
             "Relevance mass", "Thesis PCB F1 / pointing"]
    rows = []
    for label, m in metrics.items():
        t = THESIS_MAPS.get(label)
        rows.append([label] + [m.get(c) for c in cols] + [f"{t[0]:.4f} / {t[5]:.4f}" if t else "-"])
    L += [_table(heads, rows), ""]
    keys = list(UNGATED_KEYS)  # also the baselines table below
    L += ["The same maps without the score gate (every tile's map scored as if its score had passed 0.5): the "
          "map's own quality, apart from the classifier that gates it.", "",
          _table(["Model", "F1, ungated", "Pointing game, ungated", "PxAP, ungated", "Pixel AUROC, ungated",
                  "Relevance mass, ungated"], [[label] + [m.get(f"{k}_ungated") for k in keys] for label, m in metrics.items()]),
          ""]

    L += ["## Ranking (cf. table 3.5)", "", "Ranks inside the CNN and transformer groups over the six thesis metrics "
          "(lower is better), and over all nine map metrics.", ""]
    rank = lambda v: "-" if v is None else (f"{v:g}" if float(v).is_integer() else f"{v:.2f}")  # noqa: E731
    rows = [[label] + [rank(r.get(c)) for c in THESIS_COLS] + [rank(r.get("average_rank")), rank(r.get("average_rank_all"))]
            for label, r in ranking.items()]
    L += [_table(["Model", "F1", "Precision", "Jaccard", "Accuracy", "Recall", "Pointing game", "Average rank",
                  "Average rank (9 metrics)"], rows), ""]

    base = results.get("baselines", [])
    if base:
        L += ["## Single-pass maps against post-hoc and trivial baselines", "",
              "Same tiles, same score gate; Grad-CAM / Grad-CAM++ on the CAM layer, gradient-weighted rollout for "
              "transformers, and two maps that know nothing (uniform, centre Gaussian). The *ungated* columns score "
              "every tile's map as if its score had passed the gate: the map's own quality, apart from the classifier "
              "(with a weak classifier the gate turns most maps off and the gated columns read near 0).", ""]
        rows = [[b["model"], b["method"]] + [b.get(k) for k in keys] + [b.get(f"{k}_ungated") for k in keys] for b in base]
        L += [_table(["Model", "Map", "F1", "Pointing game", "PxAP", "Pixel AUROC", "Relevance mass", "F1, ungated",
                      "Pointing, ungated", "PxAP, ungated", "AUROC, ungated", "Mass, ungated"], rows), ""]

    figs = sorted((report / "figures").glob("*.png"))
    if figs:
        L += ["## Figures", ""]
        names = {"overlays": "Maps on the same defective test tiles (cf. figure 3.4)",
                 "full_vs_downscaled": "Full vs downscaled CNNs (cf. figure 3.6)"}
        for f in figs:
            cap = names.get(f.stem, f"Fusion x discard ratio, {f.stem.removeprefix('sweep_')} (cf. figure 3.10)")
            L += [f"**{cap}**", "", f"![{cap}]({_rel(f)})", ""]
        L += [f"All tables and figures together: [{_rel(report / 'report.html')}]({_rel(report / 'report.html')}).", ""]

    L += ["## Discussion", ""]
    L += [f"{i}. {p}" for i, p in enumerate(discussion(metrics, state) + ungated_discussion(base), 1)]
    models = {_model_of(k) for k in metrics}
    # every map gated off (or nearly): no predicted pixel and no pointing hit under the thesis protocol
    off = sorted({_model_of(k) for k, m in metrics.items()
                  if not m.get("pooled_precision") and not m.get("pooled_recall") and not m.get("pointing_game")})
    caveat = budget.get("caveat", BUDGETS["small"]["caveat"])
    L += ["", f"Caveat, measured rather than assumed: {caveat}; the study's "
          "models were ImageNet-pretrained and trained for 20 epochs. "
          + (f"Here {len(off)} of {len(models)} models ({', '.join(off)}) scored every evaluated tile at or below the 0.5 gate, so "
             "the thesis-protocol columns are zero for them and only the ungated columns compare their maps. " if off else "")
          + "Rerun with `--budget full --weights imagenet` on a GPU to compare like with like.", ""]
    return "\n".join(L)


def write_results(args, out: Path, state: dict) -> Path:
    curves = trial_curves(out, state)
    write_curve_figures(out, curves)
    text = render_results(args, out, state, curves)
    path = REPO / "RESULTS.md" if args.results is None else Path(args.results)
    atomic_write_text(path, text)
    return path


# ------------------------------------------------------------------------------ main


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="deeppcb", help="config prefix: configs/<dataset>_<model>.yaml")
    p.add_argument("--budget", choices=sorted(BUDGETS), default="small")
    p.add_argument("--out", default=None, help="study folder (default: study/<dataset>-<budget>)")
    p.add_argument("--models", default=None, help="comma-separated subset of the seven model names")
    p.add_argument("--weights", default=None, help="imagenet or a .weights.h5 path (default: random init)")
    p.add_argument("--results", default=None, help="where to write RESULTS.md (default: the repository's)")
    p.add_argument("--report-only", action="store_true", help="re-evaluate the saved runs and rewrite RESULTS.md")
    p.add_argument("--render-only", action="store_true", help="rewrite RESULTS.md from the saved evaluation")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="extra config overrides for every search")
    args = p.parse_args(argv)

    out = Path(args.out or REPO / "study" / f"{args.dataset}-{args.budget}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    state = load_state(out)
    state.setdefault("started", time.strftime("%Y-%m-%d %H:%M:%S"))
    models = run_order(MODELS if not args.models else [(m, s) for m, s in MODELS if m in args.models.split(",")],
                       args.budget)
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        if not (args.report_only or args.render_only):
            todo = [f"tune:{m}" for m, _ in models if f"tune:{m}" not in state["steps"]] + ["evaluate"]
            t_start = time.time()
            for i, (model, stem) in enumerate(models):
                step = f"tune:{model}"
                if step in state["steps"]:
                    print(f"[{i + 1}/{len(models)}] {model}: done earlier, skipped")
                    continue
                print(f"\n[{i + 1}/{len(models)}] {model}: search ({fmt_duration(time.time() - t_start)} elapsed, "
                      f"about {fmt_duration(eta_seconds(state, todo, args.budget))} left)", flush=True)
                run_search(args, out, state, model, stem)
                todo.remove(step)
                save_state(out, state)
        if args.render_only:
            pass
        elif not args.report_only and evaluation_done(out, state):
            print("\nevaluation: done earlier for these runs, skipped")
        else:
            print(f"\nevaluation of {len(best_runs(state))} best runs ...", flush=True)
            state["steps"].pop("evaluate", None)
            run_evaluation(args, out, state)
            save_state(out, state)
        path = write_results(args, out, state)
    except StudyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted: finished steps and trials are kept; run the same command again to continue "
              "(an interrupted trial continues from its last completed epoch)", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(f"\nwritten: {path} (report: {out / 'report' / 'report.html'})")
    return 0


if __name__ == "__main__":
    from kerasxai.cli import run

    sys.exit(run(main))
