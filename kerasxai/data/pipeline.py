"""Prepared (tiled) datasets on disk and the tf.data pipelines that read them.

``prepare_dataset`` tiles every sample once into TFRecord shards under
``<cache_dir>/<reader>-<key>/`` where ``key`` hashes the data, tile and split settings and the
file list (paths, sizes, modification times of images and annotations). It builds in a hidden
temporary folder and renames it into place after ``manifest.json`` was written (last, atomically),
so an interrupted run leaves nothing a later run would trust. The manifest records each shard's
size and a checksum of its first and last 64 KiB; a folder is reused only when its shards still
match (checked on every reuse, a few reads a shard), otherwise it is rebuilt.

Record format (one ``tf.train.Example`` per tile): ``image`` PNG (1 channel when the source
image is gray, replicated to 3 on decode), ``mask`` bit-packed (``np.packbits``, row-major), ``vh``/``vw`` the valid
(unpadded) extent of the tile, ``label``, ``source`` (sample id), ``y``/``x`` (top-left corner).
PNG keeps the shards small (DeepPCB: ~4.4 KB an image tile instead of 150 KB raw); unpacking
bits (6.3 KB a mask at 224) is cheaper than decoding a second PNG.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import tensorflow as tf

from kerasxai.runtime import atomic_write_text, cores, default_mode, pid_alive

from .sources import DataError, read_samples
from .splits import SPLITS, split_samples
from .tiling import TileGrid, tile_image, tile_label

FORMAT_VERSION = 2
SHARD_TILES = 1024  # tiles per shard: many shards let training interleave and shuffle them
MANIFEST = "manifest.json"
DIGEST_BYTES = 64 * 1024  # the shard checksum covers this much at each end of the file
AUTOTUNE = tf.data.AUTOTUNE


# ------------------------------------------------------------------------ prepare


def _data_settings(data_cfg) -> dict:
    root = data_cfg.root
    if root and not root.startswith("sample:"):
        root = os.path.abspath(root)
    return {
        "reader": data_cfg.reader,
        "root": root,
        "options": dict(data_cfg.options or {}),
        "max_images": data_cfg.max_images,
        "mask_threshold": data_cfg.mask_threshold,
        "tile": {k: getattr(data_cfg.tile, k) for k in ("size", "overlap", "defect_fraction", "defect_pixels")},
        "split": {k: getattr(data_cfg.split, k) for k in ("train", "val", "test", "seed")},
        **({"holdout": sorted(map(str, data_cfg.split.holdout))} if data_cfg.split.holdout else {}),
    }


def _stat(path: str):
    try:
        st = os.stat(path)
        return [st.st_size, st.st_mtime_ns]
    except OSError:
        return None


def dataset_key(data_cfg, samples) -> str:
    """Hash of the settings that change the tiles and of the file list (with sizes and mtimes)."""
    files = []
    for s in samples:
        ann = s.annotation
        files.append([s.id, s.group, s.path, _stat(s.path), ann, _stat(ann) if ann else None])
    blob = json.dumps({"v": FORMAT_VERSION, "data": _data_settings(data_cfg), "files": files}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _bytes(v):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))


def _int(v):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v)]))


def _png(a: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", a, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise DataError("PNG encoding of a tile failed")
    return buf.tobytes()


def _tile_sample(sample, grid: TileGrid, tile_cfg):
    """Decode, tile and encode one sample: (records, tile rows, (h, w))."""
    image, mask = sample.load()
    h, w = mask.shape
    gray = bool((image[..., 0] == image[..., 1]).all() and (image[..., 0] == image[..., 2]).all())
    img = image[..., :1] if gray else image[..., ::-1]  # cv2 writes BGR; decode_png gives RGB back
    tiles, valid, positions = tile_image(img, grid)
    mtiles, _, _ = tile_image(mask, grid)
    out, rows = [], []
    for t, m, v, (y, x) in zip(tiles, mtiles, valid, positions):
        label = tile_label(m, v, tile_cfg)
        m = m * v  # padding never carries defect pixels
        feat = {
            "image": _bytes(_png(t)), "mask": _bytes(np.packbits(m.reshape(-1)).tobytes()),
            "vh": _int(min(h - y, grid.size)), "vw": _int(min(w - x, grid.size)),
            "label": _int(label), "source": _bytes(sample.id.encode()), "y": _int(y), "x": _int(x),
        }
        out.append(tf.train.Example(features=tf.train.Features(feature=feat)).SerializeToString())
        rows.append({"source": sample.id, "y": int(y), "x": int(x), "label": int(label)})
    return out, rows, (h, w)


def _temp_owner(p: Path) -> tuple[str, int] | None:
    """``(key, pid)`` of a build folder ``.tmp-<reader>-<key>-<pid>-<random>`` or of an old
    folder moved aside ``.tmp-replaced-<key>-<pid>-old``; None for anything else."""
    parts = p.name.split("-")
    if len(parts) < 5 or not parts[-2].isdigit() or not p.is_dir():
        return None
    return parts[-3], int(parts[-2])


def _clean_stale(cache: Path, key: str):
    """Remove the build folders of `key` (its lock is held) whose process is dead."""
    for p in cache.glob(f".tmp-*-{key}-*"):
        owner = _temp_owner(p)
        if owner and owner[0] == key and not pid_alive(owner[1]):
            shutil.rmtree(p, ignore_errors=True)


STALE_BUILD_S = 24 * 3600.0  # a build folder untouched this long is left over even if its PID was reused


def _clean_other_keys(cache: Path, key: str):
    """Remove build folders a killed prepare of another key left: only while no prepare of
    that key runs (its lock is free), and when the folder's process is dead or the folder is
    older than STALE_BUILD_S."""
    now = time.time()
    for p in cache.glob(".tmp-*"):
        owner = _temp_owner(p)
        if owner is None or owner[0] == key:
            continue
        try:
            old = now - p.stat().st_mtime > STALE_BUILD_S
        except FileNotFoundError:
            continue
        if pid_alive(owner[1]) and not old:
            continue
        lock_path = cache / f".lock-{owner[0]}"
        try:
            fd = os.open(lock_path, os.O_RDONLY)
        except FileNotFoundError:
            fd = None  # never locked on this file system: no prepare of it runs
        try:
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            shutil.rmtree(p, ignore_errors=True)
        except BlockingIOError:
            continue  # a prepare of that key runs: it cleans its own folders
        finally:
            if fd is not None:
                os.close(fd)


def _workers() -> int:
    return max(1, min(4, cores()))


def shard_digest(path) -> dict:
    """Size and crc32 of the first and last 64 KiB of a shard: cheap to check on every reuse,
    and it catches truncated, missing and overwritten shards."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        crc = zlib.crc32(f.read(DIGEST_BYTES))
        f.seek(max(0, size - DIGEST_BYTES))
        crc = zlib.crc32(f.read(DIGEST_BYTES), crc)
    return {"bytes": size, "crc32": crc}


def cache_problem(prepared_dir) -> str | None:
    """Why a prepared folder with a manifest cannot be reused (None: its shards are intact)."""
    prepared_dir = Path(prepared_dir)
    try:
        m = json.loads((prepared_dir / MANIFEST).read_text())
        digests, shards = m.get("shard_digests"), m["shards"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return f"{MANIFEST} is unreadable"
    if digests is None:
        return "its manifest predates shard checksums"
    for name in (n for split in SPLITS for n in shards.get(split, [])):
        path = prepared_dir / name
        if not path.is_file():
            return f"shard '{name}' is missing"
        want, got = digests.get(name) or {}, shard_digest(path)
        if got["bytes"] != want.get("bytes"):
            return f"shard '{name}' is damaged ({got['bytes']} bytes, {want.get('bytes')} expected)"
        if got["crc32"] != want.get("crc32"):
            return f"shard '{name}' is damaged (checksum mismatch)"
    return None


def _reusable(dest: Path) -> bool:
    return (dest / MANIFEST).is_file() and cache_problem(dest) is None


def _replace_dir(tmp: Path, dest: Path, key: str) -> None:
    """Move the built folder `tmp` onto `dest`; an old `dest` is moved aside first, so it is
    missing only between two renames (a reader with open shards keeps reading them)."""
    old = None
    if dest.exists():
        old = dest.with_name(f".tmp-replaced-{key}-{os.getpid()}-old")
        shutil.rmtree(old, ignore_errors=True)
        os.rename(dest, old)
    os.rename(tmp, dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def prepare_dataset(cfg, progress: bool = True) -> Path:
    """Tile ``cfg.data`` into ``<cache_dir>/<reader>-<key>/`` (reused when complete and intact,
    rebuilt when a shard is damaged); return it."""
    samples = read_samples(cfg.data)
    key = dataset_key(cfg.data, samples)
    cache = Path(cfg.data.cache_dir)
    dest = cache / f"{cfg.data.reader}-{key}"
    if _reusable(dest):
        return dest
    cache.mkdir(parents=True, exist_ok=True)
    _clean_other_keys(cache, key)
    # one builder per key: a concurrent prepare of the same data waits, then reuses the result
    with open(cache / f".lock-{key}", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (dest / MANIFEST).is_file():
            problem = cache_problem(dest)
            if problem is None:
                return dest
            print(f"prepared dataset '{dest}': {problem}: rebuilding it")
        _clean_stale(cache, key)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{cfg.data.reader}-{key}-{os.getpid()}-", dir=cache))
        os.chmod(tmp, default_mode(directory=True))  # mkdtemp's 0700 would hide it from other users
        try:
            _build(cfg, samples, key, tmp, progress)
            _replace_dir(tmp, dest, key)  # a folder without manifest is never trusted
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return dest


def _build(cfg, samples, key, out: Path, progress: bool):
    from tqdm import tqdm

    t0 = time.time()
    tile_cfg = cfg.data.tile
    grid = TileGrid(tile_cfg.size, tile_cfg.overlap)
    parts = split_samples(samples, cfg.data.split)
    counts = {k: {"defect": 0, "good": 0} for k in SPLITS}
    tiles, shards, sources, digests = [], {k: [] for k in SPLITS}, {}, {}
    bar = tqdm(total=len(samples), desc="prepare", unit="img", disable=not progress, dynamic_ncols=True)
    with ThreadPoolExecutor(_workers()) as pool:
        for split in SPLITS:
            writer, in_shard = None, 0
            for sample, (records, rows, hw) in zip(parts[split], pool.map(lambda s: _tile_sample(s, grid, tile_cfg), parts[split])):
                for rec, row in zip(records, rows):
                    if writer is None or in_shard >= SHARD_TILES:
                        if writer is not None:
                            writer.close()
                            digests[name] = shard_digest(out / name)
                        name = f"{split}-{len(shards[split]):05d}.tfrecord"
                        shards[split].append(name)
                        writer, in_shard = tf.io.TFRecordWriter(str(out / name)), 0
                    writer.write(rec)
                    in_shard += 1
                    counts[split]["defect" if row["label"] else "good"] += 1
                    tiles.append({"split": split, **row})
                sources[sample.id] = {"path": sample.path, "group": sample.group, "split": split,
                                      "height": hw[0], "width": hw[1], "tiles": len(rows)}
                bar.update(1)
            if writer is not None:
                writer.close()
                digests[name] = shard_digest(out / name)
    bar.close()
    manifest = {
        "format": FORMAT_VERSION,
        "key": key,
        "tile_size": int(tile_cfg.size),
        "overlap": int(tile_cfg.overlap),
        "counts": counts,
        "images": {k: len(parts[k]) for k in SPLITS},
        "shards": shards,
        "shard_digests": digests,
        "config": _data_settings(cfg.data),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "prepare_seconds": round(time.time() - t0, 2),
        "sources": sources,
        "tiles": tiles,
    }
    atomic_write_text(out / MANIFEST, json.dumps(manifest))  # written last: marks the folder complete


# ------------------------------------------------------------------------ reading


def read_manifest(prepared_dir) -> dict:
    path = Path(prepared_dir) / MANIFEST
    if not path.is_file():
        raise DataError(f"'{prepared_dir}' is not a prepared dataset (no {MANIFEST}): run python -m kerasxai.prepare first.")
    return json.loads(path.read_text())


def tile_counts(prepared_dir) -> dict:
    """Number of tiles of every split, ``{split: n}`` (one read of the manifest)."""
    return {split: int(sum(c.values())) for split, c in read_manifest(prepared_dir)["counts"].items()}


def count_tiles(prepared_dir, split: str) -> int:
    """Number of tiles of ``split`` (from the manifest)."""
    counts = tile_counts(prepared_dir)
    if split not in counts:
        raise DataError(f"split '{split}' unknown: use one of {', '.join(SPLITS)}.")
    return counts[split]


_FEATURES = {
    "image": tf.io.FixedLenFeature([], tf.string),
    "mask": tf.io.FixedLenFeature([], tf.string),
    "vh": tf.io.FixedLenFeature([], tf.int64),
    "vw": tf.io.FixedLenFeature([], tf.int64),
    "label": tf.io.FixedLenFeature([], tf.int64),
    "source": tf.io.FixedLenFeature([], tf.string),
    "y": tf.io.FixedLenFeature([], tf.int64),
    "x": tf.io.FixedLenFeature([], tf.int64),
}


def _decode_image(data, size):
    # channels=3 turns a gray (1-channel) PNG into RGB while decoding (cheaper than broadcasting)
    return tf.ensure_shape(tf.io.decode_png(data, channels=3), [size, size, 3])


_SHIFTS = tf.constant([7, 6, 5, 4, 3, 2, 1, 0], tf.uint8)


def _unpack_mask(data, size):
    packed = tf.io.decode_raw(data, tf.uint8)
    bits = tf.bitwise.bitwise_and(tf.bitwise.right_shift(packed[:, None], _SHIFTS), 1)
    return tf.reshape(tf.reshape(bits, [-1])[: size * size], [size, size])


def _decoder(size: int, with_mask: bool = True):
    rng = tf.range(size)

    def decode(record):
        f = tf.io.parse_single_example(record, _FEATURES)
        out = {"image": _decode_image(f["image"], size)}
        if with_mask:
            out["mask"] = _unpack_mask(f["mask"], size)
            valid = (rng[:, None] < tf.cast(f["vh"], tf.int32)) & (rng[None, :] < tf.cast(f["vw"], tf.int32))
            out["valid"] = tf.cast(valid, tf.uint8)
        out["label"] = tf.cast(f["label"], tf.float32)
        out["source"] = f["source"]
        out["y"] = tf.cast(f["y"], tf.int32)
        out["x"] = tf.cast(f["x"], tf.int32)
        return out

    return decode


def _label_only(record):
    f = tf.io.parse_single_example(record, {"label": tf.io.FixedLenFeature([], tf.int64)})
    return f["label"]


@dataclass(frozen=True)
class TileSplit:
    """One split of a prepared folder: its shard files (manifest order), tile size and tile
    counts by label (``{"defect": n, "good": n}``). Nothing is read until :meth:`dataset` or
    :meth:`records` is iterated, so a pipeline can also work on the encoded records
    (:func:`training_dataset` shuffles them before decoding)."""

    files: tuple[str, ...]
    tile_size: int
    counts: dict = field(hash=False)

    def records(self) -> tf.data.Dataset:
        """The encoded ``tf.train.Example`` records, in manifest order."""
        return tf.data.TFRecordDataset(list(self.files))

    def decoder(self, with_mask: bool = True):
        """The function that decodes one record into the dict :meth:`dataset` yields."""
        return _decoder(self.tile_size, with_mask)

    def dataset(self) -> tf.data.Dataset:
        """Unbatched dicts: image uint8 (S,S,3), mask/valid uint8 (S,S), label float32, source, y, x."""
        return self.records().map(self.decoder(), num_parallel_calls=AUTOTUNE, deterministic=True)


def open_split(prepared_dir, split: str) -> TileSplit:
    """The :class:`TileSplit` of `split` from the manifest. An empty split is a ``DataError``."""
    m = read_manifest(prepared_dir)
    if split not in SPLITS:
        raise DataError(f"split '{split}' unknown: use one of {', '.join(SPLITS)}.")
    n = sum(m["counts"][split].values())
    if n == 0:
        raise DataError(
            f"split '{split}' of '{prepared_dir}' is empty ({m['images'][split]} of {sum(m['images'].values())} images; "
            f"fractions {m['config']['split']}): add images or change data.split."
        )
    files = tuple(str(Path(prepared_dir) / f) for f in m["shards"][split])
    return TileSplit(files, int(m["tile_size"]), dict(m["counts"][split]))


def load_split(prepared_dir, split: str) -> tf.data.Dataset:
    """Unbatched dicts: image uint8 (S,S,3), mask/valid uint8 (S,S), label float32, source, y, x.

    Tiles come in manifest order (deterministic). An empty split is a ``DataError``.
    """
    return open_split(prepared_dir, split).dataset()


# ------------------------------------------------------------------------ training / eval


def random_flip(example: dict, seed) -> dict:
    """Flip ``image`` and (when present) ``mask``/``valid`` together: horizontal and vertical
    flips, each with p=0.5, drawn from the stateless ``seed`` (shape [2] int)."""
    u = tf.random.stateless_uniform([2], seed=seed)
    out = dict(example)
    for k in ("image", "mask", "valid"):
        if k in out:
            v = tf.convert_to_tensor(out[k])
            v = tf.cond(u[0] < 0.5, lambda v=v: tf.reverse(v, axis=[1]), lambda v=v: v)
            v = tf.cond(u[1] < 0.5, lambda v=v: tf.reverse(v, axis=[0]), lambda v=v: v)
            out[k] = v
    return out


def _balanced(pos, neg, seed):
    return tf.data.Dataset.sample_from_datasets(
        [pos.repeat(), neg], weights=[0.5, 0.5], seed=seed, stop_on_empty_dataset=True, rerandomize_each_iteration=True
    )


def _records(files, shuffle, seed, keep=None):
    """Records of ``files``: in manifest order, or (``shuffle``) interleaved from shuffled files
    through a shuffle buffer; optionally only those of label ``keep``."""
    if shuffle:
        ds = tf.data.Dataset.from_tensor_slices(files).shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
        ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(len(files), 8), block_length=1,
                           num_parallel_calls=AUTOTUNE, deterministic=False)
    else:
        ds = tf.data.TFRecordDataset(files)
    if keep is not None:
        ds = ds.filter(lambda r: tf.equal(_label_only(r), keep))
    if shuffle:
        ds = ds.shuffle(4096, seed=seed, reshuffle_each_iteration=True)
    return ds


def augment_image(image, seed, aug) -> tf.Tensor:
    """Label-preserving augmentation of one float32 tile (0..255), drawn from the stateless
    ``seed`` (shape [2] int): a random 90-degree rotation (``aug.rot90``), a shift of up to
    ``aug.translate`` pixels with reflected borders, brightness and contrast scaled by up to
    ``aug.brightness`` / ``aug.contrast`` (shares of full scale), clipped to 0..255.

    Defects of inspection tiles are small against the tile, so none of these moves a defect
    out of the tile or changes what it looks like beyond what a camera does.
    """
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 5)
    if aug.rot90:
        k = tf.random.stateless_uniform([], seed=seeds[0], minval=0, maxval=4, dtype=tf.int32)
        image = tf.image.rot90(image, k)
    t = int(aug.translate)
    if t > 0:
        size = tf.shape(image)[:2]
        padded = tf.pad(image, [[t, t], [t, t], [0, 0]], mode="REFLECT")
        off = tf.random.stateless_uniform([2], seed=seeds[1], minval=0, maxval=2 * t + 1, dtype=tf.int32)
        image = tf.slice(padded, [off[0], off[1], 0], [size[0], size[1], -1])
    if aug.contrast > 0:
        c = tf.random.stateless_uniform([], seed=seeds[2], minval=1 - aug.contrast, maxval=1 + aug.contrast)
        mean = tf.reduce_mean(image)
        image = (image - mean) * c + mean
    if aug.brightness > 0:
        b = tf.random.stateless_uniform([], seed=seeds[3], minval=-aug.brightness, maxval=aug.brightness)
        image = image + 255.0 * b
    return tf.clip_by_value(image, 0.0, 255.0)


TEACHER = "teacher"  # a decoded tile's field: a distillation teacher's hard label (0 or 1)


def training_dataset(source, batch_size: int, *, flips: bool = True, shuffle: bool = True, seed: int = 0,
                     balance: bool = False, augment=None):
    """Batches ``(image float32 (B,S,S,3) in 0..255, label float32 (B,1))`` for ``model.fit``;
    tiles that carry a ``teacher`` field (a distillation teacher's hard label) give (B,2): the
    label, then the teacher's.

    Random h/v flips (p=0.5 each, ``random_flip``), the ``augment`` settings of
    :func:`augment_image` (a ``kerasxai.config.AugmentConfig``; None: flips only), shuffling
    reshuffled every epoch, optional ``balance`` (defective tiles oversampled to half of the
    tiles; the epoch ends when the good tiles are used up). Not repeated: Keras counts epochs.
    `source` is a :class:`TileSplit` (its encoded records are shuffled before decoding, which
    is cheap, and masks are not decoded) or a dataset of decoded tiles such as ``load_split``'s.
    """
    if isinstance(source, TileSplit):
        counts = source.counts
        if balance and (counts["defect"] == 0 or counts["good"] == 0):
            raise DataError(f"train.balance needs good and defective tiles, the split has {counts}: set train.balance=false.")
        files = list(source.files)
        if balance:
            ds = _balanced(_records(files, shuffle, seed, 1), _records(files, shuffle, seed + 1, 0), seed)
        else:
            ds = _records(files, shuffle, seed)
        decode = source.decoder(with_mask=False)
    else:
        ds, decode = source, None
        if shuffle:
            ds = ds.shuffle(1024, seed=seed, reshuffle_each_iteration=True)
        if balance:
            lab = lambda e: tf.equal(e["label"], 1.0)  # noqa: E731
            ds = _balanced(ds.filter(lab), ds.filter(lambda e: tf.logical_not(lab(e))), seed)

    def to_xy(e, s=None):
        if decode is not None:
            e = decode(e)
        if s is not None and flips:
            e = random_flip(e, s)
        image = e["image"]
        if s is not None and augment is not None:
            image = augment_image(tf.cast(image, tf.float32), s, augment)
        if TEACHER in e:
            return image, tf.stack([tf.cast(e["label"], tf.float32), tf.cast(e[TEACHER], tf.float32)])
        return image, tf.reshape(e["label"], [1])

    if flips or augment is not None:  # one stateless seed per element: reproducible for `seed`, new every epoch
        rnd = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip((ds, rnd))
    ds = ds.map(to_xy, num_parallel_calls=AUTOTUNE, deterministic=not shuffle)
    ds = ds.batch(batch_size).map(lambda x, y: (tf.cast(x, tf.float32), y), num_parallel_calls=AUTOTUNE)
    return ds.prefetch(AUTOTUNE)


def eval_batches(ds, batch_size: int) -> tf.data.Dataset:
    """Batched dicts (all fields of ``load_split``), in order, no augmentation."""
    return ds.batch(batch_size).prefetch(AUTOTUNE)

