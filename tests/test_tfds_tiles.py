"""The TFDS builder for prepared tile sets: tfds.load on the prepared bundled sample gives the
tiles, labels, masks and positions of load_split. Skipped without tensorflow-datasets (the
optional `tfds` extra)."""

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets", reason="tensorflow-datasets not installed (pip install kerasxai[tfds])")

from kerasxai.config import load_config  # noqa: E402
from kerasxai.data.pipeline import load_split, prepare_dataset, read_manifest  # noqa: E402
from kerasxai.data.sources import DataError  # noqa: E402
from kerasxai.data.splits import SPLITS  # noqa: E402
from kerasxai.data.tfds_tiles import KerasxaiTiles, tiles_config  # noqa: E402  (registers "kerasxai_tiles")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """The bundled DeepPCB sample prepared into a temporary cache, and a TFDS data_dir."""
    tmp = tmp_path_factory.mktemp("tiles")
    cfg = load_config(None, ["data.reader=deeppcb", "data.root=sample:deeppcb", "model.name=x",
                             f"data.cache_dir={tmp / 'cache'}"])
    return prepare_dataset(cfg, progress=False), tmp / "tfds"


def load(prepared_dir, data_dir, split, **kw):
    return tfds.load("kerasxai_tiles", split=split, data_dir=str(data_dir),
                     builder_kwargs={"config": tiles_config(prepared_dir)}, **kw)


def test_tfds_load_equals_load_split(prepared):
    out, data_dir = prepared
    m = read_manifest(out)
    for split in SPLITS:
        got = list(tfds.as_numpy(load(out, data_dir, split)))
        want = list(load_split(out, split).as_numpy_iterator())
        assert len(got) == len(want) == sum(m["counts"][split].values()) > 0
        for g, w in zip(got, want):  # manifest order on both sides
            assert (g["source"], g["y"], g["x"]) == (w["source"], w["y"], w["x"])
            assert g["image"].dtype == np.uint8
            np.testing.assert_array_equal(g["image"], w["image"])
            np.testing.assert_array_equal(g["mask"][:, :, 0], w["mask"])
            np.testing.assert_array_equal(g["valid"][:, :, 0], w["valid"])
            assert g["label"] == w["label"]
    assert m["counts"]["test"]["defect"] > 0  # some masks carry defects
    builder = tfds.builder("kerasxai_tiles", data_dir=str(data_dir), config=tiles_config(out))
    assert builder.builder_config.name == out.name  # <reader>-<key>: one TFDS copy per prepared folder
    assert sorted(builder.info.splits) == sorted(SPLITS)
    assert builder.info.features["image"].shape == (m["tile_size"], m["tile_size"], 3)
    image, label = next(iter(tfds.as_numpy(load(out, data_dir, "val", as_supervised=True))))
    first = next(load_split(out, "val").as_numpy_iterator())
    np.testing.assert_array_equal(image, first["image"])
    assert label == first["label"]


def test_folder_that_is_not_prepared_names_it(tmp_path):
    (tmp_path / "train-00000.tfrecord").write_bytes(b"")
    with pytest.raises(DataError, match="kerasxai.prepare") as err:
        tiles_config(tmp_path)
    assert str(tmp_path) in str(err.value) and "\n" not in str(err.value)


def test_builder_without_a_prepared_folder_says_what_to_pass(tmp_path):
    with pytest.raises(DataError, match=r"tiles_config\(folder\)"):
        tfds.builder("kerasxai_tiles", data_dir=str(tmp_path))
    assert KerasxaiTiles.name == "kerasxai_tiles"
