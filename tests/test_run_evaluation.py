"""Which data evaluate scores, and how its rows and data are named (no model, no framework)."""

from types import SimpleNamespace

import pytest

from kerasxai.config import ConfigError, load_config
from kerasxai.run_evaluation import choose_data, data_description, labels


def test_runs_own_split_by_default():
    choice = choose_data(["eval.max_tiles=5"], split="val")
    assert not choice.other_data
    assert choice.eval_overrides == ["eval.max_tiles=5", "eval.split=val"] and choice.data_overrides == []


@pytest.mark.parametrize("data_file, overrides", [("other.yaml", []), (None, ["data.options.seed=4"])])
def test_other_data_is_scored_as_its_test_split(data_file, overrides):
    choice = choose_data(["eval.batch_size=2", *overrides], data_file)
    assert choice.other_data and choice.data_file == data_file and choice.data_overrides == overrides
    assert choice.eval_overrides == ["eval.batch_size=2", "eval.split=test"]
    with pytest.raises(ConfigError, match="--split: other data"):
        choose_data(overrides, data_file, split="train")


def test_only_eval_and_data_keys_change_at_evaluation_time():
    with pytest.raises(ConfigError, match="override 'model.name=x' is not an eval.* or data.* key"):
        choose_data(["eval.max_tiles=5", "model.name=x"])


def test_labels_name_the_run_when_two_share_a_model():
    cfgs = [SimpleNamespace(model=SimpleNamespace(name=n)) for n in ("a", "b", "a")]
    assert labels(cfgs, ["runs/a-1", "runs/b-1", "runs/a-2"]) == ["a@a-1", "b", "a@a-2"]


def test_data_description_names_reader_folder_and_options():
    cfg = load_config(None, ["data.reader=synthetic", "data.root=boards", "data.options={seed: 4, count: 8}",
                             "model.name=mobilenetv3_large_d"])
    assert data_description(cfg.data) == "synthetic 'boards' (count=8, seed=4)"
