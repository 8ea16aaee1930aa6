"""The same models under the TensorFlow backend (one subprocess for all seven names), and a
`.keras` file saved under JAX loaded under TensorFlow with the same outputs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import kerasxai  # noqa: F401

REPO = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import json, sys
import numpy as np
import keras
assert keras.backend.backend() == "tensorflow", keras.backend.backend()
from kerasxai.models import MODEL_NAMES, build_model, explain_model, is_transformer, rollout

x = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
report = {}
for name in MODEL_NAMES:
    model = build_model(name, input_shape=(64, 64, 3))
    both = keras.Model(model.inputs, {"main": model.output, "explain": explain_model(model).output})
    out = both.predict(x, verbose=0)  # a tf.function graph
    main, ex = out["main"], out["explain"]
    entry = {k: [list(v.shape), str(v.dtype)] for k, v in main.items()}
    if is_transformer(name):
        prefix = 2 if "distilled" in name else 1
        want = np.asarray(rollout(ex["attentions"], "max", 0.9, prefix))
        entry["check"] = float(np.abs(want - main["heatmap"]).max())
    else:
        bias = model.get_layer("cam_head").get_weights()[1]
        entry["check"] = float(np.abs(main["heatmap"].mean(axis=(1, 2))[:, None] + bias - ex["logit"]).max())
    report[name] = entry

saved = sys.argv[1]
loaded = keras.saving.load_model(saved + "/model.keras")
np.save(saved + "/tf_out.npy", loaded.predict(np.load(saved + "/x.npy"), verbose=0)["heatmap"])
print("REPORT" + json.dumps(report))
"""


@pytest.mark.tf_backend
@pytest.mark.slow
def test_all_models_under_tensorflow_and_jax_file_loads_there(tmp_path):
    from kerasxai.models import MODEL_NAMES, build_model

    # a model saved under JAX (this process) must load and agree under TensorFlow
    model = build_model("deit_tiny_distilled_patch16_224", input_shape=(32, 32, 3), discard_ratio=0.5)
    x = np.random.default_rng(1).uniform(0, 255, (3, 32, 32, 3)).astype("float32")
    jax_heat = np.asarray(model(x)["heatmap"])
    model.save(tmp_path / "model.keras")
    np.save(tmp_path / "x.npy", x)

    script = tmp_path / "tf_models.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path)], env=env, cwd=REPO, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("REPORT"))
    report = json.loads(line[len("REPORT") :])
    assert set(report) == set(MODEL_NAMES)
    for name, entry in report.items():
        grid = [4, 4] if (name.endswith("_d") or "patch16" in name) else [2, 2]
        assert entry["score"] == [[2, 1], "float32"], name
        assert entry["heatmap"] == [[2, *grid], "float32"], name
        assert entry["check"] < 1e-4, (name, entry["check"])  # CAM invariant / in-graph rollout
    np.testing.assert_allclose(np.load(tmp_path / "tf_out.npy"), jax_heat, rtol=1e-4, atol=1e-6)
