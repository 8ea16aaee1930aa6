"""train.precision: models train under the chosen dtype policy, the score stays float32, saved
models score in float32, a resume keeps the precision."""

import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from kerasxai import precision, runs, training
from kerasxai.config import ConfigError, load_config
from kerasxai.train import main as train_main

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from test_reliability import SHORT, make_run  # noqa: E402
from test_train import synthetic_overrides  # noqa: E402


def test_unknown_precision_is_a_config_error():
    with pytest.raises(ConfigError, match="key 'train.precision'.*mixed_bfloat16"):
        load_config(None, ["data.reader=synthetic", "model.name=mobilenetv3_large_d", "train.precision=float16"])


@pytest.mark.parametrize("name", ["mobilenetv3_large_d", "vit_tiny_patch16_224"])
def test_mixed_models_compute_in_bfloat16_with_a_float32_score(tmp_path, name):
    cfg = load_config(None, synthetic_overrides(tmp_path, **{"model.name": name, "train.precision": "mixed_bfloat16"}))
    before = keras.config.dtype_policy().name
    model = training.build_model(cfg)
    assert keras.config.dtype_policy().name == before  # the global policy is restored
    assert precision.is_mixed(model)
    assert model.output["score"].dtype == "float32" and model.output["heatmap"].dtype == "float32"
    copy = precision.float32_copy(model)
    assert not precision.is_mixed(copy) and copy is not model
    for a, b in zip(copy.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert precision.float32_copy(copy) is copy  # already float32: no copy


def test_resume_refuses_a_changed_precision(tmp_path, capsys):
    run_dir = make_run(tmp_path)
    assert train_main(["--resume", str(run_dir), "train.precision=mixed_bfloat16"]) == 2
    err = capsys.readouterr().err
    assert "key 'train.precision'" in err and "--resume" in err


@pytest.mark.slow
def test_mixed_bfloat16_training_scores_in_float32(tmp_path):
    cfg = load_config(REPO / "configs" / "demo.yaml",
                      synthetic_overrides(tmp_path, **SHORT, **{"train.precision": "mixed_bfloat16"}))
    run_dir, summary = training.train(cfg, verbose=0, progress=False)
    assert np.isfinite(summary["val_loss"])
    assert runs.run_config(run_dir).train.precision == "mixed_bfloat16"  # recorded with the run
    last = keras.saving.load_model(run_dir / runs.LAST)  # trained in bfloat16 ...
    assert precision.is_mixed(last)
    _, best = runs.load_run(run_dir)  # ... the inference checkpoint scores in float32
    assert not precision.is_mixed(best)
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    out = best.predict_on_batch(x)
    assert out["score"].dtype == np.float32 and out["heatmap"].dtype == np.float32
    assert np.all((out["score"] >= 0) & (out["score"] <= 1))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(last(x)["score"]), out["score"], atol=0.02)
