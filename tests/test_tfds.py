"""The TFDS builder for DeepPCB: tfds.load on the bundled sample gives the deeppcb reader's images,
masks and boxes. Skipped without tensorflow-datasets (the optional `tfds` extra)."""

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets", reason="tensorflow-datasets not installed (pip install kerasxai[tfds])")

from kerasxai.data.sources import DataError, deeppcb_boxes, deeppcb_pairs, read_deeppcb, resolve_root  # noqa: E402
from kerasxai.data.tfds_deeppcb import Deeppcb  # noqa: E402  (registers "deeppcb")

SAMPLE = resolve_root("sample:deeppcb")


def load(tmp_path, manual_dir, split="train"):
    return tfds.load("deeppcb", split=split, data_dir=str(tmp_path / "tfds"), download=True,
                     download_and_prepare_kwargs={"download_config": tfds.download.DownloadConfig(manual_dir=str(manual_dir))})


def test_tfds_load_equals_the_deeppcb_reader(tmp_path):
    examples = {e["id"].decode(): e for e in tfds.as_numpy(load(tmp_path, SAMPLE))}
    samples = read_deeppcb(SAMPLE, "trainval.txt")
    anns = {pair: ann for pair, _, _, ann in deeppcb_pairs(SAMPLE)}
    assert sorted(examples) == sorted(s.id for s in samples)
    n_boxes = 0
    for s in samples:
        e = examples[s.id]
        image, mask = s.load()
        np.testing.assert_array_equal(e["image"], image)
        np.testing.assert_array_equal(e["mask"][:, :, 0], mask)
        want = deeppcb_boxes(anns[s.group]) if s.id.endswith("_test") else []
        np.testing.assert_array_equal(e["boxes"], np.asarray(want, np.float32).reshape(-1, 4))
        assert e["pair"].decode() == s.group
        n_boxes += len(want)
        assert (mask.any()) == bool(len(want))  # templates: no defect
    assert n_boxes > 0
    builder = tfds.builder("deeppcb", data_dir=str(tmp_path / "tfds"))
    assert list(builder.info.splits) == ["train"]  # the sample has no test.txt


def test_manual_dir_without_lists_names_the_folder(tmp_path):
    with pytest.raises(DataError, match="PCBData/trainval.txt"):
        load(tmp_path, tmp_path)
    assert Deeppcb.name == "deeppcb"
