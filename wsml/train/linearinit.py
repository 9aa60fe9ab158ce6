"""LinearInit stage 1 (paper §4): train the head on backbone features computed once and cached on disk.

The backbone is frozen in stage 1, so its pooled features never change: :func:`cached_feature_loaders` runs
it once over the train and val splits (eval transform: resize + normalise, *no* random flip — augmentation
would be frozen into the cache) through :func:`wsml.train.features.extract_features`, and every stage-1 epoch then
only runs the linear head on the cached vectors. Under torchrun rank 0 extracts, the other ranks read the cache.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import torch
from torch import nn

from wsml.config import Config
from wsml.distributed import DistInfo, barrier
from wsml.train.builders import build_loader, make_sampler, per_rank_batch


class HeadOnly(nn.Module):
    """``model.forward_head`` as a module (what DDP wraps in stage 1): cached features -> logits."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(features)


class ShardedFeatureLoader:
    """Batches of a cached :class:`wsml.train.features.FeatureDataset`, ordered by a DistributedSampler.

    The same (seed, epoch) permutation and per-rank sharding as the image loaders, so a LinearInit run on N
    processes sees the global batches of one process; batches are slices, not per-item collation.
    """

    def __init__(self, dataset: Any, batch_size: int, dist_info: DistInfo, *, shuffle: bool, seed: int):
        self.dataset, self.batch_size = dataset, int(batch_size)
        self.sampler = make_sampler(dataset, dist_info, shuffle=shuffle, seed=seed)

    def __len__(self) -> int:
        return -(-len(self.sampler) // self.batch_size)

    def __iter__(self) -> Iterator[dict]:
        order = torch.as_tensor(list(iter(self.sampler)), dtype=torch.long)
        for b in range(0, len(order), self.batch_size):
            yield self.dataset.batch(order[b:b + self.batch_size])


def cached_feature_loaders(cfg: Config, model: nn.Module, index: Any, dist_info: DistInfo, device: torch.device,
                           run_dir: Path, mean_std: Optional[tuple], say: Callable = print):
    """(train loader, val loader) over cached pooled features of the frozen backbone, extracting them if needed."""
    from wsml.train.features import FeatureDataset, extract_features

    cache_dir = Path(cfg.train.feature_cache) if cfg.train.feature_cache else Path(run_dir) / "features"
    single = DistInfo()  # extraction covers the whole split, in order, in one process
    caches = {}
    for split in ("train", "val"):
        loader = build_loader(cfg, index, split, single, train=False, mean_std=mean_std)
        if dist_info.is_main:
            caches[split] = extract_features(model, loader, cache_dir, device=device,
                                             progress=not cfg.run.quiet)
            say(f"LinearInit stage 1: {split} features {'read from' if caches[split]['cached'] else 'cached in'} "
                f"{caches[split]['path']}")
        barrier()
        if not dist_info.is_main:
            caches[split] = extract_features(model, loader, cache_dir, device=device, progress=False)
    ds = {split: FeatureDataset.from_cache(cache, index[split].train_targets(), index[split].full)
          for split, cache in caches.items()}
    eval_bs = -(-(cfg.train.eval_batch_size or 2 * cfg.train.batch_size) // dist_info.world_size)
    return (ShardedFeatureLoader(ds["train"], per_rank_batch(cfg.train.batch_size, dist_info), dist_info,
                                 shuffle=True, seed=cfg.train.seed),
            ShardedFeatureLoader(ds["val"], eval_bs, dist_info, shuffle=False, seed=cfg.train.seed))
