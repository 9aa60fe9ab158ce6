"""Qualitative examples of label modification (paper Fig 3): which labels LL-* changed, right or wrong.

Uses the run's ``modifications.npz`` (written by ModificationCallback; rows are training-split row ids)
and the prepared data set the run trained on (:attr:`wsml.runs.RunFolder.dataset`) for images and labels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from wsml._types import PathLike
from wsml.analysis.modification import load_modifications, modified_by_row
from wsml.analysis.plots import plot_qualitative
from wsml.labels import POS, as_full, as_observed


def load_image(split: Any, row: int, root: str = "") -> np.ndarray:
    """Pixels of one sample of a data set split: the stored uint8 array, or the image file under ``root``."""
    images = getattr(split, "images", None)
    if images is not None:
        return np.asarray(images[row])
    if split.samples is None:
        raise ValueError("this data set has no images (feature data): no pictures to show")
    from PIL import Image

    path = Path(root) / split.samples[row]
    if not path.is_file():
        raise FileNotFoundError(f"image {path} (row {row}) not found")
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def image_size(split: Any, row: int, root: str = "") -> tuple[int, int]:
    """(H, W) in pixels of one sample (read from the array, or the file's header only)."""
    images = getattr(split, "images", None)
    if images is not None:
        return int(images.shape[1]), int(images.shape[2])
    from PIL import Image

    with Image.open(Path(root) / split.samples[row]) as im:
        return int(im.height), int(im.width)


def pick_rows(log: dict, n: int = 4, failures: int = 1) -> list[int]:
    """Training rows to show: ``n - failures`` rows whose modifications were all truly positive (most
    modified epochs first) and ``failures`` rows with a wrong modification, as the paper's Fig 3 does."""
    rows = np.asarray(log["row"])
    if rows.size == 0:
        return []
    uniq = np.unique(rows)
    wrong = np.array([int((log["truth"][rows == r] == 0).sum()) for r in uniq])
    count = np.array([int((rows == r).sum()) for r in uniq])
    good = uniq[wrong == 0][np.argsort(-count[wrong == 0], kind="stable")]
    bad = uniq[wrong > 0][np.argsort(-wrong[wrong > 0], kind="stable")]
    n_bad = min(failures, len(bad))
    picked = list(good[: n - n_bad]) + list(bad[:n_bad])
    if len(picked) < n:
        picked += [r for r in bad[n_bad:] if r not in picked][: n - len(picked)]
    return [int(r) for r in picked]


def qualitative_items(log: dict, split: Any, class_names: Sequence[str], rows: Sequence[int],
                      root: str = "") -> list[dict]:
    """The items for ``plot_qualitative``: image, GT, observed positives and per-epoch modifications."""
    obs = split.train_targets()
    items = []
    for r in rows:
        if not 0 <= r < len(split):
            raise ValueError(f"row {r} is out of range for a training split of {len(split)} rows")
        o = as_observed(obs, np.array([r]))[0]
        full = None if split.full is None else as_full(split.full, np.array([r]))[0]  # dense or sparse labels
        gt = [] if full is None else [class_names[c] for c in np.flatnonzero(full)]
        epochs = {e: [(class_names[c], ok) for c, ok in mods] for e, mods in modified_by_row(log, r).items()}
        items.append({"image": load_image(split, r, root), "name": f"train row {r}", "gt": gt,
                      "observed": [class_names[c] for c in np.nonzero(o == POS)[0]], "epochs": epochs})
    return items


def make_qualitative(run_dir: PathLike, out: PathLike, index: Any = None,
                     rows: Optional[Sequence[int]] = None, n: int = 4) -> Optional[Path]:
    """Write the Fig 3 figure of a LL run to ``out``; None when the run has no modification log."""
    log = load_modifications(run_dir)
    if log is None or log["row"].size == 0:
        return None
    if index is None:
        from wsml.runs import RunFolder

        index = RunFolder(run_dir).dataset
    rows = list(rows) if rows is not None else pick_rows(log, n)
    items = qualitative_items(log, index["train"], index.class_names, rows, index.root)
    return plot_qualitative(items, out)
