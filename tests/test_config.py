"""Config: YAML + key=value overrides, and one clear error naming the key for bad input."""

import pytest

from kerasxai.config import ConfigError, load_config, to_yaml

YAML = """
name: t
data:
  reader: synthetic
  tile: {size: 64}
model: {name: mobilenetv3_large_d}
train: {epochs: 3}
"""


@pytest.fixture
def cfg_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(YAML)
    return path


def test_yaml_and_overrides_are_typed(cfg_file):
    cfg = load_config(cfg_file, ["data.tile.size=160", "train.learning_rate=3e-4", "eval.fusions=[max]"])
    assert cfg.data.tile.size == 160 and isinstance(cfg.data.tile.size, int)
    assert cfg.train.learning_rate == pytest.approx(3e-4)
    assert cfg.train.epochs == 3 and cfg.eval.fusions == ["max"]
    assert cfg.train.optimizer == "auto"  # defaults fill what the file leaves out


def test_resolved_config_round_trips(cfg_file, tmp_path):
    cfg = load_config(cfg_file, ["train.epochs=7"])
    out = tmp_path / "resolved.yaml"
    out.write_text(to_yaml(cfg))
    assert load_config(out) == cfg


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["train.epoch=3"], "train.epoch"),  # unknown key
        (["train.epochs=abc"], "train.epochs"),  # wrong type
        (["model.fusion=median"], "model.fusion"),  # not a choice
        (["data.split.train=0.9"], "data.split"),  # fractions do not sum to 1
        (["data.tile.overlap=64"], "data.tile.overlap"),  # overlap >= tile
    ],
)
def test_bad_values_name_the_key(cfg_file, overrides, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(cfg_file, overrides)


def test_unknown_key_in_file_names_the_key_and_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(YAML + "eval: {treshold: 0.4}\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*eval\.treshold"):
        load_config(path)


def test_missing_required_value_is_named(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data: {reader: synthetic}\n")
    with pytest.raises(ConfigError, match=r"model\.name"):
        load_config(path)


def test_missing_file_and_malformed_override(tmp_path, cfg_file):
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="key=value"):
        load_config(cfg_file, ["train.epochs"])


def test_invalid_yaml_names_the_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="broken.yaml"):
        load_config(path)


@pytest.mark.parametrize(
    "override, key",
    [
        ("data.max_images=-1", "data.max_images"),
        ("data.max_images=0", "data.max_images"),
        ("data.mask_threshold=-1", "data.mask_threshold"),
        ("data.mask_threshold=256", "data.mask_threshold"),
        ("data.tile.defect_pixels=-1", "data.tile.defect_pixels"),
        ("eval.score_threshold=1.5", "eval.score_threshold"),
        ("eval.score_threshold=-0.1", "eval.score_threshold"),
        ("eval.pixel_threshold=300", "eval.pixel_threshold"),
        ("eval.batch_size=0", "eval.batch_size"),
        ("eval.max_tiles=0", "eval.max_tiles"),
        ("eval.overlay_tiles=-1", "eval.overlay_tiles"),
        ("tune.trials=0", "tune.trials"),
        ("eval.discard_ratios=[0.0,1.0]", "eval.discard_ratios"),
    ],
)
def test_out_of_range_values_name_the_key(cfg_file, override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.") + "'.*got"):
        load_config(cfg_file, [override])


def test_range_edges_the_code_uses_are_accepted(cfg_file):
    cfg = load_config(cfg_file, ["data.max_images=1", "data.mask_threshold=0", "data.tile.defect_pixels=0",
                                 "eval.score_threshold=0.0", "eval.pixel_threshold=255", "eval.overlay_tiles=0",
                                 "eval.max_tiles=1", "eval.discard_ratios=[0.0,0.99]", "data.max_images=null"])
    assert cfg.data.max_images is None and cfg.data.mask_threshold == 0 and cfg.eval.overlay_tiles == 0


@pytest.mark.parametrize("text, kind", [("- data\n- model\n", "list"), ("42\n", "scalar"), ("mobilenet\n", "scalar")])
def test_top_level_not_a_mapping_names_the_file(tmp_path, text, kind):
    path = tmp_path / "flat.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=rf"flat\.yaml': the top level is a {kind}") as info:
        load_config(path)
    assert "\n" not in str(info.value)
