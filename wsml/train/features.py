"""LinearInit stage 1 feature cache: run the frozen backbone once, keep the pooled features on disk.

The paper's LinearInit first trains only the linear head on a frozen ImageNet backbone. The backbone's output
never changes then, so :func:`extract_features` computes ``model.pooled_features`` once per (backbone, weights,
data, transform) and stores it as ``.npy`` files in ``cache_dir``; later calls read the files and never call the
backbone. :class:`FeatureDataset` then serves the cached vectors as the same batch dicts (``input``, ``observed``,
``index``, ``full``) the image loaders give, for training ``model.head`` (batched by
``wsml.train.linearinit.ShardedFeatureLoader``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from wsml._types import PathLike
from wsml.checkpoint import atomic_write
from wsml.labels import SparseLabels, as_full, as_observed, validate_full, validate_observed
from wsml.models.model import MultiLabelModel

CACHE_VERSION = 1


def backbone_digest(model: MultiLabelModel) -> str:
    """Hash of every backbone tensor (names, dtypes, shapes, values): changes whenever the weights do."""
    h = hashlib.blake2b(digest_size=16)
    for name, t in sorted(model.backbone.state_dict().items()):
        t = t.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _tensor_digest(x) -> str:
    t = torch.as_tensor(x).detach().cpu().contiguous().reshape(-1)
    return hashlib.blake2b(t.view(torch.uint8).numpy().tobytes(), digest_size=8).hexdigest()


def data_identity(loader, key: Optional[str] = None) -> dict:
    """What identifies the data for the cache: ``key`` (or ``dataset.cache_key``), the transform, and a
    fingerprint of the first and last items. Raises ValueError for random (training) transforms."""
    dataset = getattr(loader, "dataset", None)
    transform = getattr(dataset, "transform", None)
    if getattr(transform, "train", False):
        raise ValueError(f"feature caching needs a deterministic eval transform, got the training transform "
                         f"{transform!r} (random augmentation would be frozen into the cache)")
    ident = {"key": key, "transform": repr(transform), "dataset": type(dataset).__name__}
    if key is None and dataset is not None:
        ck = getattr(dataset, "cache_key", None)
        ident["key"] = ck() if callable(ck) else ck
        ident["name"] = getattr(dataset, "name", None)
    if dataset is not None and hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__") and len(dataset):
        ident["len"] = len(dataset)
        prints = []
        for i in sorted({0, len(dataset) - 1}):
            a, b = dataset[i], dataset[i]
            if a is None:
                continue
            if not torch.equal(torch.as_tensor(a["input"]), torch.as_tensor(b["input"])):
                raise ValueError(f"feature caching needs a deterministic transform: item {i} of "
                                 f"{type(dataset).__name__} differs between two reads (random augmentation?)")
            prints.append([int(a["index"]), _tensor_digest(a["input"])])
        ident["items"] = prints
    elif ident["key"] is None:
        raise ValueError("extract_features: give key= (a name for the data) when the loader has no map-style dataset")
    return ident


def cache_key(model: MultiLabelModel, loader, key: Optional[str] = None) -> str:
    """The cache file stem: a hash of (backbone name, backbone weights digest, data identity, transform)."""
    payload = {"version": CACHE_VERSION, "backbone": model.backbone_name, "weights": backbone_digest(model),
               "feature_dim": model.feature_dim, "data": data_identity(loader, key)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _read_cache(stem: Path) -> Optional[dict]:
    meta_path = stem.with_suffix(".json")
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        features = np.load(stem.with_suffix(".features.npy"), allow_pickle=False)
        index = np.load(stem.with_suffix(".index.npy"), allow_pickle=False)
    except (OSError, ValueError):
        return None  # a damaged cache entry is recomputed
    if features.shape != tuple(meta["shape"]) or index.shape != (features.shape[0],):
        return None
    return {"features": features, "index": index, "path": str(stem.with_suffix(".features.npy")), "cached": True}


def extract_features(model: MultiLabelModel, loader, cache_dir: PathLike, key: Optional[str] = None,
                     device: Union[str, torch.device] = "cpu", progress: bool = True) -> dict:
    """Pooled backbone features of every batch of ``loader`` (dicts with "input" and "index"), cached.

    Returns ``{"features": float32 [N, D], "index": int64 [N] row ids, "path", "cached"}`` in loader order;
    ``cached`` tells whether the file was reused (then the backbone is not run at all). The model runs in eval
    mode without gradients (it is moved to ``device``; its train/eval mode is restored afterwards).
    """
    cache_dir = Path(cache_dir).expanduser()
    cache_dir.mkdir(parents=True, exist_ok=True)
    stem = cache_dir / f"features-{cache_key(model, loader, key)}"
    hit = _read_cache(stem)
    if hit is not None:
        return hit
    from wsml.progress import progress as show

    was_training = model.training
    model.to(device).eval()
    feats, rows = [], []
    try:
        with torch.inference_mode():
            for batch in show(loader, "features", enabled=progress):
                if batch is None:  # every item of the batch failed to load (on_bad_image="skip")
                    continue
                if not isinstance(batch, dict) or "input" not in batch or "index" not in batch:
                    raise ValueError("extract_features: batches must be dicts with 'input' and 'index' keys")
                feats.append(model.pooled_features(batch["input"].to(device)).float().cpu().numpy())
                rows.append(np.asarray(torch.as_tensor(batch["index"]).cpu(), dtype=np.int64).reshape(-1))
    finally:
        model.train(was_training)
    if not feats:
        raise ValueError("extract_features: the loader gave no batches")
    features, index = np.concatenate(feats), np.concatenate(rows)
    if len(index) != len(features):
        raise ValueError(f"extract_features: {len(features)} feature rows but {len(index)} index values")
    if len(np.unique(index)) != len(index):
        raise ValueError("extract_features: repeated row ids in 'index' (a sampler with replacement?)")
    atomic_write(stem.with_suffix(".features.npy"), lambda f: np.save(f, features))
    atomic_write(stem.with_suffix(".index.npy"), lambda f: np.save(f, index))
    meta = {"backbone": model.backbone_name, "shape": list(features.shape), "key": key, "version": CACHE_VERSION}
    atomic_write(stem.with_suffix(".json"), lambda f: f.write(json.dumps(meta, indent=1).encode()))  # written last
    return {"features": features, "index": index, "path": str(stem.with_suffix(".features.npy")), "cached": False}


class FeatureDataset(Dataset):
    """Cached feature vectors with their labels, as items ``{"input", "observed", "index"[, "full"]}``.

    ``observed`` / ``full`` are the split's label matrices indexed by row id (the ``index`` values), e.g.
    ``Split.train_targets()`` (dense or SparseLabels) and ``Split.full``; they are gathered once here.
    """

    def __init__(self, features: np.ndarray, index: np.ndarray, observed: Union[np.ndarray, SparseLabels],
                 full: Optional[np.ndarray] = None):
        features, index = np.asarray(features, dtype=np.float32), np.asarray(index, dtype=np.int64)
        if features.ndim != 2 or index.shape != (len(features),):
            raise ValueError(f"features must be [N, D] and index [N], got {features.shape} and {index.shape}")
        n_rows = len(observed)
        if len(index) and (index.min() < 0 or index.max() >= n_rows):
            raise ValueError(f"index values must be row ids in [0, {n_rows}) of the label matrix, "
                             f"got range [{index.min()}, {index.max()}]")
        self.features = torch.from_numpy(features)
        self.index = torch.from_numpy(index)
        self.observed = torch.from_numpy(validate_observed(as_observed(observed, index)).astype(np.int8))
        self.full = None if full is None else torch.from_numpy(validate_full(as_full(full, np.asarray(index))))

    @classmethod
    def from_cache(cls, cache: dict, observed: Union[np.ndarray, SparseLabels],
                   full: Optional[np.ndarray] = None) -> FeatureDataset:
        """From the dict :func:`extract_features` returns."""
        return cls(cache["features"], cache["index"], observed, full)

    def __len__(self) -> int:
        return len(self.index)

    def batch(self, rows: torch.Tensor) -> dict:
        """The batch dict of positions ``rows`` (no per-item collation)."""
        out = {"input": self.features[rows], "observed": self.observed[rows], "index": self.index[rows]}
        if self.full is not None:
            out["full"] = self.full[rows]
        return out

    def __getitem__(self, i: int) -> dict:
        item = self.batch(torch.tensor(i))
        item["index"] = int(item["index"])
        return item
