"""A prepared tile set (what ``python -m kerasxai.prepare`` wrote) as a TensorFlow Datasets builder.

Needs the optional ``tfds`` extra (``pip install kerasxai[tfds]``). ``tiles_config(folder)`` names
the prepared folder; TFDS then writes its own copy under ``data_dir`` once (nothing is downloaded)
and ``tfds.load`` / ``tfds.as_numpy`` read it::

    import tensorflow_datasets as tfds
    from kerasxai.data.tfds_tiles import tiles_config  # registers "kerasxai_tiles"

    ds = tfds.load("kerasxai_tiles", split="train", data_dir="tfds_data",
                   builder_kwargs={"config": tiles_config("data_cache/deeppcb-0123456789abcdef")})

One example per tile, in manifest order, decoded by :func:`kerasxai.data.pipeline.load_split`:
``image`` (S, S, 3) uint8 RGB; ``mask`` and ``valid`` (S, S, 1) uint8 in {0, 1} (defect pixels;
pixels inside the source image, not padding); ``label`` 0 good / 1 defect; ``source`` the source
image id; ``y``/``x`` the tile's top-left corner in it. Splits are the prepared splits that hold
tiles. The config is named ``<reader>-<key>`` after the manifest, so two prepared folders never
share a TFDS copy.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from kerasxai.data.pipeline import load_split, read_manifest
from kerasxai.data.sources import DataError
from kerasxai.data.splits import SPLITS


@dataclasses.dataclass
class TilesConfig(tfds.core.BuilderConfig):
    """One prepared folder: where it is and its tile size (fixes the feature shapes)."""

    prepared_dir: str = ""
    tile_size: int = 0


def tiles_config(prepared_dir) -> TilesConfig:
    """The builder config of a prepared folder (a ``DataError`` when it is not one)."""
    folder = Path(prepared_dir).resolve()
    m = read_manifest(folder)
    return TilesConfig(name=f"{m['config']['reader']}-{m['key']}", prepared_dir=str(folder),
                       tile_size=int(m["tile_size"]), description=f"tiles prepared in {folder}")


class KerasxaiTiles(tfds.core.GeneratorBasedBuilder):
    """The tiles of a folder prepared by ``python -m kerasxai.prepare``."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Tiles, labels, masks, valid areas and positions of a prepared folder."}

    def _config(self) -> TilesConfig:
        if not isinstance(self.builder_config, TilesConfig):
            raise DataError("kerasxai_tiles needs a prepared folder: pass "
                            "builder_kwargs={'config': tiles_config(folder)} (kerasxai.data.tfds_tiles).")
        return self.builder_config

    def _info(self) -> tfds.core.DatasetInfo:
        s = self._config().tile_size
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(s, s, 3), encoding_format="png"),
                "mask": tfds.features.Image(shape=(s, s, 1), encoding_format="png"),
                "valid": tfds.features.Image(shape=(s, s, 1), encoding_format="png"),
                "label": tfds.features.ClassLabel(names=["good", "defect"]),
                "source": tfds.features.Text(),
                "y": tfds.features.Scalar(dtype=np.int32),
                "x": tfds.features.Scalar(dtype=np.int32),
            }),
            description="Tiles of a folder prepared by python -m kerasxai.prepare.",
            supervised_keys=("image", "label"),
            disable_shuffling=True,  # manifest order, as load_split gives it
        )

    def _split_generators(self, dl_manager):
        folder = self._config().prepared_dir
        counts = read_manifest(folder)["counts"]
        return {split: self._generate_examples(folder, split) for split in SPLITS if sum(counts[split].values())}

    def _generate_examples(self, folder: str, split: str):
        for e in load_split(folder, split).as_numpy_iterator():
            source, y, x = e["source"].decode(), int(e["y"]), int(e["x"])
            yield f"{source}@{y},{x}", {
                "image": e["image"],
                "mask": e["mask"][:, :, None],
                "valid": e["valid"][:, :, None],
                "label": int(e["label"]),
                "source": source,
                "y": y,
                "x": x,
            }
