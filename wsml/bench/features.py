"""A feature-vector data set from a frozen pretrained backbone, for LinearInit-style grids on a CPU.

LinearInit stage 1 (paper §4) trains only the linear head on a frozen ImageNet backbone. With the backbone frozen
its pooled features never change, so for a grid of methods × seeds they are extracted ONCE (eval transform, no
flip) with :func:`wsml.train.features.extract_features` and written as a prepared data set of kind "features" (same
classes, rows, full and observed labels as the image data set). ``backbone: linear`` on it is then exactly
stage 1 of LinearInit, and each run costs seconds instead of a backbone pass per epoch.

Spec (the ``features`` section of a grid spec; paths relative to the spec file)::

    features:
      config: ../../configs/fashion/base.yaml     # the image data set (prepared on demand) ...
      overrides: [model.backbone=efficientnet_lite0, model.pretrained=true, data.image_size=112, model.options={}]
      out: ../../data/bench-fashion-effnet        # ... becomes this feature data set
      full_out: ../../data/bench-fashion-effnet-full   # optional: the same features, every train label observed
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np


def prepare_feature_data(section: dict, base_dir: Path, log=print) -> Path:
    """Write the feature data set ``section["out"]`` (and ``full_out``) unless it exists; return its folder."""
    for key in ("config", "out"):
        if not section.get(key):
            raise ValueError(f"grid spec 'features' section needs {key!r}")
    out = (base_dir / section["out"]).resolve()
    full_out = (base_dir / section["full_out"]).resolve() if section.get("full_out") else None
    if (out / "manifest.json").is_file() and (full_out is None or (full_out / "manifest.json").is_file()):
        return out
    import torch

    from wsml.config import load_config
    from wsml.data.index import DatasetIndex, Split
    from wsml.distributed import DistInfo
    from wsml.train import builders as B
    from wsml.train.features import extract_features

    cfg = load_config((base_dir / section["config"]).resolve(), list(section.get("overrides") or []))
    index = B.load_index(cfg.data)
    torch.manual_seed(0)
    model = B.build_model(cfg, index)  # the head is random and unused: only pooled backbone features are kept
    t0 = time.time()
    feats_of = {}
    for name in ("train", "val", "test"):
        loader = B.build_loader(cfg, index, name, DistInfo(), train=False, mean_std=model.default_mean_std)
        res = extract_features(model, loader, out.parent / f".{out.name}-cache", device="cpu", progress=False)
        src = index[name]
        feats = np.empty((len(src), res["features"].shape[1]), dtype=np.float32)
        feats[res["index"]] = res["features"]
        feats_of[name] = feats
        log(f"features {name}: {feats.shape} from {cfg.model.backbone} at {cfg.data.image_size} px "
            f"({time.time() - t0:.0f}s so far)")
    # standardised with the TRAIN split's statistics (as the Yeast features), so one lr suits every data set
    mean, std = feats_of["train"].mean(0), feats_of["train"].std(0)
    std[std < 1e-6] = 1.0
    splits, full_splits = {}, {}
    for name, feats in feats_of.items():
        z = ((feats - mean) / std).astype(np.float32)
        splits[name] = Split(features=z, full=index[name].full, observed=index[name].observed)
        full_splits[name] = Split(features=z, full=index[name].full)  # no observed labels = fully observed
    meta = dict(index.meta, features={"backbone": cfg.model.backbone, "image_size": cfg.data.image_size,
                                      "source": str(Path(cfg.data.path).resolve()),
                                      "extract_s": round(time.time() - t0, 1)})
    DatasetIndex(f"{index.name}-{cfg.model.backbone}", index.class_names, splits, kind="features", meta=meta).save(out)
    if full_out is not None:
        DatasetIndex(f"{index.name}-{cfg.model.backbone}-full", index.class_names, full_splits, kind="features",
                     meta=meta).save(full_out)
    return out
