"""DeepPCB as a TensorFlow Datasets builder, read from a local copy (nothing is downloaded).

Needs the optional ``tfds`` extra (``pip install kerasxai[tfds]``). Put the DeepPCB folder
(the one holding ``PCBData/``) in ``manual_dir``; splits are the published lists found there:
``train`` from ``PCBData/trainval.txt``, ``test`` from ``PCBData/test.txt``. One example per
image, read by the ``deeppcb`` reader (:mod:`kerasxai.data.sources`), so pixels, masks and
boxes equal what ``prepare`` tiles::

    import tensorflow_datasets as tfds
    import kerasxai.data.tfds_deeppcb  # registers "deeppcb"

    ds = tfds.load("deeppcb", split="train", data_dir="tfds_data",
                   download_and_prepare_kwargs={"download_config": tfds.download.DownloadConfig(
                       manual_dir="/data/DeepPCB")})

Features: ``image`` (H, W, 3) uint8 RGB; ``mask`` (H, W, 1) uint8 in {0, 1} (the filled boxes);
``boxes`` (N, 4) float32 ``x1 y1 x2 y2`` pixel corners as in the annotation files (empty for a
template); ``pair`` the pair id (``NNNNNNNN``, shared by a tested image and its template);
``id`` ``<pair>_test`` or ``<pair>_temp``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from kerasxai.data.sources import DataError, deeppcb_boxes, deeppcb_lists_dir, deeppcb_pair_samples, deeppcb_pairs

SPLIT_LISTS = {"train": "trainval.txt", "test": "test.txt"}  # DeepPCB's published lists


class Deeppcb(tfds.core.GeneratorBasedBuilder):
    """DeepPCB (Tang et al. 2019): tested PCB images with defect boxes, and their templates."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Images, defect masks, boxes and pair ids from a local copy."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Clone https://github.com/tangsanli5201/DeepPCB and pass the folder that holds PCBData/ as "
        "manual_dir (tfds.download.DownloadConfig(manual_dir=...)).")

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(None, None, 3), encoding_format="png"),
                "mask": tfds.features.Image(shape=(None, None, 1), encoding_format="png"),
                "boxes": tfds.features.Tensor(shape=(None, 4), dtype=np.float32),
                "pair": tfds.features.Text(),
                "id": tfds.features.Text(),
            }),
            supervised_keys=("image", "mask"),
            homepage="https://github.com/tangsanli5201/DeepPCB",
        )

    def _split_generators(self, dl_manager):
        root = Path(dl_manager.manual_dir)
        base = deeppcb_lists_dir(root)
        found = {s: f for s, f in SPLIT_LISTS.items() if (base / f).is_file()}
        if not found:
            raise DataError(f"manual_dir '{root}' holds neither PCBData/trainval.txt nor PCBData/test.txt: "
                            "pass the DeepPCB folder that holds PCBData/.")
        return {split: self._generate_examples(root, list_file) for split, list_file in found.items()}

    def _generate_examples(self, root, list_file: str):
        for pair, test, temp, ann in deeppcb_pairs(root, list_file):
            tested, template = deeppcb_pair_samples(pair, test, temp, ann)
            for sample, boxes in ((tested, deeppcb_boxes(ann)), (template, [])):
                image, mask = sample.load()
                yield sample.id, {
                    "image": image,
                    "mask": mask[:, :, None],
                    "boxes": np.asarray(boxes, np.float32).reshape(-1, 4),
                    "pair": pair,
                    "id": sample.id,
                }
