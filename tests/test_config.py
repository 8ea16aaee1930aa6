"""Config: YAML + key=value overrides, and one clear error naming the key for bad input."""

import functools
import operator

import pytest
import yaml

from kerasxai.choices import Choice, Pooling, Switch
from kerasxai.config import Config, ConfigError, ModelConfig, choice_keys, load_config, to_yaml, validate
from kerasxai.pretrained import pretrained_dir, pretrained_names

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


def _value_at(cfg, key):
    return operator.attrgetter(key)(cfg)


def test_choice_keys_cover_every_choice_of_the_schema():
    keys = choice_keys()
    assert {"model.fusion", "model.pooling", "model.fast_depthwise", "model.host_parallel", "train.optimizer",
            "train.schedule", "train.monitor", "train.data_parallel", "train.precision", "tune.objective",
            "eval.split", "eval.fusions"} <= set(keys)
    assert all(issubclass(kind, Choice) for kind in keys.values())


@pytest.mark.parametrize("key, kind", sorted(choice_keys().items()))
def test_a_bad_choice_is_rejected_naming_the_key_and_the_values(cfg_file, key, kind):
    bad = "[bogus]" if isinstance(_value_at(Config(), key), list) else "bogus"
    with pytest.raises(ConfigError) as info:
        load_config(cfg_file, [f"{key}={bad}"])
    assert str(info.value) == f"key '{key}': must be {kind.spelled()}, got 'bogus'"


@pytest.mark.parametrize("key, kind", sorted(choice_keys().items()))
def test_every_choice_loads_as_its_enum_member_and_is_stored_as_a_plain_string(cfg_file, tmp_path, key, kind):
    member = list(kind)[-1]
    listed = isinstance(_value_at(Config(), key), list)
    cfg = load_config(cfg_file, [f"{key}=[{member.value}]" if listed else f"{key}={member.value}"])
    value = _value_at(cfg, key)
    assert (value == [member] and value[0] is member) if listed else value is member
    assert value == ([member.value] if listed else member.value)  # plain strings compare equal
    stored = yaml.safe_load(to_yaml(cfg))  # what a run folder's config.yaml holds: plain YAML strings
    assert functools.reduce(dict.__getitem__, key.split("."), stored) == ([member.value] if listed else member.value)
    out = tmp_path / "stored.yaml"
    out.write_text(to_yaml(cfg))
    assert load_config(out) == cfg


def test_switches_read_yaml_on_and_off(tmp_path):
    path = tmp_path / "switches.yaml"
    path.write_text(YAML.replace("model: {name: mobilenetv3_large_d}",
                                 "model: {name: mobilenetv3_large_d, fast_depthwise: off, host_parallel: on}"))
    cfg = load_config(path, ["train.data_parallel=off"])
    assert cfg.model.fast_depthwise is Switch.off and cfg.model.host_parallel is Switch.on
    assert cfg.train.data_parallel is Switch.off
    assert repr(cfg.model.fast_depthwise) == "'off'"  # as error messages show it


def test_validate_parses_the_choices_of_a_config_built_in_code():
    cfg = Config(model=ModelConfig(name="mobilenetv3_large_d", pooling="lse", fast_depthwise="off"))
    validate(cfg)
    assert cfg.model.pooling is Pooling.lse and cfg.model.fast_depthwise is Switch.off
    cfg.model.fusion = "median"
    with pytest.raises(ConfigError, match=r"key 'model\.fusion': must be mean, max or min, got 'median'"):
        validate(cfg)


@pytest.mark.parametrize("name", pretrained_names())
def test_shipped_pretrained_config_loads(name):
    cfg = load_config(pretrained_dir(name) / "config.yaml")
    assert name.endswith(cfg.model.name)
    assert isinstance(cfg.model.pooling, Pooling) and isinstance(cfg.model.host_parallel, Switch)
