"""The torch loading layer: PartialLabelDataset, make_loader, build_transform."""

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from wsml.data import DatasetIndex, Split
from wsml.data.loading import PartialLabelDataset, collate_items, load_image, make_loader
from wsml.data.transforms import IMAGENET_MEAN, IMAGENET_STD, build_transform
from wsml.labels import SparseLabels

C = 7


def random_observed(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.choice(np.array([1, 0, 0, 0, -1], dtype=np.int8), size=(n, C))


def features_index(n=23, sparse=False):
    obs = random_observed(n)
    full = (np.random.default_rng(1).random((n, C)) < 0.3).astype(np.uint8)
    feats = np.arange(n * 4, dtype=np.float32).reshape(n, 4)
    train = Split(features=feats, full=full, observed=SparseLabels.from_dense(obs) if sparse else obs)
    val = Split(features=feats[:5], full=full[:5])
    return DatasetIndex("toy", [f"c{i}" for i in range(C)], {"train": train, "val": val}, kind="features"), obs, full


def files_index(tmp_path, n=6, sizes=None):
    rng = np.random.default_rng(0)
    samples = []
    for i in range(n):
        h, w = (sizes or [(20, 30)] * n)[i]
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(tmp_path / f"im{i}.png")
        samples.append(f"im{i}.png")
    split = Split(samples=samples, observed=random_observed(n))
    return DatasetIndex("files", [f"c{i}" for i in range(C)], {"train": split}, root=str(tmp_path), kind="images")


def test_feature_items_keys_dtypes_and_values():
    ix, obs, full = features_index()
    item = PartialLabelDataset(ix, "train")[3]
    assert set(item) == {"input", "observed", "full", "index"}
    assert item["input"].dtype == torch.float32 and item["input"].tolist() == [12.0, 13.0, 14.0, 15.0]
    assert item["observed"].dtype == torch.int8 and item["observed"].tolist() == obs[3].tolist()
    assert item["full"].dtype == torch.uint8 and item["full"].tolist() == full[3].tolist()
    assert item["index"] == 3
    val = PartialLabelDataset(ix, "val")[2]  # full labels only: fully observed {1,-1}
    assert val["observed"].tolist() == [1 if v else -1 for v in full[2]]


def test_sparse_batches_equal_dense():
    dense_ix, obs, _ = features_index(sparse=False)
    sparse_ix, _, _ = features_index(sparse=True)
    a = list(make_loader(dense_ix, "train", batch_size=5, train=True, seed=4))
    b = list(make_loader(sparse_ix, "train", batch_size=5, train=True, seed=4))
    assert len(a) == len(b) == 5
    for x, y in zip(a, b):
        assert torch.equal(x["index"], y["index"]) and torch.equal(x["observed"], y["observed"])
        assert torch.equal(x["observed"], torch.from_numpy(obs[x["index"].numpy()]))
    assert sorted(torch.cat([x["index"] for x in a]).tolist()) == list(range(23))


def test_loader_order_seeded_and_eval_in_order():
    ix, _, _ = features_index()
    order = lambda **kw: torch.cat([b["index"] for b in make_loader(ix, "train", batch_size=4, **kw)]).tolist()  # noqa
    assert order(train=True, seed=1) == order(train=True, seed=1)
    assert order(train=True, seed=1) != order(train=True, seed=2)
    assert order(train=False) == list(range(23))
    assert len(list(make_loader(ix, "train", batch_size=4, train=True, drop_last=True))) == 5
    assert order(train=True, seed=1, num_workers=1) == order(train=True, seed=1)


def test_array_images_channels_and_normalisation():
    imgs = np.random.default_rng(0).integers(0, 256, (4, 6, 8), dtype=np.uint8)
    ix = DatasetIndex("arr", ["a", "b"], {"test": Split(images=imgs, full=np.eye(4, 2, dtype=np.uint8))},
                      meta={"image_size": [6, 8]})
    b = next(iter(make_loader(ix, "test", batch_size=4, train=False)))
    assert b["input"].shape == (4, 3, 6, 8) and b["input"].dtype == torch.float32
    for ch in range(3):
        expect = (imgs / 255.0 - IMAGENET_MEAN[ch]) / IMAGENET_STD[ch]
        assert np.allclose(b["input"][:, ch].numpy(), expect, atol=1e-5)
    gray = next(iter(make_loader(ix, "test", batch_size=4, train=False, channels=1, image_size=12)))
    assert gray["input"].shape == (4, 1, 12, 12)


def test_transform_resize_flip_and_seed():
    img = torch.arange(2 * 3 * 4, dtype=torch.uint8).reshape(2, 3, 4)
    t = build_transform(None, train=False, mean=(0.0, 0.0), std=(1 / 255, 1 / 255))  # identity on values
    assert torch.allclose(t(img), img.float())
    flips = []
    tr = build_transform(None, train=True, mean=(0.0, 0.0), std=(1 / 255, 1 / 255), seed=0)
    for _ in range(40):
        out = tr(img)
        assert torch.equal(out, img.float()) or torch.equal(out, img.float().flip(-1))
        flips.append(torch.equal(out, img.float().flip(-1)))
    assert 5 < sum(flips) < 35
    tr2 = build_transform(None, train=True, mean=(0.0, 0.0), std=(1 / 255, 1 / 255), seed=0)
    assert flips == [torch.equal(tr2(img), img.float().flip(-1)) for _ in range(40)]
    const = torch.full((3, 10, 30), 200, dtype=torch.uint8)
    out = build_transform(16, train=False)(const)
    assert out.shape == (3, 16, 16)
    assert torch.allclose(out[0], torch.full((16, 16), (200 / 255 - IMAGENET_MEAN[0]) / IMAGENET_STD[0]), atol=1e-4)
    with pytest.raises(ValueError, match="channels"):
        build_transform(None, train=False)(torch.zeros(2, 4, 4, dtype=torch.uint8))


def test_file_images_resize_and_require_size(tmp_path):
    ix = files_index(tmp_path, sizes=[(20, 30), (40, 10), (25, 25), (20, 30), (8, 8), (64, 48)])
    with pytest.raises(ValueError, match="image_size"):
        make_loader(ix, "train", batch_size=2, train=False)
    batches = list(make_loader(ix, "train", batch_size=4, train=True, image_size=32))
    assert [tuple(b["input"].shape) for b in batches] == [(4, 3, 32, 32), (2, 3, 32, 32)]
    assert "full" not in batches[0]
    raw = load_image(str(tmp_path / "im0.png"))
    assert raw.shape == (3, 20, 30) and torch.equal(raw.permute(1, 2, 0), torch.from_numpy(
        np.array(Image.open(tmp_path / "im0.png"))))
    Image.fromarray(np.zeros((5, 5), dtype=np.uint8)).save(tmp_path / "g.png")
    assert load_image(str(tmp_path / "g.png")).shape == (3, 5, 5)
    assert load_image(str(tmp_path / "g.png"), channels=1).shape == (1, 5, 5)


def test_bad_image_errors_name_the_file(tmp_path):
    ix = files_index(tmp_path)
    (tmp_path / "im2.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not really a png")
    (tmp_path / "im4.png").unlink()
    ds = PartialLabelDataset(ix, "train", transform=build_transform(8, train=False))
    with pytest.raises(ValueError, match="im2.png"):
        ds[2]
    with pytest.raises(FileNotFoundError, match="im4.png"):
        ds[4]
    with pytest.raises(ValueError, match="im2.png"):
        list(make_loader(ix, "train", batch_size=6, train=False, image_size=8))


def test_skip_mode_drops_missing_and_corrupt(tmp_path):
    ix = files_index(tmp_path)
    (tmp_path / "im2.png").write_bytes(b"garbage")
    (tmp_path / "im4.png").unlink()
    with pytest.warns(UserWarning, match="im4.png"):
        loader = make_loader(ix, "train", batch_size=3, train=False, image_size=8, on_bad_image="skip")
    assert len(loader.dataset) == 5 and loader.dataset.num_samples == 6
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        batches = list(loader)
    assert any("im2.png" in str(x.message) for x in w)
    assert [b["index"].tolist() for b in batches] == [[0, 1], [3, 5]]  # row ids keep their split numbering
    assert torch.equal(batches[1]["observed"], torch.from_numpy(ix["train"].observed[[3, 5]]))
    assert collate_items([None, None]) is None


def test_png_files_and_arrays_give_the_same_batches(tmp_path):
    from wsml.data.fashion_mosaic import export_png

    imgs = np.random.default_rng(3).integers(0, 256, (5, 12, 12), dtype=np.uint8)
    obs = random_observed(5)
    arr = DatasetIndex("a", [f"c{i}" for i in range(C)], {"train": Split(images=imgs, observed=obs)})
    files = DatasetIndex("f", arr.class_names, {"train": Split(samples=export_png(imgs, tmp_path, "train"),
                                                                observed=obs)}, root=str(tmp_path))
    a = next(iter(make_loader(arr, "train", batch_size=5, train=True, seed=9, image_size=20)))
    b = next(iter(make_loader(files, "train", batch_size=5, train=True, seed=9, image_size=20)))
    assert torch.equal(a["index"], b["index"]) and torch.allclose(a["input"], b["input"])
