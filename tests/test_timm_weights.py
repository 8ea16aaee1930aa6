"""timm checkpoints into the transformers, checked against timm's own outputs.

tests/fixtures/timm/ holds, for each transformer, the checkpoint of a reduced timm model of
the same layout (depth 2, width 48, 3 heads, 64 px) and timm's features, per-block attention
probabilities and their rollout on a fixed batch; made by tools/make_timm_fixtures.py in an
environment with PyTorch and timm (not needed here). Also: the keras.applications `.h5` for
the CNNs, and bad files.
"""

import functools
import shutil

import keras
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from conftest import REPO
from kerasxai.models import WeightsError, build_model, explain_model, rollout, set_rollout
from kerasxai.models import registry
from kerasxai.models.timm_weights import load_timm_weights, resample_pos_embed
from kerasxai.models.vit import build_vit

FIXTURES = REPO / "tests" / "fixtures" / "timm"
NAMES = ("vit_tiny_patch16_224", "deit_tiny_patch16_224", "deit_tiny_distilled_patch16_224")
SMALL = dict(width=48, depth=2, heads=3, mlp=192)  # the fixtures' sizes (make_timm_fixtures.SMALL)
TOL = 1e-4


def small_vit(name, size=64, **sizes):
    return build_vit(name, input_shape=(size, size, 3), fusion="max", discard_ratio=0.9, **{**SMALL, **sizes})


def checkpoint(name, suffix=".safetensors"):
    return FIXTURES / f"{name}{suffix}"


def reference(name, suffix="_outputs"):
    with np.load(FIXTURES / f"{name}{suffix}.npz") as ref:
        return dict(ref)


def features_and_attentions(model, images):
    """Our tokens after the final norm (timm's pre-head features) and per-block attentions."""
    features = keras.Model(model.inputs, model.get_layer("norm").output)(images)
    attentions = explain_model(model)(images)["attentions"]
    return np.asarray(features), [np.asarray(a) for a in attentions]


def assert_matches_timm(model, ref):
    features, attentions = features_and_attentions(model, ref["images"])
    np.testing.assert_allclose(features, ref["features"], atol=TOL, rtol=0)
    assert len(attentions) == SMALL["depth"]
    for i, a in enumerate(attentions):
        np.testing.assert_allclose(a, ref[f"attention_{i}"], atol=TOL, rtol=0)


@pytest.mark.parametrize("name", NAMES)
def test_safetensors_match_timm_features_and_attention(name, capsys):
    model = small_vit(name)
    line = load_timm_weights(model, checkpoint(name), name)
    assert_matches_timm(model, reference(name))
    heads = 4 if "distilled" in name else 2
    assert f"skipped {heads} (" in line and "head.weight" in line and str(checkpoint(name)) in line


@pytest.mark.parametrize("name", NAMES)
def test_in_graph_rollout_equals_rollout_of_timm_attentions(name):
    ref = reference(name)
    prefix = 2 if "distilled" in name else 1
    attentions = [ref[f"attention_{i}"] for i in range(SMALL["depth"])]
    model = small_vit(name)  # max fusion, discard 0.9
    load_timm_weights(model, checkpoint(name), name)
    for fusion, ratio in (("max", 0.9), ("mean", 0.0)):
        expected = ref[f"rollout_{fusion}_{ratio}"]
        ours = np.asarray(rollout(attentions, fusion, ratio, prefix))
        np.testing.assert_allclose(ours, expected, atol=1e-6, rtol=0)
        set_rollout(model, fusion=fusion, discard_ratio=ratio)
        np.testing.assert_allclose(np.asarray(model(ref["images"])["heatmap"]), expected, atol=TOL, rtol=0)


def test_augreg_npz_matches_timm():
    name = "vit_tiny_patch16_224"
    model = small_vit(name)
    line = load_timm_weights(model, checkpoint(name, ".npz"), name)
    assert_matches_timm(model, reference(name))
    assert "loaded 30 tensors" in line and "head.weight" in line


def test_resampled_position_embedding_equals_timm():
    ref = reference("resample", "")
    for grid in (10, 24):  # 160 px (down) and 384 px (up) from 224's 14x14
        ours = resample_pos_embed(ref["pos_embed"], (grid, grid), num_prefix_tokens=1)
        np.testing.assert_allclose(ours, ref[f"grid_{grid}"], atol=1e-5, rtol=0)
        np.testing.assert_array_equal(ours[:, :1], ref["pos_embed"][:, :1])


def test_other_tile_size_matches_timm():
    """A 64 px checkpoint into a 96 px model: position embedding and outputs as timm's loader
    gives them (prefix tokens kept, 4x4 -> 6x6 grid)."""
    name = "deit_tiny_distilled_patch16_224"
    ref = reference(name, "_96px")
    model = small_vit(name, size=96)
    load_timm_weights(model, checkpoint(name), name)
    np.testing.assert_allclose(np.asarray(model.get_layer("pos_embed").embedding), ref["pos_embed"], atol=1e-5, rtol=0)
    assert_matches_timm(model, ref)


def test_build_model_reads_timm_checkpoint(monkeypatch, capsys):
    name = "deit_tiny_distilled_patch16_224"
    monkeypatch.setattr(registry, "build_vit", functools.partial(build_vit, **SMALL))
    model = build_model(name, input_shape=(64, 64, 3), weights=str(checkpoint(name)))
    assert_matches_timm(model, reference(name))
    out = capsys.readouterr().out
    assert "loaded 31 tensors" in out and "skipped 4 (head.bias, head.weight, head_dist.bias, head_dist.weight" in out


def weights_of(model):
    return [np.array(w) for w in model.get_weights()]


def assert_refused(model, path, *fragments):
    """One WeightsError naming the file and the tensor; the model's weights untouched."""
    before = weights_of(model)
    with pytest.raises(WeightsError) as err:
        load_timm_weights(model, path, model.name)
    msg = str(err.value)
    assert str(path) in msg and "\n" not in msg, msg
    for fragment in fragments:
        assert fragment in msg, msg
    for a, b in zip(before, weights_of(model)):
        np.testing.assert_array_equal(a, b)


def test_full_size_model_refuses_reduced_checkpoint():
    name = "vit_tiny_patch16_224"
    with pytest.raises(WeightsError, match="patch_embed.proj.weight") as err:
        build_model(name, input_shape=(64, 64, 3), weights=str(checkpoint(name)))
    assert str(checkpoint(name)) in str(err.value)


@pytest.mark.parametrize(
    "model_name, sizes, ckpt, fragment",
    [
        ("deit_tiny_patch16_224", dict(width=96), "deit_tiny_patch16_224", "'patch_embed.proj.weight' has shape"),
        ("deit_tiny_patch16_224", dict(depth=3), "deit_tiny_patch16_224", "'blocks.2.norm1.weight' is missing"),
        ("deit_tiny_patch16_224", dict(depth=1), "deit_tiny_patch16_224", "'blocks.1."),
        ("deit_tiny_patch16_224", {}, "deit_tiny_distilled_patch16_224", "'dist_token'"),
        ("deit_tiny_distilled_patch16_224", {}, "deit_tiny_patch16_224", "'dist_token' is missing"),
    ],
)
def test_other_architecture_refused(model_name, sizes, ckpt, fragment):
    assert_refused(small_vit(model_name, **sizes), checkpoint(ckpt), fragment)


def test_missing_tensor_refused(tmp_path):
    state = load_file(str(checkpoint("deit_tiny_patch16_224")))
    del state["blocks.1.attn.proj.bias"]
    path = tmp_path / "model.safetensors"
    save_file(state, str(path))
    assert_refused(small_vit("deit_tiny_patch16_224"), path, "'blocks.1.attn.proj.bias' is missing")


@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_truncated_file_refused(tmp_path, suffix):
    source = checkpoint("vit_tiny_patch16_224", suffix)
    path = tmp_path / f"model{suffix}"
    path.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    assert_refused(small_vit("vit_tiny_patch16_224"), path, "truncated")


def test_file_kinds_by_model(tmp_path):
    for file, model_name in [("m.safetensors", "mobilenetv3_large_d"), ("m.h5", "deit_tiny_patch16_224"),
                             ("m.pt", "deit_tiny_patch16_224")]:
        path = tmp_path / file
        path.write_bytes(b"x")
        with pytest.raises(WeightsError, match=r"\.weights\.h5") as err:
            build_model(model_name, input_shape=(64, 64, 3), weights=str(path))
        assert str(path) in str(err.value)
    with pytest.raises(WeightsError, match="not found"):
        build_model("deit_tiny_patch16_224", input_shape=(64, 64, 3), weights=str(tmp_path / "model.safetensors"))


def applications_file(path):
    """What keras.applications' ImageNet no-top file is: MobileNetV3Large's weights in the
    legacy Keras .h5 layout (written here from random weights; nothing is downloaded)."""
    from keras.src.legacy.saving import legacy_h5_format
    import h5py

    backbone = keras.applications.MobileNetV3Large(include_top=False, weights=None, input_shape=(64, 64, 3))
    rng = np.random.default_rng(0)
    backbone.set_weights([rng.normal(size=w.shape).astype("float32") for w in backbone.get_weights()])
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, backbone)
    return backbone


def test_cnn_reads_keras_applications_file(tmp_path):
    path = tmp_path / "weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5"
    source = applications_file(path)
    model = build_model("mobilenetv3_large_d", input_shape=(64, 64, 3), weights=str(path))
    ours = {layer.name: layer.get_weights() for layer in model.get_layer("backbone").layers}
    shared = [layer for layer in source.layers if layer.get_weights() and layer.name in ours]
    assert len(shared) > 50  # the "_d" cut keeps the blocks up to stride 16
    for layer in shared:
        for a, b in zip(ours[layer.name], layer.get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)


def test_cnn_refuses_broken_applications_file(tmp_path):
    path = tmp_path / "efficientnetv2-s_notop.h5"
    shutil.copy(checkpoint("vit_tiny_patch16_224", ".npz"), path)  # not HDF5 at all
    with pytest.raises(WeightsError, match="weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5") as err:
        build_model("mobilenetv3_large", input_shape=(64, 64, 3), weights=str(path))
    assert str(path) in str(err.value)


@pytest.mark.parametrize("model", ["vit_tiny", "deit_tiny"])
def test_finetune_recipe_names_the_timm_checkpoint(model):
    from kerasxai.config import load_config

    cfg = load_config(REPO / "configs" / f"deeppcb_{model}_finetune.yaml")
    scratch = load_config(REPO / "configs" / f"deeppcb_{model}.yaml")  # the random-init recipe
    assert cfg.model.name == scratch.model.name and cfg.model.name in cfg.model.weights
    assert cfg.model.weights.endswith("model.safetensors")
    assert (cfg.train.learning_rate, cfg.train.batch_size) == (scratch.train.learning_rate, scratch.train.batch_size)
    assert cfg.train.schedule == "plateau" and cfg.train.augment is None


def test_config_check_refuses_a_checkpoint_the_model_cannot_read():
    from kerasxai.config import ConfigError, load_config
    from kerasxai.training import check_config

    ckpt = str(checkpoint("vit_tiny_patch16_224"))
    check_config(load_config(None, ["data.reader=synthetic", "model.name=vit_tiny_patch16_224", f"model.weights={ckpt}"]))
    with pytest.raises(ConfigError, match="model.weights") as err:
        check_config(load_config(None, ["data.reader=synthetic", "model.name=mobilenetv3_large", f"model.weights={ckpt}"]))
    assert ckpt in str(err.value)
