"""Tests for wsml.train.features: the LinearInit feature cache and the feature loaders."""

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from wsml.distributed import DistInfo
from wsml.labels import SparseLabels
from wsml.models import create_model
from wsml.train.features import FeatureDataset, extract_features
from wsml.train.linearinit import ShardedFeatureLoader


class Transform:
    def __init__(self, train=False, scale=1.0):
        self.train, self.scale = train, scale

    def __call__(self, x):
        return x * self.scale

    def __repr__(self):
        return f"Transform(train={self.train}, scale={self.scale})"


class Images(Dataset):
    """Dict items like the data engineer's PartialLabelDataset."""

    def __init__(self, n=10, transform=None, noisy=False):
        g = torch.Generator().manual_seed(0)
        self.x = torch.rand(n, 3, 16, 16, generator=g)
        self.obs = np.zeros((n, 4), dtype=np.int8)
        self.obs[np.arange(n), np.arange(n) % 4] = 1
        self.full = (np.arange(n * 4).reshape(n, 4) % 3 == 0).astype(np.uint8)
        self.transform, self.noisy = transform or Transform(), noisy

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        x = self.transform(self.x[i]) + (torch.rand(1) if self.noisy else 0)
        obs, full = torch.from_numpy(self.obs[i]), torch.from_numpy(self.full[i])
        return {"input": x, "observed": obs, "index": i, "full": full}


class Counter:
    def __init__(self, module):
        self.calls = 0
        module.register_forward_hook(self)

    def __call__(self, *args):
        self.calls += 1


@pytest.fixture
def model():
    torch.manual_seed(0)
    return create_model("small_cnn", 4, widths=(4, 8))


def test_cache_is_reused_without_running_the_backbone(model, tmp_path):
    counter = Counter(model.backbone)
    ds = Images(10)
    loader = DataLoader(ds, batch_size=4)
    model.train()
    out = extract_features(model, loader, tmp_path, key="toy", progress=False)
    assert counter.calls == 3 and not out["cached"] and model.training and model.backbone.training
    assert out["features"].dtype == np.float32 and out["features"].shape == (10, 8)
    assert out["index"].tolist() == list(range(10))
    with torch.no_grad():  # the features are the eval-mode pooled features of each input
        expect = model.eval().pooled_features(ds.x).numpy()
    np.testing.assert_allclose(out["features"], expect, rtol=1e-5, atol=1e-6)
    counter.calls = 0
    again = extract_features(model, loader, tmp_path, key="toy", progress=False)
    assert counter.calls == 0 and again["cached"] and again["path"] == out["path"]
    np.testing.assert_array_equal(again["features"], out["features"])
    np.testing.assert_array_equal(again["index"], out["index"])
    assert not list(tmp_path.glob("*.tmp")) and len(list(tmp_path.glob("*.json"))) == 1


def test_cache_key_changes_with_weights_data_and_transform(model, tmp_path):
    counter = Counter(model.backbone)
    loader = DataLoader(Images(6), batch_size=6)
    extract_features(model, loader, tmp_path, key="a", progress=False)
    extract_features(model, loader, tmp_path, key="b", progress=False)  # other data key
    assert counter.calls == 2
    with torch.no_grad():
        model.backbone.body[0].weight[0, 0, 0, 0] += 1.0  # other weights
    extract_features(model, loader, tmp_path, key="a", progress=False)
    assert counter.calls == 3
    scaled = DataLoader(Images(6, transform=Transform(scale=2.0)), batch_size=6)  # other transform
    extract_features(model, scaled, tmp_path, key="a", progress=False)
    assert counter.calls == 4
    other = create_model("small_cnn", 4, widths=(4, 8))  # same architecture, other random weights
    Counter(other.backbone)
    assert not extract_features(other, loader, tmp_path, key="a", progress=False)["cached"]
    assert extract_features(model, loader, tmp_path, key="a", progress=False)["cached"]


def test_shuffled_loader_keeps_rows_with_their_ids(model, tmp_path):
    ds = Images(9)
    loader = DataLoader(ds, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(3))
    out = extract_features(model, loader, tmp_path, key="s", progress=False)
    assert sorted(out["index"].tolist()) == list(range(9)) and out["index"].tolist() != list(range(9))
    with torch.no_grad():
        expect = model.eval().pooled_features(ds.x[out["index"]]).numpy()
    np.testing.assert_allclose(out["features"], expect, rtol=1e-5, atol=1e-6)


def test_without_key_uses_dataset_fingerprint(model, tmp_path):
    a = extract_features(model, DataLoader(Images(5), batch_size=5), tmp_path, progress=False)
    b = extract_features(model, DataLoader(Images(5), batch_size=2), tmp_path, progress=False)
    c = extract_features(model, DataLoader(Images(7), batch_size=5), tmp_path, progress=False)
    assert not a["cached"] and b["cached"] and not c["cached"]


def test_random_transforms_are_refused(model, tmp_path):
    with pytest.raises(ValueError, match="deterministic eval transform"):
        extract_features(model, DataLoader(Images(4, transform=Transform(train=True))), tmp_path, key="x")
    with pytest.raises(ValueError, match="differs between two reads"):
        extract_features(model, DataLoader(Images(4, noisy=True)), tmp_path, key="x")
    with pytest.raises(ValueError, match="give key="):
        extract_features(model, [{"input": torch.zeros(1, 3, 8, 8), "index": torch.tensor([0])}], tmp_path)


def test_feature_dataset_gathers_labels_by_row_id():
    feats = np.arange(12, dtype=np.float32).reshape(4, 3)
    index = np.array([2, 0, 3, 1])
    obs = np.array([[1, 0], [0, 1], [-1, 1], [1, -1]], dtype=np.int8)
    full = np.array([[1, 0], [0, 1], [0, 1], [1, 0]], dtype=np.uint8)
    for labels in (obs, SparseLabels.from_dense(obs)):
        ds = FeatureDataset.from_cache({"features": feats, "index": index}, labels, full)
        item = ds[0]
        assert item["index"] == 2 and item["observed"].tolist() == [-1, 1] and item["full"].tolist() == [0, 1]
        assert item["input"].tolist() == [0.0, 1.0, 2.0] and item["observed"].dtype == torch.int8
    with pytest.raises(ValueError, match="row ids in \\[0, 4\\)"):
        FeatureDataset(feats, np.array([0, 1, 2, 4]), obs)
    with pytest.raises(ValueError, match="observed labels"):
        FeatureDataset(feats, index, obs * 2)


def test_feature_loader_batches_and_shuffles(model, tmp_path):
    ds = Images(10)
    cache = extract_features(model, DataLoader(ds, batch_size=4), tmp_path, key="l", progress=False)
    fds = FeatureDataset.from_cache(cache, ds.obs, ds.full)
    loader = ShardedFeatureLoader(fds, 4, DistInfo(), shuffle=False, seed=0)
    batches = list(loader)
    assert len(loader) == 3 and [len(b["index"]) for b in batches] == [4, 4, 2]
    assert set(batches[0]) == {"input", "observed", "index", "full"}
    assert torch.equal(batches[0]["observed"], torch.from_numpy(ds.obs[:4]))
    with torch.no_grad():  # the head trained from the cache sees what the full model would
        logits = model.eval()(ds.x[:4])
    assert torch.allclose(model.forward_head(batches[0]["input"]), logits, atol=1e-5)
    shuf = ShardedFeatureLoader(fds, 3, DistInfo(), shuffle=True, seed=5)
    e0 = torch.cat([b["index"] for b in shuf])
    shuf.sampler.set_epoch(1)
    e1 = torch.cat([b["index"] for b in shuf])
    assert len(shuf) == 4 and len(e0) == 10 and not torch.equal(e0, e1)
    shuf.sampler.set_epoch(0)
    assert torch.equal(torch.cat([b["index"] for b in shuf]), e0)  # reproducible from (seed, epoch)
    for b in ShardedFeatureLoader(fds, 10, DistInfo(), shuffle=True, seed=1):
        rows = b["index"].numpy()
        np.testing.assert_array_equal(b["observed"].numpy(), ds.obs[rows])
        np.testing.assert_array_equal(b["input"].numpy(), cache["features"][np.argsort(cache["index"])][rows])
