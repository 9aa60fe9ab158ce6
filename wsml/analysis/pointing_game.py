"""The Pointing Game (Zhang et al. 2016/2018; paper §4.4, Table 4) on class activation maps (CAM).

Definition used by wsml (the paper's):

* pairs: every (image, class) of the evaluated split whose **ground truth** says the class is present
  (full label 1) *and* that has at least one box of that class; positives without a box are counted
  in ``no_box`` and left out (they cannot be scored);
* point: the CAM of that class for that image is upsampled (bilinear, ``align_corners=False``) to the
  image's size in pixels ``(H, W)``; the point is the first maximum in row-major order, pixel
  ``(x, y)`` = (column, row);
* hit: the pixel's centre ``(x + 0.5, y + 0.5)`` lies inside some box of that class (x0 ≤ x+0.5 ≤ x1 and
  y0 ≤ y+0.5 ≤ y1, boxes in pixels, widened by ``tolerance`` pixels on each side; default 0 as in the
  paper, Zhang et al. used 15);
* score: hit rate #hit / (#hit + #miss) per class, averaged over the classes that have at least one pair,
  ×100.

``random_score`` is the score of a point drawn uniformly over the image (the expected hit rate of a pair
is the fraction of the image covered by the union of its class's boxes): the chance level to compare with.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from wsml.analysis._common import to_numpy


def cam_peaks(cams: torch.Tensor, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Pixel (x, y) of the maximum of each map [K, h, w] once upsampled to ``size`` = (H, W)."""
    if cams.ndim != 3:
        raise ValueError(f"cam_peaks: expected maps [K, h, w], got shape {tuple(cams.shape)}")
    H, W = int(size[0]), int(size[1])
    if H < 1 or W < 1:
        raise ValueError(f"cam_peaks: bad image size {size}")
    up = F.interpolate(cams[:, None].float(), size=(H, W), mode="bilinear", align_corners=False)[:, 0]
    flat = up.reshape(up.shape[0], -1).argmax(1).cpu().numpy()
    return flat % W, flat // W


def point_in_boxes(x: float, y: float, boxes: np.ndarray, tolerance: float = 0.0) -> bool:
    """True when the centre of pixel (x, y) is inside any box row (x0, y0, x1, y1) widened by ``tolerance``."""
    if len(boxes) == 0:
        return False
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    cx, cy = x + 0.5, y + 0.5
    inside = (b[:, 0] - tolerance <= cx) & (cx <= b[:, 2] + tolerance) & (b[:, 1] - tolerance <= cy) & \
             (cy <= b[:, 3] + tolerance)
    return bool(inside.any())


def box_coverage(boxes: np.ndarray, size: tuple[int, int]) -> float:
    """Fraction of an (H, W) image's pixels whose centre lies in the union of the boxes (x0, y0, x1, y1)."""
    H, W = int(size[0]), int(size[1])
    cx, cy = np.arange(W) + 0.5, np.arange(H) + 0.5
    mask = np.zeros((H, W), dtype=bool)
    for x0, y0, x1, y1 in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
        mask |= ((cy >= y0) & (cy <= y1))[:, None] & ((cx >= x0) & (cx <= x1))[None, :]
    return float(mask.mean())


class PointingGame:
    """Accumulates hits and misses batch by batch; ``result()`` gives the score (see module doc)."""

    def __init__(self, num_classes: int, tolerance: float = 0.0, class_names: Optional[Sequence[str]] = None):
        self.num_classes = int(num_classes)
        self.tolerance = float(tolerance)
        self.class_names = list(class_names) if class_names is not None else [str(c) for c in range(num_classes)]
        self.hits = np.zeros(self.num_classes, dtype=np.int64)
        self.misses = np.zeros(self.num_classes, dtype=np.int64)
        self.chance = np.zeros(self.num_classes, dtype=np.float64)
        self.no_box = 0

    def update(self, cams: torch.Tensor, full: Any, boxes: np.ndarray, sizes: Sequence[tuple[int, int]]) -> None:
        """Score one batch: cams [B, C, h, w]; full labels [B, C]; boxes [M, 6] rows (i, class, x0, y0, x1, y1)
        with i the image's position in this batch; sizes: (H, W) of each image in pixels."""
        full = to_numpy(full)
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 6)
        if cams.ndim != 4 or cams.shape[:2] != full.shape or cams.shape[1] != self.num_classes:
            raise ValueError(f"pointing game: cams {tuple(cams.shape)} do not match labels {full.shape} "
                             f"({self.num_classes} classes)")
        if len(sizes) != full.shape[0]:
            raise ValueError(f"pointing game: {len(sizes)} image sizes for {full.shape[0]} images")
        for i in range(full.shape[0]):
            present = np.nonzero(full[i] == 1)[0]
            own = boxes[boxes[:, 0] == i]
            with_box = [c for c in present if (own[:, 1] == c).any()]
            self.no_box += len(present) - len(with_box)
            if not with_box:
                continue
            xs, ys = cam_peaks(cams[i, with_box], sizes[i])
            for c, x, y in zip(with_box, xs, ys):
                cb = own[own[:, 1] == c, 2:]
                if point_in_boxes(x, y, cb, self.tolerance):
                    self.hits[c] += 1
                else:
                    self.misses[c] += 1
                self.chance[c] += box_coverage(cb, sizes[i])

    def result(self) -> dict:
        """score (mean per-class hit rate ×100), random_score (chance level), per-class rates and counts."""
        pairs = self.hits + self.misses
        scored = pairs > 0
        rate = np.where(scored, self.hits / np.maximum(pairs, 1), np.nan)
        chance = np.where(scored, self.chance / np.maximum(pairs, 1), np.nan)
        return {
            "score": float(100 * np.nanmean(rate)) if scored.any() else float("nan"),
            "random_score": float(100 * np.nanmean(chance)) if scored.any() else float("nan"),
            "overall_hit_rate": float(100 * self.hits.sum() / pairs.sum()) if pairs.sum() else float("nan"),
            "pairs": int(pairs.sum()), "hits": int(self.hits.sum()), "no_box": int(self.no_box),
            "classes_scored": int(scored.sum()), "tolerance": self.tolerance,
            "per_class": {self.class_names[c]: {"hits": int(self.hits[c]), "pairs": int(pairs[c]),
                                                "rate": float(100 * rate[c])}
                          for c in range(self.num_classes) if scored[c]},
        }


def pointing_game(cams: torch.Tensor, full: Any, boxes: np.ndarray, sizes: Sequence[tuple[int, int]],
                  tolerance: float = 0.0, class_names: Optional[Sequence[str]] = None) -> dict:
    """One-shot Pointing Game on cams [N, C, h, w], full labels [N, C], boxes [M, 6] (row, class, x0, y0, x1, y1)."""
    game = PointingGame(cams.shape[1], tolerance, class_names)
    game.update(cams, full, boxes, sizes)
    return game.result()
