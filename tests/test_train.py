"""Training: artifacts of a run, resume after an interruption, config errors, distillation
targets, data-parallel training on two (virtual) CPU devices."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasxai import runs, training
from kerasxai.config import load_config
from kerasxai.train import main as train_main

REPO = Path(__file__).resolve().parents[1]
MODEL = "vit_tiny_patch16_224"  # at 32 px: 4 patches, the fastest registry model to compile on CPU


def synthetic_overrides(tmp_path, **extra):
    """A tiny synthetic dataset: 16 images of 64x64 -> 4 tiles of 32 px each."""
    items = {
        "name": "syn",
        "data.reader": "synthetic",
        "data.options.count": 16,
        "data.options.height": 64,
        "data.options.width": 64,
        "data.options.seed": 0,
        "data.tile.size": 32,
        "data.tile.overlap": 0,
        "data.cache_dir": str(tmp_path / "cache"),
        "model.name": MODEL,
        "train.epochs": 1,
        "train.batch_size": 8,
        "train.learning_rate": 3e-4,
        "train.steps_per_epoch": 2,
        "train.runs_dir": str(tmp_path / "runs"),
    }
    items.update(extra)
    return [f"{k}={v}" for k, v in items.items()]


def history_epochs(run_dir):
    with open(Path(run_dir) / runs.HISTORY, newline="") as f:
        return [int(r["epoch"]) for r in csv.DictReader(f)]


class StopAfter(keras.callbacks.Callback):
    """Simulates a crash right after epoch `epoch` (0-based) was checkpointed."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise RuntimeError("simulated crash")


# ---------------------------------------------------------------- fast checks


@pytest.mark.parametrize(
    "override, key",
    [
        ("train.monitor=val_auc", "train.monitor"),
        ("train.optimizer=rmsprop", "train.optimizer"),
        ("model.name=resnet50", "model.name"),
        ("train.data_parallel=maybe", "train.data_parallel"),
        ("train.teacher_run=runs/nowhere", "train.teacher_run"),
        ("train.epochs=zero", "train.epochs"),
        ("train.bn_momentum=1.5", "train.bn_momentum"),
    ],
)
def test_bad_config_value_fails_before_training(tmp_path, capsys, override, key):
    code = train_main(["--config", str(REPO / "configs" / "demo.yaml"), *synthetic_overrides(tmp_path), override])
    err = capsys.readouterr().err
    assert code == 2
    assert key in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "cache").exists()  # nothing started


def test_teacher_run_takes_a_shipped_model_by_name():
    from kerasxai.config import ConfigError
    from kerasxai.training.checks import check_config

    cfg = load_config(None, ["data.reader=synthetic", "model.name=deit_tiny_distilled_patch16_224",
                             "train.teacher_run=deeppcb-mobilenetv3_large_d"])
    check_config(cfg)  # the shipped locator is a finished run folder
    cfg.train.teacher_run = "deeppcb-no-such-model"
    with pytest.raises(ConfigError, match="train.teacher_run.*shipped"):
        check_config(cfg)


def test_optimizer_defaults_follow_table_3_1():
    cnn = load_config(None, ["data.reader=synthetic", "model.name=mobilenetv3_large"])
    vit = load_config(None, ["data.reader=synthetic", "model.name=deit_tiny_patch16_224"])
    assert isinstance(training.build_optimizer(cnn), keras.optimizers.Adam)
    assert not isinstance(training.build_optimizer(cnn), keras.optimizers.AdamW)
    opt = training.build_optimizer(vit)
    assert isinstance(opt, keras.optimizers.AdamW) and opt.weight_decay == vit.train.weight_decay
    cnn.train.optimizer = "sgd"
    assert isinstance(training.build_optimizer(cnn), keras.optimizers.SGD)


def test_study_configs_carry_thesis_learning_rates():
    expect = {  # thesis tables 3.2 (PCB) and 3.3 (GID)
        ("pcb", "efficientnet_d"): (0.002, 32), ("pcb", "mobilenet"): (0.008, 64), ("pcb", "vit_tiny"): (7e-5, 32),
        ("gid", "vit_tiny"): (8e-5, 32), ("gid", "mobilenet_d"): (0.0028, 64), ("gid", "deit_tiny"): (9e-5, 32),
    }
    for (ds, model), (lr, bs) in expect.items():
        cfg = load_config(REPO / "configs" / f"{ds}_{model}.yaml")
        assert (cfg.train.learning_rate, cfg.train.batch_size) == (lr, bs)
        assert cfg.data.reader == ("voc_xml" if ds == "pcb" else "coco")
    names = {load_config(p).model.name for p in (REPO / "configs").glob("pcb_*.yaml")}
    assert names == set(__import__("kerasxai.models", fromlist=["MODEL_NAMES"]).MODEL_NAMES)


def test_bn_momentum_override_reaches_nested_layers():
    inner = keras.Sequential([keras.Input((4, 4, 2)), keras.layers.BatchNormalization(momentum=0.999)])
    inp = keras.Input((4, 4, 2))
    model = keras.Model(inp, keras.layers.BatchNormalization(momentum=0.99)(inner(inp)))
    assert training.set_bn_momentum(model, None) == 0
    assert training.set_bn_momentum(model, 0.9) == 2
    bns = [l for l in model._flatten_layers() if isinstance(l, keras.layers.BatchNormalization)]
    assert [b.momentum for b in bns] == [0.9, 0.9]
    x = np.full((8, 4, 4, 2), 5.0, "float32")
    model(x, training=True)  # one update: moving mean moves 10% of the way (not 0.1%)
    inner_bn = inner.layers[-1]
    np.testing.assert_allclose(keras.ops.convert_to_numpy(inner_bn.moving_mean), 0.5, rtol=1e-5)


def test_teacher_hard_labels_reach_the_distillation_head():
    """The teacher's thresholded score becomes the distillation target; the label stays on the class head."""
    images = np.zeros((6, 8, 8, 3), "uint8")
    images[:, 0, 0, 0] = np.arange(6)  # the fake teacher reads its score from this pixel
    labels = np.array([0, 1, 0, 1, 1, 0], "float32")
    ds = tf.data.Dataset.from_tensor_slices({"image": images, "label": labels})

    class Teacher:
        def predict_on_batch(self, x):
            return {"score": (x[:, 0, 0, :1] >= 3).astype("float32") * 0.9 + 0.05}

    tiles = list(training._with_teacher_labels(ds, Teacher(), batch_size=4).as_numpy_iterator())
    np.testing.assert_array_equal([e["label"] for e in tiles], labels)
    np.testing.assert_array_equal([e["teacher"] for e in tiles], [0, 0, 0, 1, 1, 1])
    t = training.targets(tf.constant(labels[:, None]), ["score", "heatmap", "cls_logit", "distill_logit"],
                         teacher=tf.constant([[0.0], [0], [0], [1], [1], [1]]))
    np.testing.assert_array_equal(t["cls_logit"].numpy()[:, 0], labels)
    np.testing.assert_array_equal(t["distill_logit"].numpy()[:, 0], [0, 0, 0, 1, 1, 1])
    assert t["heatmap"].shape == (6,)  # a dummy no loss reads


def test_balanced_batches_with_a_teacher_draw_defective_tiles_by_their_own_label():
    """Balancing picks defective tiles by the tile's label, not by what the teacher says of them:
    half of each batch is defective, and every tile keeps its own teacher label."""
    from kerasxai.data.pipeline import training_dataset

    n = 64
    images = np.zeros((n, 8, 8, 3), "uint8")
    images[:, 0, 0, 0] = np.arange(n)  # identifies the tile
    labels = (np.arange(n) % 4 == 0).astype("float32")  # 16 defective, 48 good
    teacher = (np.arange(n) % 8 == 0).astype("float32")  # the teacher misses half of the defective tiles
    ds = tf.data.Dataset.from_tensor_slices({"image": images, "label": labels, "teacher": teacher})
    batches = list(training_dataset(ds, 8, flips=False, seed=3, balance=True))
    assert batches
    for x, y in batches:
        ids = x.numpy()[:, 0, 0, 0].astype(int)
        assert y.shape == (len(ids), 2)
        np.testing.assert_array_equal(y.numpy()[:, 0], labels[ids])
        np.testing.assert_array_equal(y.numpy()[:, 1], teacher[ids])
    drawn = np.concatenate([y.numpy()[:, 0] for _, y in batches])
    assert drawn.mean() == pytest.approx(0.5, abs=0.1)
    ids = np.concatenate([x.numpy()[:, 0, 0, 0] for x, _ in batches]).astype(int)
    assert set(ids[labels[ids] == 1]) == set(np.flatnonzero(labels))  # the teacher's misses and hits alike


# ---------------------------------------------------------------- training runs


@pytest.mark.slow
def test_one_epoch_run_writes_every_artifact(tmp_path, capsys):
    code = train_main(["--config", str(REPO / "configs" / "demo.yaml"), *synthetic_overrides(tmp_path), "--quiet"])
    assert code == 0, capsys.readouterr().err
    (run_dir,) = list((tmp_path / "runs").iterdir())
    assert run_dir.name.startswith("syn-")
    for name in ("config.yaml", "best.keras", "last.keras", "history.csv", "summary.json", "state.json"):
        assert (run_dir / name).is_file(), name
    assert any((run_dir / "tensorboard").rglob("events.out.tfevents.*"))
    assert not [p for p in run_dir.iterdir() if p.name.startswith(".")]  # no temp files left
    summary = json.loads((run_dir / "summary.json").read_text())
    for key in ("val_loss", "val_accuracy", "test_loss", "test_accuracy", "epochs", "wall_time_s",
                "backend", "versions", "model", "prepared_dir"):
        assert summary[key] is not None, key
    assert summary["epochs"] == 1 and summary["model"] == MODEL and summary["backend"] == keras.backend.backend()
    assert {"keras", "jax"} <= set(summary["versions"])
    assert history_epochs(run_dir) == [0]

    cfg, model = runs.load_run(run_dir)  # the best model reloads with both outputs
    assert cfg.model.name == MODEL and set(model.output) == {"score", "heatmap"}
    from kerasxai.data.pipeline import load_split

    test = list(load_split(summary["prepared_dir"], "test").as_numpy_iterator())
    x = np.stack([e["image"] for e in test]).astype("float32")
    y = np.array([e["label"] for e in test])
    out = model.predict(x, verbose=0)
    assert out["score"].shape == (len(x), 1) and out["heatmap"].shape == (len(x), 2, 2)
    acc = float(np.mean((out["score"][:, 0] > 0.5) == (y > 0.5)))
    assert acc == pytest.approx(summary["test_accuracy"], abs=1e-6)  # summary describes best.keras


@pytest.mark.slow
def test_resume_continues_at_the_next_epoch(tmp_path, capsys):
    cfg = load_config(REPO / "configs" / "demo.yaml", synthetic_overrides(tmp_path, **{"train.epochs": 3}))
    with pytest.raises(RuntimeError, match="simulated crash"):
        training.train(cfg, callbacks=[StopAfter(1)], verbose=0)
    (run_dir,) = list((tmp_path / "runs").iterdir())
    assert history_epochs(run_dir) == [0, 1]
    assert runs.read_state(run_dir)["next_epoch"] == 2
    assert not (run_dir / "summary.json").exists()
    runs.load_run(run_dir, "last")  # the checkpoint left by the crash is readable

    assert train_main(["--resume", str(run_dir), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "at epoch 3/3" in out and "Epoch 1/3" not in out and "Epoch 2/3" not in out
    assert history_epochs(run_dir) == [0, 1, 2]  # no epoch repeated
    assert list((tmp_path / "runs").iterdir()) == [run_dir]  # same folder, no new run
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["epochs"] == 3
    last = keras.saving.load_model(run_dir / "last.keras")  # optimizer state carried over
    assert int(last.optimizer.iterations) == 3 * cfg.train.steps_per_epoch


@pytest.mark.slow
def test_data_parallel_on_two_cpu_devices(tmp_path):
    code = f"""
import json, jax
from kerasxai import training
from kerasxai.config import load_config
assert len(jax.devices()) == 2, jax.devices()
cfg = load_config({str(REPO / 'configs' / 'demo.yaml')!r}, {synthetic_overrides(tmp_path)!r})
run_dir, summary = training.train(cfg, verbose=0)
print("RESULT", json.dumps({{"devices": summary["devices"], "acc": summary["val_accuracy"]}}))
"""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", KERAS_BACKEND="jax")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")][-1]
    result = json.loads(line.split(" ", 1)[1])
    assert result["devices"] == 2 and 0 <= result["acc"] <= 1


@pytest.mark.slow
def test_deit_distilled_learns_from_a_teacher_run(tmp_path, capsys):
    teacher_overrides = synthetic_overrides(tmp_path, **{"name": "teacher", "train.steps_per_epoch": 1})
    teacher_dir, _ = training.train(load_config(None, teacher_overrides), verbose=0)
    student = synthetic_overrides(tmp_path, **{"name": "student", "model.name": "deit_tiny_distilled_patch16_224",
                                               "train.steps_per_epoch": 1, "train.teacher_run": str(teacher_dir)})
    run_dir, summary = training.train(load_config(None, student), verbose=0)
    out = capsys.readouterr().out
    assert f"hard-label distillation from the teacher run '{teacher_dir}'" in out
    assert summary["optimizer"] == "adamw"
    _, model = runs.load_run(run_dir)
    assert set(model.output) == {"score", "heatmap"}  # the training-only head logits are not exported
    _, last = runs.load_run(run_dir, "last")
    assert set(last.output) == {"score", "heatmap"}
