"""Scoring a split (every sample exactly once, also under DDP), and reloading a finished run for eval/predict.

Under torchrun each process scores its share of the split (DistributedSampler pads the shares to equal
length by repeating a few samples); :func:`predict_split` gathers (row id, scores) from every process and
keeps one copy per row id, so mAP counts every sample exactly once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np
import torch

from wsml.config import Config

PathLike = Union[str, Path]


@torch.no_grad()
def predict_split(forward: Callable, loader, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """Sigmoid scores float32 [N, C] and row ids int64 [N] of the loader's split, sorted by row id, de-duplicated.

    Always computed in fp32 with autocast off, whatever ``train.amp`` the model was trained with (the reference
    code bases evaluate in fp32; bf16 scores tie and reorder close scores, which changes AP).
    """
    from wsml.distributed import all_gather_objects

    scores, rows = [], []
    for batch in loader:
        if batch is None:  # every image of the batch failed to load (on_bad_image="skip")
            continue
        with torch.autocast(device_type=device.type, enabled=False):
            logits = forward(batch["input"].to(device, non_blocking=True))
        scores.append(torch.sigmoid(logits.float()).cpu().numpy())
        rows.append(np.asarray(batch["index"], dtype=np.int64))
    local = (np.concatenate(scores), np.concatenate(rows)) if rows else None
    parts = [p for p in all_gather_objects(local) if p is not None]
    if not parts:
        raise ValueError("no sample of the split could be scored (all images failed to load?)")
    all_s, all_r = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    uniq, first = np.unique(all_r, return_index=True)  # sorted row ids, first copy of each
    return all_s[first].astype(np.float32), uniq


def targets_at(split, rows: np.ndarray) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """The split's evaluation targets at ``rows``: (labels {0,1}, mask of the entries that count or None)."""
    labels, mask = split.eval_targets()
    return np.asarray(labels[rows]), None if mask is None else np.asarray(mask[rows])


def split_map(split, scores: np.ndarray, rows: np.ndarray) -> float:
    """mAP ×100 of the scored rows against the split's evaluation targets (full labels, or masked observed)."""
    from wsml.metrics import mean_average_precision

    return mean_average_precision(scores, *targets_at(split, rows))


def split_classes_left_out(split, rows: np.ndarray) -> int:
    """Classes the reproduction mAP policy leaves out on these rows (no annotated entry; 0 without a mask)."""
    from wsml.metrics import classes_left_out

    labels, mask = targets_at(split, rows)
    return classes_left_out(mask, labels.shape[1])


def split_group_map(index, split: str, scores: np.ndarray, rows: np.ndarray) -> Optional[dict]:
    """OpenImages-style mAP per class group (paper Table 3: 5 groups by how many training images have the class
    annotated, ``index.meta["known_per_class"]``); None for data sets without that information."""
    known = index.meta.get("known_per_class")
    if known is None:
        return None
    from wsml.metrics import group_mean_average_precision

    labels, mask = targets_at(index[split], rows)
    return group_mean_average_precision(scores, labels, np.asarray(known), mask=mask)


def save_predictions(path: PathLike, scores: np.ndarray, rows: np.ndarray, class_names: Sequence[str]) -> None:
    """``predictions_<split>.npz``: scores [N, C] (sigmoid), rows [N] (split row ids), class_names [C]."""
    import io

    from wsml.checkpoint import atomic_write

    buf = io.BytesIO()
    np.savez(buf, scores=scores, rows=rows, class_names=np.asarray(list(class_names)))
    atomic_write(path, lambda f: f.write(buf.getvalue()))


# ------------------------------------------------------------------------------------------ finished runs


def load_run_config(run_dir: PathLike) -> Config:
    """The resolved config of a run folder (its ``config.yaml``; an incomplete file is an error)."""
    from wsml.run_folder import read_run_config

    return read_run_config(run_dir)


def load_run(run_dir: PathLike, device: Union[str, torch.device] = "cpu", which: str = "best.pt",
             with_index: bool = True):
    """(config, data set index, model with the checkpoint's weights in eval mode, checkpoint) of a run folder.

    ``with_index=False`` builds the model from the checkpoint's ``model_info`` without loading the data set
    (the index is then None).
    """
    from wsml.builders import build_model, load_index
    from wsml.checkpoint import load_checkpoint, load_module_state

    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    ckpt = load_checkpoint(run_dir / which, map_location="cpu")
    info = ckpt.get("model_info")
    index = load_index(cfg.data, prepare=False) if with_index or info is None else None  # read-only: never prepare
    cfg.model.pretrained, cfg.model.weights = False, None  # the checkpoint holds every weight
    model = build_model(cfg, index, info)
    load_module_state(model, ckpt["model"], run_dir / which, "model")
    return cfg, index, model.to(device).eval(), ckpt


def evaluate_run(run_dir: PathLike, split: str = "test", device: str = "auto", write: bool = True) -> dict:
    """mAP of the run's best checkpoint on ``split``; writes ``predictions_<split>.npz`` and ``eval_<split>.json``."""
    from wsml.builders import build_loader, resolve_device
    from wsml.checkpoint import write_json
    from wsml.distributed import DistInfo

    dev = resolve_device(device, DistInfo())
    cfg, index, model, ckpt = load_run(run_dir, dev)
    if split not in index.splits:
        raise ValueError(f"data set {index.name!r} has no split {split!r} (has: {', '.join(sorted(index.splits))})")
    loader = build_loader(cfg, index, split, DistInfo(), train=False, mean_std=model.default_mean_std)
    scores, rows = predict_split(model, loader, dev)
    from wsml.partial_val import score_split

    result = {"split": split, **score_split(index, split, scores, rows), "num_samples": int(len(rows)),
              "checkpoint_epoch": int(ckpt.get("epoch", 0))}  # partial own-data labels: partial-labels policy
    groups = split_group_map(index, split, scores, rows)
    if groups is not None:
        result["group_map"] = groups
    if write:
        save_predictions(Path(run_dir) / f"predictions_{split}.npz", scores, rows, index.class_names)
        write_json(Path(run_dir) / f"eval_{split}.json", result)
    return result


@torch.no_grad()
def predict_images(run_dir: PathLike, images: Sequence[PathLike], top_k: int = 5, device: str = "auto") -> list[dict]:
    """Top-``top_k`` classes with sigmoid scores for each image file, using the run's best checkpoint."""
    from wsml.builders import model_info, resolve_device
    from wsml.data.loading import load_image
    from wsml.data.transforms import build_transform
    from wsml.distributed import DistInfo

    if top_k < 1:
        raise ValueError(f"--top-k must be >= 1, got {top_k}")
    dev = resolve_device(device, DistInfo())
    cfg, index, model, ckpt = load_run(run_dir, dev, with_index=False)
    info = ckpt.get("model_info") or model_info(cfg, index)  # older checkpoints: from the data set
    if info["kind"] != "images":
        raise ValueError(f"run {run_dir} was trained on feature vectors; predict needs an image model")
    ch, class_names = info["in_chans"], info["class_names"]
    mean_std = model.default_mean_std
    tf = build_transform(cfg.data.image_size, False, *(mean_std or (None, None)), channels=ch)
    out = []
    for path in images:
        x = tf(load_image(str(path), ch))[None].to(dev)
        probs = torch.sigmoid(model(x).float())[0].cpu().numpy()
        order = np.argsort(-probs, kind="stable")[: min(top_k, len(probs))]
        out.append({"image": str(path), "top": [{"class": class_names[i], "score": float(probs[i])}
                                                for i in order]})
    return out
