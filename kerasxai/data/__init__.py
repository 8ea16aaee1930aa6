"""Data: readers -> samples (sources), tiles and stitching (tiling), splits, tf.data (pipeline).

``pipeline`` imports TensorFlow, so it is not imported here: ``from kerasxai.data import pipeline``.
"""

from .sources import READERS, DataError, Sample, read_samples
from .splits import split_samples
from .tiling import TileGrid, stitch, tile_image, tile_label

__all__ = ["READERS", "DataError", "Sample", "read_samples", "split_samples", "TileGrid", "stitch", "tile_image", "tile_label"]
