"""The embedded default data: idx reader, Fashion-MNIST mosaics, Yeast (from river)."""

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from wsml.data import DatasetIndex, prepare
from wsml.data.fashion_mosaic import (
    DEFAULT_ROOT,
    build_fashion_mosaic,
    expected_positives,
    load_fashion_mnist,
    make_mosaics,
    read_idx,
)


def write_idx(path: Path, arr: np.ndarray, code: int = 0x08, compress: bool = True, magic: bytes = None) -> Path:
    head = magic if magic is not None else bytes([0, 0, code, arr.ndim])
    data = head + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.astype(arr.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


@pytest.fixture
def fake_fashion(tmp_path):
    """A tiny Fashion-MNIST in true idx/gzip format; every item is a constant image whose value names it:
    train item j has value 1 + j (1..50), test item j 101 + j; the class of item j is j % 10."""
    root = tmp_path / "fm"
    root.mkdir()
    for prefix, n, base in (("train", 50, 1), ("t10k", 30, 101)):
        vals = np.arange(n) + base
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", np.repeat(vals, 28 * 28).reshape(n, 28, 28).astype(np.uint8))
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", (np.arange(n) % 10).astype(np.uint8))
    return root


def test_read_idx_roundtrip_types_and_plain(tmp_path):
    a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    assert np.array_equal(read_idx(write_idx(tmp_path / "a.gz", a)), a)
    assert np.array_equal(read_idx(write_idx(tmp_path / "a", a, compress=False)), a)
    b = np.array([-5, 70000, 3], dtype=np.int32)
    out = read_idx(write_idx(tmp_path / "b.gz", b, code=0x0C))
    assert out.tolist() == [-5, 70000, 3] and out.dtype.isnative


@pytest.mark.parametrize("case", ["magic", "dtype", "truncated", "trailing", "badgzip"])
def test_read_idx_errors_name_file(tmp_path, case):
    a = np.zeros((2, 3), dtype=np.uint8)
    p = tmp_path / f"{case}.gz"
    if case == "magic":
        write_idx(p, a, magic=b"\x12\x34\x08\x02")
    elif case == "dtype":
        write_idx(p, a, magic=b"\x00\x00\x07\x02")
    elif case in ("truncated", "trailing"):
        raw = bytes([0, 0, 8, 2]) + struct.pack(">2I", 2, 3) + bytes(6)
        p.write_bytes(gzip.compress(raw[:-1] if case == "truncated" else raw + b"\x00"))
    else:
        p.write_bytes(gzip.compress(b"\x00\x00\x08\x01" + bytes(40))[:20])
    with pytest.raises(ValueError, match=case + ".gz"):
        read_idx(p)
    with pytest.raises(FileNotFoundError, match="nope"):
        read_idx(tmp_path / "nope.gz")


def test_fashion_loader_checks_label_count(fake_fashion):
    write_idx(fake_fashion / "t10k-labels-idx1-ubyte.gz", np.zeros(7, dtype=np.uint8))
    with pytest.raises(ValueError, match="t10k-labels"):
        load_fashion_mnist(fake_fashion, "test")
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        load_fashion_mnist(fake_fashion / "missing", "train")


def check_mosaic_split(split, item_range, n_items_per_image=(1, 4)):
    """Every box is a constant cell naming its source item; labels = set of the items' classes."""
    imgs, full, boxes = np.asarray(split.images), split.full, split.boxes
    assert imgs.shape[1:] == (56, 56) and imgs.dtype == np.uint8
    covered = np.zeros(imgs.shape, dtype=bool)
    classes = [set() for _ in range(len(imgs))]
    for s, c, x0, y0, x1, y1 in boxes.astype(int):
        assert 0 <= x0 < x1 <= 56 and 0 <= y0 < y1 <= 56 and x1 - x0 == 28 and y1 - y0 == 28
        assert x0 % 28 == 0 and y0 % 28 == 0
        cell = imgs[s, y0:y1, x0:x1]
        v = int(cell[0, 0])
        assert (cell == v).all() and item_range[0] <= v <= item_range[1]
        assert c == (v - item_range[0]) % 10  # item j has class j % 10
        assert not covered[s, y0:y1, x0:x1].any()  # one item per cell
        covered[s, y0:y1, x0:x1] = True
        classes[s].add(int(c))
    assert (imgs[~covered] == 0).all()  # cells without a box are empty
    counts = np.bincount(boxes[:, 0].astype(int), minlength=len(imgs))
    assert counts.min() >= n_items_per_image[0] and counts.max() <= n_items_per_image[1]
    for i, cs in enumerate(classes):
        assert set(np.nonzero(full[i])[0].tolist()) == cs


def test_mosaics_labels_boxes_sources_and_protocol(fake_fashion):
    ix = build_fashion_mosaic(str(fake_fashion), num_train=60, num_test=25, seed=3)
    assert [len(ix[s]) for s in ("train", "val", "test")] == [48, 12, 25]
    check_mosaic_split(ix["train"], (1, 50))
    check_mosaic_split(ix["val"], (1, 50))
    check_mosaic_split(ix["test"], (101, 130))
    obs = ix["train"].observed
    assert ((obs == 1).sum(1) == 1).all() and (obs >= 0).all()  # single positive, rest unobserved
    assert (ix["train"].full[obs == 1] == 1).all()  # the observed positive is a true positive
    assert ix["val"].observed is None and ix["test"].observed is None
    st = ix.meta["stats"]["train"]
    assert st["mean_positives"] == pytest.approx(ix["train"].full.sum(1).mean())
    assert ix.meta["image_size"] == [56, 56] and ix.kind == "images"


def test_mosaics_deterministic(fake_fashion):
    a = build_fashion_mosaic(str(fake_fashion), num_train=30, num_test=10, seed=5)
    b = build_fashion_mosaic(str(fake_fashion), num_train=30, num_test=10, seed=5)
    c = build_fashion_mosaic(str(fake_fashion), num_train=30, num_test=10, seed=6)
    for s in ("train", "val", "test"):
        assert np.array_equal(a[s].images, b[s].images) and np.array_equal(a[s].boxes, b[s].boxes)
    assert not np.array_equal(a["test"].images, c["test"].images)


def test_make_mosaics_uses_each_item_once_and_grid_options():
    items = np.arange(1, 201, dtype=np.uint8)[:, None, None].repeat(4, 1).repeat(4, 2)  # 200 items of 4x4
    imgs, full, boxes, pick = make_mosaics(items, np.arange(200) % 10, 40, grid=(3, 2), min_objects=2,
                                           max_objects=3, seed=1)
    assert imgs.shape == (40, 12, 8)
    assert len(set(pick.tolist())) == len(pick)  # the pool (200) is not exhausted: no reuse
    counts = np.bincount(boxes[:, 0].astype(int), minlength=40)
    assert set(counts.tolist()) <= {2, 3}
    for (s, c, x0, y0, x1, y1), j in zip(boxes.astype(int), pick):
        assert (imgs[s, y0:y1, x0:x1] == j + 1).all() and c == j % 10
    with pytest.raises(ValueError, match="max_objects"):
        make_mosaics(items, np.arange(200) % 10, 5, grid=(1, 2), max_objects=3)


def test_expected_positives_formula_and_empirical():
    # E[#distinct classes] for k in 1..4, 10 balanced classes: mean of 10 (1 - 0.9^k) = 2.26225
    assert expected_positives(np.arange(1, 5), np.full(10, 0.1)) == pytest.approx(2.26225)
    items = np.ones((1000, 2, 2), dtype=np.uint8)
    _, full, _, _ = make_mosaics(items, np.arange(1000) % 10, 4000, seed=0)
    assert full.sum(1).mean() == pytest.approx(2.26225, abs=0.06)


def test_png_export_matches_arrays(fake_fashion, tmp_path):
    from PIL import Image

    arr = build_fashion_mosaic(str(fake_fashion), num_train=10, num_test=5, seed=2)
    png = build_fashion_mosaic(str(fake_fashion), num_train=10, num_test=5, seed=2, png_dir=str(tmp_path / "png"))
    assert png["test"].images is None and len(png["test"].samples) == 5
    for s in ("train", "test"):
        for i, rel in enumerate(png[s].samples):
            assert np.array_equal(np.asarray(Image.open(Path(png.root) / rel)), arr[s].images[i])


@pytest.mark.skipif(not Path(DEFAULT_ROOT).is_dir(), reason=f"Fashion-MNIST not installed at {DEFAULT_ROOT}")
def test_prepare_real_fashion_mosaic_fast(tmp_path):
    ix = prepare("fashion-mosaic", tmp_path / "fm")  # default size (15000 + 2000 mosaics); timed in benchmarks
    back = DatasetIndex.load(tmp_path / "fm")
    assert [len(back[s]) for s in ("train", "val", "test")] == [12000, 3000, 2000]
    assert isinstance(back["train"].images, np.memmap) and back["train"].images.shape == (12000, 56, 56)
    assert np.array_equal(back["test"].images, ix["test"].images)
    assert np.array_equal(back["train"].observed, ix["train"].observed)
    assert 2.1 < back.meta["stats"]["train"]["mean_positives"] < 2.4
    assert back.meta["mosaic"]["expected_positives_per_image"] == pytest.approx(2.26, abs=0.02)
    from wsml.data.loading import make_loader

    batch = next(iter(make_loader(back, "train", batch_size=8, train=True)))  # memory-mapped pixels
    assert batch["input"].shape == (8, 3, 56, 56) and set(batch) == {"input", "observed", "full", "index"}
    rows = batch["index"].numpy()
    assert np.array_equal(batch["observed"].numpy(), back["train"].observed[rows])


def test_yeast_shapes_and_standardisation():
    pytest.importorskip("river", reason="the Yeast data set ships with the optional `river` package")
    from wsml.data import build_dataset

    ix = build_dataset("yeast")
    assert ix.kind == "features" and ix.num_classes == 14
    assert [len(ix[s]) for s in ("train", "val", "test")] == [1200, 300, 917]
    assert sum(len(s) for s in ix.splits.values()) == 2417
    for s in ix.splits.values():
        assert s.features.shape[1] == 103 and s.features.dtype == np.float32
    x = ix["train"].features.astype(np.float64)
    var = x.var(0)
    assert np.abs(x.mean(0)).max() < 1e-5 and np.all(np.isclose(var, 1.0, atol=1e-4) | (var == 0))
    obs, full = ix["train"].observed, ix["train"].full
    assert ((obs == 1).sum(1) == 1).all() and (full[obs == 1] == 1).all()
    assert 4.0 < full.sum(1).mean() < 4.5  # Yeast's label cardinality is 4.24


def test_yeast_bad_csv_names_file(tmp_path):
    from wsml.data.yeast import build_yeast

    p = tmp_path / "yeast.csv"
    p.write_text("Att1,Class1\n0.5,1\n")
    with pytest.raises(ValueError, match="yeast.csv"):
        build_yeast(str(p))
