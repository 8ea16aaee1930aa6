"""Dataset readers: turn an annotated dataset into lazy ``Sample``s (image + binary defect mask).

All defect categories merge into one "defect" class (binary task, as in the study). Readers
only list files (and check that images exist); images are decoded when a sample is loaded.

Pixel conventions for rasterization (x to the right, y down, pixel (0, 0) top-left):
- ``deeppcb``: ``x1 y1 x2 y2`` are 0-based corner coordinates, the box covers columns
  ``x1 .. x2-1`` and rows ``y1 .. y2-1`` (width ``x2 - x1``); ``x2 <= W`` and ``y2 <= H``.
- ``voc_xml``: Pascal VOC boxes are 1-based and inclusive: columns ``xmin-1 .. xmax-1``
  (``xmin``/``ymin`` of 0, a frequent off-by-one in exports, are read as 1).
- ``coco`` boxes ``[x, y, w, h]`` cover columns ``round(x) .. round(x + w) - 1``.
- polygons (``coco``, ``labelme``) and labelme rectangles: vertices are pixel indices; the
  pixels inside or on the outline are defect (``cv2.fillPoly``, as LabelMe's own export does).
A box or polygon reaching outside the image (by more than half a pixel) is a ``DataError``.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import cv2
import numpy as np

from . import synthetic as _synthetic

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
SAMPLE_PREFIX = "sample:"


class DataError(ValueError):
    """Bad input data; the message names the file or key and what to do."""


# ---------------------------------------------------------------------------- Sample


MAX_PIXELS_ENV = "KERASXAI_MAX_PIXELS"
DEFAULT_MAX_PIXELS = 100_000_000


def _be(b, i: int, n: int) -> int:
    return int.from_bytes(bytes(b[i:i + n]), "big")


def _le(b, i: int, n: int) -> int:
    return int.from_bytes(bytes(b[i:i + n]), "little")


def _jpeg_size(b) -> Optional[tuple[int, int]]:
    """Walk the JPEG markers up to the first start-of-frame (SOF0..SOF15 but DHT/JPG/DAC)."""
    i = 2
    while i + 9 < len(b):
        if b[i] != 0xFF:
            return None
        m = b[i + 1]
        if m == 0xFF:  # fill byte
            i += 1
            continue
        if m == 0x01 or 0xD0 <= m <= 0xD8:  # markers without a length
            i += 2
            continue
        if m in (0xD9, 0xDA):  # end of image / start of scan before any frame header
            return None
        if 0xC0 <= m <= 0xCF and m not in (0xC4, 0xC8, 0xCC):
            return _be(b, i + 7, 2), _be(b, i + 5, 2)
        i += 2 + _be(b, i + 2, 2)
    return None


def _tiff_size(b) -> Optional[tuple[int, int]]:
    """ImageWidth (256) and ImageLength (257) of the first IFD of a classic TIFF."""
    rd = _le if bytes(b[:2]) == b"II" else _be
    ifd = rd(b, 4, 4)
    found = {}
    for k in range(rd(b, ifd, 2) if ifd + 2 <= len(b) else 0):
        e = ifd + 2 + 12 * k
        if e + 12 > len(b):
            break
        tag, kind = rd(b, e, 2), rd(b, e + 2, 2)
        if tag in (256, 257) and kind in (3, 4):
            found[tag] = rd(b, e + 8, 2 if kind == 3 else 4)
    return (found[256], found[257]) if len(found) == 2 else None


def _bmp_size(b) -> tuple[int, int]:
    if _le(b, 14, 4) == 12:  # OS/2 core header: 16-bit sizes
        return _le(b, 18, 2), _le(b, 20, 2)
    w, h = (int.from_bytes(bytes(b[i:i + 4]), "little", signed=True) for i in (18, 22))
    return abs(w), abs(h)  # a negative height means top-down rows


def _webp_size(b) -> Optional[tuple[int, int]]:
    chunk = bytes(b[12:16])
    if chunk == b"VP8 " and len(b) >= 30:
        return _le(b, 26, 2) & 0x3FFF, _le(b, 28, 2) & 0x3FFF
    if chunk == b"VP8L" and len(b) >= 25:
        bits = _le(b, 21, 4)
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X" and len(b) >= 30:
        return _le(b, 24, 3) + 1, _le(b, 27, 3) + 1
    return None


def image_size(data) -> Optional[tuple[int, int]]:
    """``(width, height)`` from the header of encoded PNG, JPEG, BMP, TIFF or WebP bytes, without
    decoding; None for other or truncated headers."""
    b = memoryview(data).cast("B")  # not sliced: a TIFF directory may sit at the end
    head = bytes(b[:16])
    try:
        if head.startswith(b"\x89PNG\r\n\x1a\n") and len(b) >= 24:
            return _be(b, 16, 4), _be(b, 20, 4)
        if head.startswith(b"\xff\xd8"):
            return _jpeg_size(b)
        if head.startswith(b"BM") and len(b) >= 26:
            return _bmp_size(b)
        if head[:4] in (b"II*\x00", b"MM\x00*") and len(b) >= 8:
            return _tiff_size(b)
        if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
            return _webp_size(b)
    except IndexError:
        return None
    return None


def max_pixels() -> int:
    """The pixel cap on decoded images: ``KERASXAI_MAX_PIXELS`` or 100 megapixels."""
    raw = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(float(raw))
    except ValueError:
        value = 0
    if value < 1:
        raise DataError(f"{MAX_PIXELS_ENV}='{raw}' is not a positive number of pixels: set it like 200000000 or unset it.")
    return value


def oversize_message(path, data) -> Optional[str]:
    """Why the encoded image ``data`` of ``path`` is too large to decode, or None when it is not.

    A small compressed file can decode to gigabytes; the header says the size first."""
    size = image_size(data)
    cap = max_pixels()
    if size is None or size[0] * size[1] <= cap:
        return None
    w, h = size
    return (f"image '{path}' is {w}x{h} ({w * h / 1e6:.1f} megapixels), above the cap of {cap / 1e6:g} megapixels: "
            f"shrink it, or raise the cap with {MAX_PIXELS_ENV}=<pixels>.")


def _decode(path: str, flags: int, undecodable: str) -> np.ndarray:
    """The file at ``path`` decoded by OpenCV with ``flags``; DataError when it is over the
    pixel cap, empty or undecodable (``undecodable`` is that last message)."""
    data = np.fromfile(path, np.uint8)
    too_big = oversize_message(path, data)
    if too_big:
        raise DataError(too_big)
    decoded = cv2.imdecode(data, flags) if data.size else None
    if decoded is None:
        raise DataError(undecodable)
    return decoded


def read_image(path: str) -> np.ndarray:
    """Decode ``path`` to (H, W, 3) uint8 RGB (grayscale replicated, alpha dropped)."""
    if not os.path.isfile(path):
        raise DataError(f"image '{path}' not found: fix the path or remove it from the annotations.")
    image = _decode(path, cv2.IMREAD_COLOR,
                    f"image '{path}' could not be decoded (corrupt or unsupported format): replace or remove it.")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


@dataclass(frozen=True)
class Sample:
    """One source image. ``load_image``/``load_mask`` decode lazily; ``load`` decodes once.

    ``annotation`` is the file the mask is read from ("" when there is none: a defect-free
    image, or a mask made in memory); the prepared dataset's key covers its size and time."""

    id: str
    group: str
    path: str
    mask_fn: Optional[Callable[[int, int], np.ndarray]] = field(default=None, compare=False, repr=False)
    image_fn: Optional[Callable[[], np.ndarray]] = field(default=None, compare=False, repr=False)
    annotation: str = ""

    def load_image(self) -> np.ndarray:
        return self.image_fn() if self.image_fn is not None else read_image(self.path)

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        """``(image (H, W, 3) uint8 RGB, mask (H, W) uint8 {0, 1})``."""
        image = self.load_image()
        h, w = image.shape[:2]
        if self.mask_fn is None:
            return image, np.zeros((h, w), np.uint8)
        mask = np.asarray(self.mask_fn(h, w), np.uint8)
        if mask.shape != (h, w):
            raise DataError(f"mask of '{self.path}' is {mask.shape[1]}x{mask.shape[0]} but the image is {w}x{h}: fix the mask file.")
        return image, mask

    def load_mask(self) -> np.ndarray:
        return self.load()[1]


# ------------------------------------------------------------------- rasterization


def _check_inside(x0, y0, x1, y1, w, h, where: str):
    if x0 < -0.5 or y0 < -0.5 or x1 > w + 0.5 or y1 > h + 0.5 or x1 < x0 or y1 < y0:
        raise DataError(
            f"{where}: box/shape ({x0}, {y0}, {x1}, {y1}) lies outside the {w}x{h} image or is inverted: "
            "fix or remove this annotation."
        )


def _fill_box(mask, c0, r0, c1, r1):
    """Fill columns c0..c1-1 and rows r0..r1-1 (half-open, clipped)."""
    h, w = mask.shape
    mask[max(r0, 0):min(r1, h), max(c0, 0):min(c1, w)] = 1


def _fill_polygon(mask, points, where: str):
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    if len(pts) < 3:
        raise DataError(f"{where}: a polygon needs at least 3 points, got {len(pts)}: fix or remove it.")
    h, w = mask.shape
    _check_inside(pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max() + 1, pts[:, 1].max() + 1, w, h, where)
    cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1)


def boxes_mask(h, w, boxes, where: str, convention: str) -> np.ndarray:
    """Mask of boxes. ``convention``: "corners" (x1 y1 x2 y2, end exclusive), "voc" (1-based
    inclusive), "xywh" (COCO)."""
    mask = np.zeros((h, w), np.uint8)
    for b in boxes:
        a, b_, c, d = (float(v) for v in b)
        if convention == "voc":  # a 0 (a frequent off-by-one in VOC exports) means the first pixel
            x0, y0, x1, y1 = max(a, 1) - 1, max(b_, 1) - 1, c, d
        elif convention == "xywh":
            x0, y0, x1, y1 = a, b_, a + c, b_ + d
        else:
            x0, y0, x1, y1 = a, b_, c, d
        _check_inside(x0, y0, x1, y1, w, h, where)
        c0, r0 = int(round(x0)), int(round(y0))
        _fill_box(mask, c0, r0, max(int(round(x1)), c0 + 1), max(int(round(y1)), r0 + 1))
    return mask


# ------------------------------------------------------------------------ readers


def _root(root) -> Path:
    p = Path(resolve_root(str(root)))
    if not p.is_dir():
        raise DataError(f"data.root '{root}' is not a folder: set data.root to the dataset folder.")
    return p


def resolve_root(root: str) -> str:
    """``sample:NAME`` -> the bundled ``kerasxai/sample_data/NAME`` folder; other paths unchanged."""
    if root.startswith(SAMPLE_PREFIX):
        name = root[len(SAMPLE_PREFIX):]
        base = Path(__file__).resolve().parents[1] / "sample_data"
        path = base / name
        if not path.is_dir():
            have = sorted(p.name for p in base.iterdir()) if base.is_dir() else []
            raise DataError(f"data.root '{root}': no bundled sample '{name}' (have: {', '.join(have) or 'none'}).")
        return str(path)
    return root


def _need_file(path: Path, what: str) -> str:
    if not path.is_file():
        raise DataError(f"{what} '{path}' not found: fix the path or remove it from the annotations.")
    return str(path)


def deeppcb_boxes(ann: str) -> list[list[float]]:
    """The defect boxes ``[x1, y1, x2, y2]`` of a DeepPCB annotation file (type column dropped)."""
    boxes = []
    try:
        with open(ann) as f:
            for n, line in enumerate(f, 1):
                parts = line.replace(",", " ").split()
                if not parts:
                    continue
                if len(parts) < 4:
                    raise DataError(f"annotation '{ann}' line {n}: expected 'x1 y1 x2 y2 type', got '{line.strip()}'.")
                boxes.append([float(v) for v in parts[:4]])
    except FileNotFoundError:
        raise DataError(f"annotation '{ann}' not found: restore it or remove the pair from the list file.") from None
    except ValueError as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"annotation '{ann}': not numbers ({exc}).") from None
    return boxes


def _deeppcb_mask(h, w, ann: str):
    return boxes_mask(h, w, deeppcb_boxes(ann), f"annotation '{ann}'", "corners")


def deeppcb_lists_dir(root: Path) -> Path:
    """The folder of DeepPCB's list files: ``root/PCBData`` when it exists, else ``root``."""
    return root / "PCBData" if (root / "PCBData").is_dir() else root


def deeppcb_pairs(root, list_file: str = "trainval.txt") -> list[tuple[str, str, str, str]]:
    """``(pair id, tested image, template image, annotation)`` paths of a DeepPCB list file.

    ``root`` holds ``PCBData/<list_file>`` (or is ``PCBData``); each line names
    ``groupG/N/NNNNNNNN.jpg groupG/N_not/NNNNNNNN.txt``; the files are ``NNNNNNNN_test.jpg`` and
    ``NNNNNNNN_temp.jpg`` (only the tested image is checked to exist here).
    """
    base = deeppcb_lists_dir(_root(root))
    listing = base / list_file
    if not listing.is_file():
        raise DataError(f"DeepPCB list file '{listing}' not found: set data.root to the folder holding PCBData/.")
    pairs = []
    for n, line in enumerate(listing.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2:
            raise DataError(f"'{listing}' line {n}: expected '<image.jpg> <annotation.txt>', got '{line.strip()}'.")
        img, ann = base / parts[0], base / parts[1]
        stem = img.with_suffix("")
        test = _need_file(Path(f"{stem}_test.jpg"), "DeepPCB image")
        pairs.append((img.stem, test, f"{stem}_temp.jpg", str(ann)))
    return pairs


def read_deeppcb(root, list_file: str = "trainval.txt", templates: bool = True) -> list[Sample]:
    """DeepPCB pairs (Tang et al. 2019): tested image (boxes -> mask) and template (empty mask).

    The files of :func:`deeppcb_pairs`; a pair's two images share the group ``NNNNNNNN`` so they
    land in one split.
    """
    return [s for pair in deeppcb_pairs(root, list_file) for s in deeppcb_pair_samples(*pair, templates=templates)]


def deeppcb_pair_samples(pair: str, test: str, temp: str, ann: str, templates: bool = True) -> list[Sample]:
    """The samples of one :func:`deeppcb_pairs` entry: the tested image, then its template."""
    samples = [Sample(f"{pair}_test", pair, test, functools.partial(_deeppcb_mask, ann=ann), annotation=ann)]
    if templates:
        samples.append(Sample(f"{pair}_temp", pair, _need_file(Path(temp), "DeepPCB template")))
    return samples


@functools.lru_cache(maxsize=8)
def _synthetic_pair(size, seed, index):
    return _synthetic.make_one(size, seed, index)  # image then mask: generate once


def _synthetic_image(size, seed, index):
    return _synthetic_pair(size, seed, index)[0]


def _synthetic_mask(h, w, size, seed, index):
    return _synthetic_pair(size, seed, index)[1]


def read_synthetic(root="", count: int = 64, height: int = 256, width: int = 256, seed: int = 0) -> list[Sample]:
    """Procedural images with exact defect masks (``kerasxai.data.synthetic``); ``root`` unused."""
    size = (int(height), int(width))
    return [
        Sample(
            f"synthetic_{seed}_{i:05d}", f"synthetic_{seed}_{i:05d}", f"synthetic://{seed}/{i}",
            functools.partial(_synthetic_mask, size=size, seed=seed, index=i),
            functools.partial(_synthetic_image, size, seed, i),
        )
        for i in range(int(count))
    ]


def _list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file())


def _find_image(folder: Path, stem: str) -> Optional[Path]:
    for ext in IMAGE_EXTS + tuple(e.upper() for e in IMAGE_EXTS):
        p = folder / f"{stem}{ext}"
        if p.is_file():
            return p
    return None


def _voc_mask(h, w, xml: str):
    try:
        tree = ET.parse(xml)
    except (ET.ParseError, OSError) as exc:
        raise DataError(f"annotation '{xml}' is not valid Pascal VOC XML ({exc}): fix or remove it.") from None
    boxes = []
    for obj in tree.getroot().iter("object"):
        bb = obj.find("bndbox")
        if bb is None:
            continue
        try:
            boxes.append([float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")])
        except (TypeError, ValueError):
            raise DataError(f"annotation '{xml}': a <bndbox> lacks numeric xmin/ymin/xmax/ymax.") from None
    return boxes_mask(h, w, boxes, f"annotation '{xml}'", "voc")


def read_voc_xml(root, images: str = "images", annotations: str = "Annotations") -> list[Sample]:
    """Pascal VOC boxes: ``Annotations/<Class>/<name>.xml`` beside ``images/<Class>/<name>.jpg``.

    Every image under ``images/`` is a sample; one without an XML file has an empty mask. An
    XML file whose image is missing is a ``DataError``.
    """
    root = _root(root)
    img_dir, ann_dir = root / images, root / annotations
    if not ann_dir.is_dir() and not img_dir.is_dir():
        raise DataError(f"voc_xml: neither '{img_dir}' nor '{ann_dir}' exists: set data.root / data.options.")
    by_key = {}
    for p in _list_images(img_dir) if img_dir.is_dir() else []:
        by_key[p.relative_to(img_dir).with_suffix("").as_posix()] = p
    xmls = sorted(ann_dir.rglob("*.xml")) if ann_dir.is_dir() else []
    xml_by_key = {x.relative_to(ann_dir).with_suffix("").as_posix(): x for x in xmls}
    for key, x in xml_by_key.items():
        if key not in by_key:
            found = _find_image((img_dir / key).parent, Path(key).name)
            if found is None:
                raise DataError(
                    f"image for annotation '{x}' not found (looked for '{img_dir / key}.jpg/.png/...'): "
                    "add the image or remove the annotation."
                )
            by_key[key] = found
    samples = []
    for key in sorted(by_key):
        x = xml_by_key.get(key)
        fn = functools.partial(_voc_mask, xml=str(x)) if x is not None else None
        samples.append(Sample(key, key, str(by_key[key]), fn, annotation=str(x) if x is not None else ""))
    return samples


def _rle_decode(rle: dict, h: int, w: int, where: str) -> np.ndarray:
    counts = rle.get("counts")
    if not isinstance(counts, list):
        raise DataError(
            f"{where}: compressed RLE segmentation is not supported: export polygons or uncompressed RLE "
            "(counts as a list of ints)."
        )
    size = rle.get("size", [h, w])
    if list(size) != [h, w]:
        raise DataError(f"{where}: RLE size {size} differs from the image size [{h}, {w}].")
    flat = np.zeros(h * w, np.uint8)
    pos, val = 0, 0
    for c in counts:
        flat[pos:pos + int(c)] = val
        pos += int(c)
        val = 1 - val
    return flat.reshape(w, h).T  # COCO RLE is column-major


def _coco_mask(h, w, anns, where: str):
    mask = np.zeros((h, w), np.uint8)
    for a in anns:
        seg = a.get("segmentation")
        if isinstance(seg, list) and seg:
            polys = seg if isinstance(seg[0], (list, tuple)) else [seg]
            for poly in polys:
                _fill_polygon(mask, poly, where)
        elif isinstance(seg, dict):
            mask |= _rle_decode(seg, h, w, where)
        elif a.get("bbox") is not None:
            mask |= boxes_mask(h, w, [a["bbox"]], where, "xywh")
    return mask


def _load_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"'{path}' is not valid JSON ({exc}): fix or remove it.") from None


def read_coco(root, annotations: Optional[str] = None, images: str = "") -> list[Sample]:
    """COCO JSON: one file (``annotations``, relative to root) or one JSON per image under root.

    Image paths (``file_name``) resolve against ``root/images``, then the JSON's folder (then the
    JSON's stem with an image extension). Segmentation polygons are used when present, else the
    box; uncompressed RLE is decoded, compressed RLE is rejected with a clear message.
    """
    root = _root(root)
    files = [root / annotations] if annotations else sorted(root.rglob("*.json"))
    if annotations and not files[0].is_file():
        raise DataError(f"COCO file '{files[0]}' not found: fix data.options.annotations.")
    samples = []
    for jf in files:
        doc = _load_json(jf)
        if not isinstance(doc, dict) or "annotations" not in doc:
            if annotations:
                raise DataError(f"'{jf}' has no 'annotations' list: not a COCO file.")
            continue
        entries = doc.get("images") or [{"id": None, "file_name": None}]
        by_image = {}
        for a in doc["annotations"]:
            by_image.setdefault(a.get("image_id"), []).append(a)
        for entry in entries:
            anns = doc["annotations"] if entry.get("id") is None else by_image.get(entry["id"], [])
            name = entry.get("file_name")
            cands = [root / images / name, jf.parent / name] if name else []
            path = next((c for c in cands if c.is_file()), None)
            if path is None and len(entries) == 1:
                path = _find_image(jf.parent, jf.stem)
            if path is None:
                raise DataError(f"image '{name or jf.stem}' of '{jf}' not found (looked in {root / images} and {jf.parent}).")
            key = path.relative_to(root).with_suffix("").as_posix() if path.is_relative_to(root) else path.stem
            where = f"annotation '{jf}' (image '{name or path.name}')"
            samples.append(Sample(key, key, str(path), functools.partial(_coco_mask, anns=anns, where=where),
                                  annotation=str(jf)))
    return samples


def _labelme_mask(h, w, json_path: str):
    doc = _load_json(Path(json_path))
    mask = np.zeros((h, w), np.uint8)
    where = f"annotation '{json_path}'"
    for shape in doc.get("shapes", []):
        kind = shape.get("shape_type") or "polygon"
        pts = np.asarray(shape.get("points", []), np.float64).reshape(-1, 2)
        if kind == "polygon":
            _fill_polygon(mask, pts, where)
        elif kind == "rectangle":
            (x0, y0), (x1, y1) = np.min(pts[:2], 0), np.max(pts[:2], 0)
            _check_inside(x0, y0, x1 + 1, y1 + 1, w, h, where)
            _fill_box(mask, int(round(x0)), int(round(y0)), int(round(x1)) + 1, int(round(y1)) + 1)
        elif kind == "circle":
            (cx, cy), (px, py) = pts[0], pts[1]
            r = float(np.hypot(px - cx, py - cy))
            _check_inside(cx - r, cy - r, cx + r + 1, cy + r + 1, w, h, where)
            cv2.circle(mask, (int(round(cx)), int(round(cy))), int(round(r)), 1, -1)
        else:
            raise DataError(f"{where}: shape type '{kind}' is not supported (use polygon, rectangle or circle).")
    return mask


def read_labelme(root) -> list[Sample]:
    """LabelMe JSON (polygons, rectangles, circles) beside the images; images without JSON are good."""
    root = _root(root)
    by_key, ann = {}, {}
    for p in _list_images(root):
        by_key[p.relative_to(root).with_suffix("").as_posix()] = p
    for jf in sorted(root.rglob("*.json")):
        doc = _load_json(jf)
        if not isinstance(doc, dict) or "shapes" not in doc:
            continue
        name = doc.get("imagePath")
        path = (jf.parent / name) if name else None
        if path is None or not path.is_file():
            path = _find_image(jf.parent, jf.stem)
        if path is None:
            raise DataError(f"image '{name or jf.stem}' of LabelMe file '{jf}' not found: add it or remove the JSON.")
        key = path.relative_to(root).with_suffix("").as_posix() if path.is_relative_to(root) else path.stem
        by_key[key] = path
        ann[key] = jf
    return [
        Sample(k, k, str(by_key[k]), functools.partial(_labelme_mask, json_path=str(ann[k])) if k in ann else None,
               annotation=str(ann.get(k, "")))
        for k in sorted(by_key)
    ]


def mask_levels(m: np.ndarray) -> np.ndarray:
    """A decoded mask on the 0..255 scale of ``data.mask_threshold``, whatever its bit depth:
    integers by their type's maximum (uint16: / 257, as images go to 8 bits), floats as 0..1.

    Float32, not rounded, so a 16-bit 0/1 mask stays above a threshold of 0."""
    if m.dtype == np.uint8:
        return m
    if np.issubdtype(m.dtype, np.integer):
        return m.astype(np.float32) * (255.0 / np.iinfo(m.dtype).max)
    return m.astype(np.float32) * 255.0


def _mask_file(h, w, path: str, threshold: int, image: str):
    m = _decode(path, cv2.IMREAD_UNCHANGED, f"mask '{path}' (for '{image}') could not be decoded: replace it.")
    if m.ndim == 3:
        m = m[..., :3].max(axis=2)
    return (mask_levels(m) > threshold).astype(np.uint8)


def read_mask_dir(
    root,
    images: str = "",
    masks: Optional[str] = None,
    mask_pattern: str = "{dir}/{stem}_mask.png",
    missing_mask: str = "empty",
    threshold: int = 127,
) -> list[Sample]:
    """Images with mask images, matched by a file-name pattern.

    Images are listed under ``root/images``; a mask is ``root/masks/<mask_pattern>`` (``masks``
    null: beside the images, i.e. ``root/images``). Pattern fields: ``{dir}`` (the image's folder
    relative to the image root, "." at the top), ``{stem}``, ``{name}``, ``{ext}``. MVTec AD:
    ``images: test, masks: ground_truth`` with the default pattern. An image without a mask is
    defect-free (``missing_mask: empty``) or an error (``missing_mask: error``). Mask pixels
    ``> threshold`` are defect (``data.mask_threshold``; 0/1 masks need 0). Files that are masks
    of other images are not listed as images.
    """
    root = _root(root)
    img_dir = root / images
    mask_dir = root / masks if masks is not None else img_dir
    if not img_dir.is_dir():
        raise DataError(f"mask_dir: image folder '{img_dir}' not found: fix data.root or data.options.images.")
    if missing_mask not in ("empty", "error"):
        raise DataError(f"data.options.missing_mask must be 'empty' or 'error', got '{missing_mask}'.")
    files = _list_images(img_dir)
    pairs = []
    for p in files:
        rel = p.relative_to(img_dir)
        try:
            name = mask_pattern.format(dir=rel.parent.as_posix(), stem=p.stem, name=p.name, ext=p.suffix)
        except (KeyError, IndexError) as exc:
            raise DataError(f"data.options.mask_pattern '{mask_pattern}': unknown field {exc} (use dir, stem, name, ext).") from None
        pairs.append((p, rel, os.path.normpath(mask_dir / name)))
    mask_set = {m for _, _, m in pairs}
    samples = []
    for p, rel, m in pairs:
        if os.path.normpath(p) in mask_set:
            continue
        key = rel.with_suffix("").as_posix()
        if os.path.isfile(m):
            fn, ann = functools.partial(_mask_file, path=m, threshold=int(threshold), image=str(p)), m
        elif missing_mask == "error":
            raise DataError(f"mask '{m}' for image '{p}' not found (data.options.missing_mask: error).")
        else:
            fn, ann = None, ""
        samples.append(Sample(key, key, str(p), fn, annotation=ann))
    return samples


READERS: dict[str, Callable[..., list[Sample]]] = {
    "voc_xml": read_voc_xml,
    "coco": read_coco,
    "labelme": read_labelme,
    "deeppcb": read_deeppcb,
    "mask_dir": read_mask_dir,
    "synthetic": read_synthetic,
}


def read_samples(data_cfg) -> list[Sample]:
    """List the samples of ``data_cfg`` (reader, root, options, max_images, mask_threshold)."""
    name = data_cfg.reader
    if name not in READERS:
        raise DataError(f"data.reader '{name}' is unknown: use one of {', '.join(READERS)}.")
    fn = READERS[name]
    options = dict(data_cfg.options or {})
    params = inspect.signature(fn).parameters
    if "threshold" in params and "threshold" not in options:
        options["threshold"] = data_cfg.mask_threshold
    unknown = [k for k in options if k not in params or k == "root"]
    if unknown:
        allowed = [k for k in params if k != "root"]
        raise DataError(f"data.options.{unknown[0]} is not an option of reader '{name}' (options: {', '.join(allowed) or 'none'}).")
    if name != "synthetic" and not data_cfg.root:
        raise DataError(f"data.root is empty: set it to the dataset folder for reader '{name}'.")
    samples = fn(data_cfg.root, **options)
    if data_cfg.max_images is not None:
        samples = samples[: int(data_cfg.max_images)]
    if not samples:
        raise DataError(f"data.root '{data_cfg.root}' (reader '{name}') yields no images: check the folder and data.options.")
    ids = [s.id for s in samples]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise DataError(f"reader '{name}' found two images with id '{dup}': give images unique names.")
    return samples
