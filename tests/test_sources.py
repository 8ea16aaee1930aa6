"""Readers on small fixtures written here, rasterization at exact pixels, bad-input errors."""

import json
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest

from kerasxai.config import DataConfig
from kerasxai.data.sources import DataError, image_size, read_image, read_samples


def _write(path: Path, img: np.ndarray):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), img)


def _cfg(reader, root, **kw):
    return DataConfig(reader=reader, root=str(root), **kw)


def _expected(h, w, rows, cols):
    m = np.zeros((h, w), np.uint8)
    m[rows, cols] = 1
    return m


def _deeppcb(tmp: Path, boxes=("10 20 15 23 1",), n=1) -> Path:
    base = tmp / "PCBData"
    lines = []
    for i in range(n):
        pid = f"0004100{i}"
        _write(base / "group00041/00041" / f"{pid}_test.jpg", np.full((40, 50), 255, np.uint8))
        _write(base / "group00041/00041" / f"{pid}_temp.jpg", np.full((40, 50), 255, np.uint8))
        (base / "group00041/00041_not").mkdir(parents=True, exist_ok=True)
        (base / "group00041/00041_not" / f"{pid}.txt").write_text("\n".join(boxes) + "\n")
        lines.append(f"group00041/00041/{pid}.jpg group00041/00041_not/{pid}.txt")
    (base / "trainval.txt").write_text("\n".join(lines))
    return tmp


def test_deeppcb_pairs_boxes_and_grayscale(tmp_path):
    root = _deeppcb(tmp_path, n=2)
    samples = read_samples(_cfg("deeppcb", root))
    assert [s.id for s in samples] == ["00041000_test", "00041000_temp", "00041001_test", "00041001_temp"]
    assert samples[0].group == samples[1].group == "00041000"
    img, mask = samples[0].load()
    assert img.shape == (40, 50, 3) and img.dtype == np.uint8  # grayscale -> 3 channels
    # x1 y1 x2 y2 = 10 20 15 23: columns 10..14, rows 20..22
    np.testing.assert_array_equal(mask, _expected(40, 50, slice(20, 23), slice(10, 15)))
    assert samples[1].load_mask().sum() == 0  # template: defect-free


def test_voc_xml_one_based_inclusive(tmp_path):
    _write(tmp_path / "images/Open_circuit/a.jpg", np.zeros((30, 40, 3), np.uint8))
    _write(tmp_path / "images/Short/b.png", np.zeros((30, 40), np.uint8))
    _write(tmp_path / "images/good/c.jpg", np.zeros((30, 40, 3), np.uint8))
    xml = """<annotation><filename>{f}</filename><size><width>40</width><height>30</height><depth>3</depth></size>
      <object><name>{c}</name><bndbox><xmin>3</xmin><ymin>5</ymin><xmax>7</xmax><ymax>6</ymax></bndbox></object>
      <object><name>{c}</name><bndbox><xmin>40</xmin><ymin>30</ymin><xmax>40</xmax><ymax>30</ymax></bndbox></object>
      <object><name>{c}</name><bndbox><xmin>0</xmin><ymin>1</ymin><xmax>1</xmax><ymax>1</ymax></bndbox></object>
    </annotation>"""
    for c, f in (("Open_circuit", "a"), ("Short", "b")):
        (tmp_path / "Annotations" / c).mkdir(parents=True)
        (tmp_path / "Annotations" / c / f"{f}.xml").write_text(xml.format(f=f, c=c))
    samples = {s.id: s for s in read_samples(_cfg("voc_xml", tmp_path))}
    assert set(samples) == {"Open_circuit/a", "Short/b", "good/c"}
    want = _expected(30, 40, slice(4, 6), slice(2, 7))  # 1-based inclusive: cols 3..7 -> 2..6
    want[29, 39] = 1  # a 1-pixel box at the bottom-right corner
    want[0, 0] = 1  # xmin 0 (off-by-one export) is read as 1
    for key in ("Open_circuit/a", "Short/b"):
        np.testing.assert_array_equal(samples[key].load_mask(), want)
    assert samples["good/c"].load_mask().sum() == 0
    assert samples["Short/b"].load_image().shape == (30, 40, 3)


def test_coco_single_file_polygons_boxes(tmp_path):
    _write(tmp_path / "images/x.png", np.zeros((20, 30, 3), np.uint8))
    _write(tmp_path / "images/y.png", np.zeros((20, 30, 3), np.uint8))
    doc = {
        "images": [{"id": 1, "file_name": "x.png", "height": 20, "width": 30},
                   {"id": 2, "file_name": "y.png", "height": 20, "width": 30}],
        "annotations": [
            {"image_id": 1, "category_id": 1, "bbox": [2, 3, 4, 5]},
            {"image_id": 2, "category_id": 2, "bbox": [0, 0, 9, 9],
             "segmentation": [[2, 3, 6, 3, 6, 8, 2, 8]]},
        ],
        "categories": [{"id": 1, "name": "scratch"}, {"id": 2, "name": "dent"}],
    }
    (tmp_path / "ann.json").write_text(json.dumps(doc))
    s = {x.id: x for x in read_samples(_cfg("coco", tmp_path, options={"annotations": "ann.json", "images": "images"}))}
    np.testing.assert_array_equal(s["images/x"].load_mask(), _expected(20, 30, slice(3, 8), slice(2, 6)))
    # polygon wins over the box; vertices are pixel indices, outline included
    np.testing.assert_array_equal(s["images/y"].load_mask(), _expected(20, 30, slice(3, 9), slice(2, 7)))


def test_coco_one_json_per_image_triangle(tmp_path):
    _write(tmp_path / "g1.png", np.zeros((20, 20), np.uint8))
    doc = {"images": [{"id": 7, "file_name": "g1.png"}],
           "annotations": [{"image_id": 7, "bbox": [0, 0, 1, 1], "segmentation": [[0, 0, 10, 0, 0, 10]]}]}
    (tmp_path / "g1.json").write_text(json.dumps(doc))
    (s,) = read_samples(_cfg("coco", tmp_path))
    m = s.load_mask()
    tri = np.add.outer(np.arange(20), np.arange(20)) <= 10  # x + y <= 10
    np.testing.assert_array_equal(m.astype(bool), tri)


def test_coco_compressed_rle_rejected(tmp_path):
    _write(tmp_path / "g.png", np.zeros((8, 8), np.uint8))
    doc = {"images": [{"id": 1, "file_name": "g.png"}],
           "annotations": [{"image_id": 1, "segmentation": {"size": [8, 8], "counts": "abc"}}]}
    (tmp_path / "g.json").write_text(json.dumps(doc))
    (s,) = read_samples(_cfg("coco", tmp_path))
    with pytest.raises(DataError, match="compressed RLE"):
        s.load_mask()


def test_labelme_polygon_rectangle(tmp_path):
    _write(tmp_path / "a.jpg", np.zeros((20, 30, 3), np.uint8))
    _write(tmp_path / "b.jpg", np.zeros((20, 30, 3), np.uint8))  # no JSON: good image
    doc = {"imagePath": "a.jpg", "imageHeight": 20, "imageWidth": 30, "shapes": [
        {"label": "crack", "points": [[2, 3], [6, 3], [6, 8], [2, 8]], "shape_type": "polygon"},
        {"label": "hole", "points": [[25, 15], [20, 12]], "shape_type": "rectangle"},
    ]}
    (tmp_path / "a.json").write_text(json.dumps(doc))
    s = {x.id: x for x in read_samples(_cfg("labelme", tmp_path))}
    want = _expected(20, 30, slice(3, 9), slice(2, 7))
    want[12:16, 20:26] = 1  # rectangle corners are inclusive pixel indices, any order
    np.testing.assert_array_equal(s["a"].load_mask(), want)
    assert s["b"].load_mask().sum() == 0


def test_mask_dir_mvtec_layout_and_threshold(tmp_path):
    img = np.zeros((16, 16, 3), np.uint8)
    _write(tmp_path / "test/crack/000.png", img)
    _write(tmp_path / "test/good/000.png", img)
    soft = np.zeros((16, 16), np.uint8)
    soft[2:5, 3:9] = 255
    soft[6, 6] = 100  # anti-aliased edge below the threshold
    soft[7, 7] = 200
    _write(tmp_path / "ground_truth/crack/000_mask.png", soft)
    cfg = _cfg("mask_dir", tmp_path, options={"images": "test", "masks": "ground_truth"})
    s = {x.id: x for x in read_samples(cfg)}
    assert set(s) == {"crack/000", "good/000"}
    want = _expected(16, 16, slice(2, 5), slice(3, 9))
    want[7, 7] = 1
    np.testing.assert_array_equal(s["crack/000"].load_mask(), want)
    assert s["good/000"].load_mask().sum() == 0  # no mask -> defect-free
    cfg.mask_threshold = 50
    s = {x.id: x for x in read_samples(cfg)}
    assert s["crack/000"].load_mask()[6, 6] == 1


def test_mask_dir_masks_beside_images_01(tmp_path):
    _write(tmp_path / "a.png", np.zeros((8, 8, 3), np.uint8))
    m = np.zeros((8, 8), np.uint8)
    m[1, 2] = 1
    _write(tmp_path / "a_mask.png", m)
    cfg = _cfg("mask_dir", tmp_path, mask_threshold=0)
    (s,) = read_samples(cfg)  # the mask file is not listed as an image
    assert s.id == "a" and s.load_mask().sum() == 1 and s.load_mask()[1, 2] == 1


def test_synthetic_is_seeded_and_masks_match():
    cfg = _cfg("synthetic", "", options={"count": 6, "height": 48, "width": 64, "seed": 3})
    a, b = read_samples(cfg), read_samples(cfg)
    assert len(a) == 6
    ia, ma = a[2].load()
    ib, mb = b[2].load()
    np.testing.assert_array_equal(ia, ib)
    np.testing.assert_array_equal(ma, mb)
    assert ia.shape == (48, 64, 3) and ma.shape == (48, 64)
    assert any(s.load_mask().any() for s in a) and set(np.unique(ma)) <= {0, 1}


def test_max_images(tmp_path):
    root = _deeppcb(tmp_path, n=3)
    assert len(read_samples(_cfg("deeppcb", root, max_images=4))) == 4


# ---- the five bad inputs: one clear DataError each, naming the file/key


def test_missing_image(tmp_path):
    root = _deeppcb(tmp_path)
    missing = tmp_path / "PCBData/group00041/00041/00041000_test.jpg"
    missing.unlink()
    with pytest.raises(DataError, match="00041000_test.jpg' not found"):
        read_samples(_cfg("deeppcb", root))


def test_corrupt_image(tmp_path):
    root = _deeppcb(tmp_path)
    bad = tmp_path / "PCBData/group00041/00041/00041000_test.jpg"
    bad.write_bytes(b"not a jpeg at all")
    (s, _) = read_samples(_cfg("deeppcb", root))
    with pytest.raises(DataError, match="00041000_test.jpg' could not be decoded"):
        s.load()


@pytest.mark.parametrize("box", ["10 20 51 23 1", "-3 2 5 5 1", "10 20 15 41 1"])
def test_box_outside_image(tmp_path, box):
    root = _deeppcb(tmp_path, boxes=(box,))
    (s, _) = read_samples(_cfg("deeppcb", root))
    with pytest.raises(DataError, match="00041000.txt.*outside the 50x40 image"):
        s.load_mask()


def test_empty_dataset(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(DataError, match="yields no images"):
        read_samples(_cfg("mask_dir", tmp_path, options={"images": "images"}))


def test_unknown_reader_and_option(tmp_path):
    with pytest.raises(DataError, match="data.reader 'pascal' is unknown"):
        read_samples(_cfg("pascal", tmp_path))
    with pytest.raises(DataError, match="data.options.colour is not an option of reader 'synthetic'"):
        read_samples(_cfg("synthetic", "", options={"colour": 1}))


def test_missing_root(tmp_path):
    with pytest.raises(DataError, match="is not a folder"):
        read_samples(_cfg("labelme", tmp_path / "nope"))


def test_mask_dir_16_bit_masks_are_scaled_to_8_bits(tmp_path):
    _write(tmp_path / "a.png", np.zeros((8, 8, 3), np.uint8))
    m = np.full((8, 8), 300, np.uint16)  # background noise: 300/65535 is ~1 on the 0..255 scale
    m[1, 2] = 65535
    _write(tmp_path / "a_mask.png", m)
    (s,) = read_samples(_cfg("mask_dir", tmp_path))
    assert s.load_mask().sum() == 1 and s.load_mask()[1, 2] == 1
    _write(tmp_path / "a_mask.png", (m > 300).astype(np.uint16))  # a 16-bit 0/1 mask at threshold 0
    (s,) = read_samples(_cfg("mask_dir", tmp_path, mask_threshold=0))
    assert s.load_mask().sum() == 1 and s.load_mask()[1, 2] == 1


@pytest.mark.parametrize("ext", [".png", ".jpg", ".bmp", ".tif", ".webp"])
def test_image_size_reads_headers(ext):
    img = np.zeros((37, 53, 3), np.uint8)
    ok, buf = cv2.imencode(ext, img)
    assert ok and image_size(buf) == (53, 37)


def test_image_size_of_other_bytes_is_none():
    assert image_size(np.frombuffer(b"\xff\xd8\xff\xe0 truncated", np.uint8)) is None
    assert image_size(np.zeros(0, np.uint8)) is None


def test_pixel_cap_refuses_before_decoding(tmp_path, monkeypatch):
    huge = tmp_path / "huge.png"  # a header claiming 20000x20000; decoding it would cost GBs
    huge.write_bytes(b"\x89PNG\r\n\x1a\n" + struct.pack(">I4sII", 13, b"IHDR", 20000, 20000) + b"\x08\x00\x00\x00\x00")
    with pytest.raises(DataError, match=r"huge\.png' is 20000x20000 .*KERASXAI_MAX_PIXELS"):
        read_image(str(huge))
    _write(tmp_path / "a.png", np.zeros((40, 50, 3), np.uint8))
    monkeypatch.setenv("KERASXAI_MAX_PIXELS", "1999")
    with pytest.raises(DataError, match=r"a\.png' is 50x40"):
        read_image(str(tmp_path / "a.png"))
    monkeypatch.setenv("KERASXAI_MAX_PIXELS", "2000")
    assert read_image(str(tmp_path / "a.png")).shape == (40, 50, 3)
    monkeypatch.setenv("KERASXAI_MAX_PIXELS", "lots")
    with pytest.raises(DataError, match="KERASXAI_MAX_PIXELS='lots'"):
        read_image(str(tmp_path / "a.png"))


def test_samples_name_their_annotation_file(tmp_path):
    root = _deeppcb(tmp_path / "deeppcb")
    test, temp = read_samples(_cfg("deeppcb", root))
    assert test.annotation == str(root / "PCBData/group00041/00041_not/00041000.txt") and temp.annotation == ""
    img = np.zeros((8, 8, 3), np.uint8)
    _write(tmp_path / "voc/images/a.png", img)
    _write(tmp_path / "voc/images/b.png", img)
    (tmp_path / "voc/Annotations").mkdir(parents=True)
    (tmp_path / "voc/Annotations/a.xml").write_text("<annotation></annotation>")
    s = {x.id: x.annotation for x in read_samples(_cfg("voc_xml", tmp_path / "voc"))}
    assert s == {"a": str(tmp_path / "voc/Annotations/a.xml"), "b": ""}
    _write(tmp_path / "coco/x.png", img)
    (tmp_path / "coco/x.json").write_text(json.dumps({"images": [{"id": 1, "file_name": "x.png"}], "annotations": []}))
    assert [x.annotation for x in read_samples(_cfg("coco", tmp_path / "coco"))] == [str(tmp_path / "coco/x.json")]
    _write(tmp_path / "labelme/a.png", img)
    _write(tmp_path / "labelme/b.png", img)
    (tmp_path / "labelme/a.json").write_text(json.dumps({"imagePath": "a.png", "shapes": []}))
    s = {x.id: x.annotation for x in read_samples(_cfg("labelme", tmp_path / "labelme"))}
    assert s == {"a": str(tmp_path / "labelme/a.json"), "b": ""}
    _write(tmp_path / "masks/a.png", img)
    _write(tmp_path / "masks/b.png", img)
    _write(tmp_path / "masks/a_mask.png", img[..., 0])
    s = {x.id: x.annotation for x in read_samples(_cfg("mask_dir", tmp_path / "masks"))}
    assert s == {"a": str(tmp_path / "masks/a_mask.png"), "b": ""}
    assert all(x.annotation == "" for x in read_samples(_cfg("synthetic", "", options={"count": 2})))
