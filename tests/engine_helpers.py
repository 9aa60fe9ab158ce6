"""Tiny synthetic data sets for the engine / CLI / DDP tests (no Fashion-MNIST needed, seconds to train)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wsml.config import load_config
from wsml.data.index import DatasetIndex, Split
from wsml.labels import observe_labels


def _full_labels(rng: np.random.Generator, n: int, c: int) -> np.ndarray:
    full = (rng.random((n, c)) < 0.35).astype(np.uint8)
    empty = full.sum(1) == 0
    full[empty, rng.integers(0, c, int(empty.sum()))] = 1  # every sample has a positive
    return full


def quadrant_images(full: np.ndarray, rng: np.random.Generator, size: int = 16) -> np.ndarray:
    """uint8 [N, size, size]: class c (of 4) lights quadrant c with a noisy texture; background is dark noise."""
    n = len(full)
    h = size // 2
    img = rng.integers(0, 40, (n, size, size)).astype(np.int32)
    for c, (r, q) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        on = full[:, c] == 1
        img[on, r * h:(r + 1) * h, q * h:(q + 1) * h] += rng.integers(120, 215, (int(on.sum()), h, h))
    return np.clip(img, 0, 255).astype(np.uint8)


def make_image_index(folder: Path, n_train: int = 96, n_val: int = 40, n_test: int = 37, seed: int = 0) -> Path:
    """A prepared 4-class image data set (16x16 grayscale arrays) with one observed positive per train image."""
    rng = np.random.default_rng(seed)
    splits = {}
    for name, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        full = _full_labels(rng, n, 4)
        obs = observe_labels(full, num_pos=1, num_neg=0, seed=1200) if name == "train" else None
        splits[name] = Split(full=full, observed=obs, images=quadrant_images(full, rng))
    index = DatasetIndex("quads", ["q0", "q1", "q2", "q3"], splits, kind="images",
                         meta={"image_size": [16, 16], "channels": 1})
    index.save(folder)
    return folder


def make_feature_index(folder: Path, n_train: int = 64, n_val: int = 37, n_test: int = 37, dim: int = 12,
                       classes: int = 6, seed: int = 0) -> Path:
    """A prepared feature-vector data set: x = full @ W + noise, so a linear model can learn it."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(classes, dim)).astype(np.float32)
    splits = {}
    for name, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        full = _full_labels(rng, n, classes)
        x = (full @ w + 0.5 * rng.normal(size=(n, dim))).astype(np.float32)
        obs = observe_labels(full, num_pos=1, num_neg=0, seed=1200) if name == "train" else None
        splits[name] = Split(full=full, observed=obs, features=x)
    index = DatasetIndex("feats", [f"c{i}" for i in range(classes)], splits, kind="features")
    index.save(folder)
    return folder


def image_overrides(data: Path, out: Path, **extra) -> list[str]:
    """Overrides for a fast small-CNN run on :func:`make_image_index` data."""
    ov = {"data.path": str(data), "data.image_size": 16, "model.backbone": "small_cnn", "model.pretrained": False,
          "model.options": "{widths: [8, 16]}", "optim.name": "adam", "optim.lr": 3e-3, "train.batch_size": 16,
          "train.epochs": 3, "run.out": str(out), "run.quiet": True, "loss.name": "an"}
    ov.update(extra)
    return [f"{k}={v}" for k, v in ov.items()]


def image_config(data: Path, out: Path, **extra):
    return load_config(None, image_overrides(data, out, **extra))


class SelectionRecorder:
    """Callback: the (row id, class) pairs the LL loss modified in every batch, written per rank as JSON.

    Output: ``$WSML_TEST_RECORD_DIR/sel-rank<r>.json`` = {"<epoch>": [[[row, class], ...] per batch]}.
    """

    def __init__(self):
        self.record = {}

    def on_batch_end(self, ctx, batch, logits, loss_fn):
        rows, classes = loss_fn.last_modified
        pairs = sorted(zip(rows.tolist(), classes.tolist()))
        self.record.setdefault(str(ctx.epoch), []).append(pairs)

    def on_epoch_end(self, ctx, epoch):
        import json
        import os

        out = Path(os.environ["WSML_TEST_RECORD_DIR"]) / f"sel-rank{ctx.rank}.json"
        out.write_text(json.dumps(self.record))
        return {}


class SlowBatches:
    """Callback: sleeps after every training batch (so a subprocess run can be interrupted mid-training)."""

    def on_batch_end(self, ctx, batch, logits, loss_fn):
        import time

        time.sleep(0.1)


class LossStateDigest:
    """Callback: per epoch, a hash of the loss's state (ROLE estimates, LL-Cp corrections), one file per rank."""

    def on_epoch_end(self, ctx, epoch):
        import hashlib
        import json
        import os

        import torch

        h = hashlib.sha256()
        for k, v in sorted(ctx.loss_fn.state_dict().items()):
            if isinstance(v, torch.Tensor):
                h.update(k.encode() + v.detach().cpu().numpy().tobytes())
        out = Path(os.environ["WSML_TEST_RECORD_DIR"]) / f"loss-rank{ctx.rank}.json"
        record = json.loads(out.read_text()) if out.exists() else {}
        record[str(epoch)] = h.hexdigest()
        out.write_text(json.dumps(record))
        return {}
