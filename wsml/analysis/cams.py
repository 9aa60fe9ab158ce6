"""Class activation maps of a trained run: the Pointing Game over a split and CAM overlay figures (Table 4).

``evaluate_pointing_game(run_dir)`` loads the run's best checkpoint, computes ``model.cam(x)`` for every
image of the split (through the run's own evaluation loader: same resize and normalisation as training),
and scores it with :class:`~wsml.analysis.pointing_game.PointingGame` against the split's boxes. Boxes are
in the original image's pixels; the loader resizes the whole image (no crop), so each CAM is upsampled to
the original size (H, W) before its maximum is taken.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from wsml._types import PathLike
from wsml.analysis.pointing_game import PointingGame, cam_peaks, point_in_boxes
from wsml.analysis.qualitative import image_size, load_image


def _cam_run(run_dir: PathLike, device: str, split: str):
    """(run, model, its evaluation loader of ``split``) of a run whose data set has boxes and full labels."""
    from wsml.runs import RunFolder

    run = RunFolder(run_dir)
    model = run.model(device)
    s, index = run.split(split), run.dataset
    if index.kind != "images":
        raise ValueError(f"run {run_dir}: data set {index.name!r} holds feature vectors, not images: no CAMs")
    if s.boxes is None or s.full is None:
        raise ValueError(f"data set {index.name!r}/{split} has no {'boxes' if s.boxes is None else 'full labels'}: "
                         "CAMs and the Pointing Game need both (mosaics, VOC and COCO have them)")
    if not getattr(model, "spatial", True):
        raise ValueError(f"run {run_dir}: backbone {run.config.model.backbone!r} has no spatial feature map: no CAMs")
    return run, model, run.loader(split, model)


def _batch_boxes(boxes: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The split's boxes of ``rows`` with column 0 renumbered to the position in ``rows``."""
    pos = {int(r): i for i, r in enumerate(rows)}
    sel = np.isin(boxes[:, 0].astype(np.int64), rows)
    out = boxes[sel].astype(np.float64).copy()
    out[:, 0] = [pos[int(r)] for r in out[:, 0]]
    return out


@torch.no_grad()
def evaluate_pointing_game(run_dir: PathLike, split: str = "test", tolerance: float = 0.0,
                           max_images: Optional[int] = None, device: str = "auto", write: bool = True) -> dict:
    """Pointing Game of a run's best checkpoint on ``split``; writes ``analysis/pointing_game.json``."""
    from wsml.checkpoint import write_json

    run, model, loader = _cam_run(run_dir, device, split)
    index, dev = run.dataset, next(model.parameters()).device
    s = index[split]
    game = PointingGame(index.num_classes, tolerance, index.class_names)
    seen = 0
    for batch in loader:
        if batch is None:
            continue
        rows = np.asarray(batch["index"], dtype=np.int64)
        cams = model.cam(batch["input"].to(dev)).float()
        sizes = [image_size(s, int(r), index.root) for r in rows]
        game.update(cams, s.full[rows], _batch_boxes(s.boxes, rows), sizes)
        seen += len(rows)
        if max_images is not None and seen >= max_images:
            break
    result = {"run": str(run_dir), "split": split, "images": seen,
              "checkpoint_epoch": int(run.checkpoint().get("epoch", 0)),
              **game.result()}
    if write:
        out = Path(run_dir) / "analysis"
        out.mkdir(exist_ok=True)
        write_json(out / "pointing_game.json", result)
    return result


@torch.no_grad()
def cam_examples(run_dir: PathLike, rows: Sequence[int], split: str = "test", classes: Any = "gt",
                 device: str = "auto") -> list[dict]:
    """CAMs of some images. ``classes``: "gt" (each row's ground-truth classes), "predicted" (each row's
    top-1 predicted class) or a list with one class id per row. Each entry: row, class, score, the map
    upsampled to the image, its peak pixel (x, y), hit (peak inside a box of the class) and those boxes."""
    from wsml.data.loading import collate_items

    if isinstance(classes, str) and classes not in ("gt", "predicted"):
        raise ValueError(f"classes must be 'gt', 'predicted' or one class id per row, got {classes!r}")
    if not isinstance(classes, str) and len(classes) != len(rows):
        raise ValueError(f"{len(classes)} classes given for {len(rows)} rows")
    run, model, loader = _cam_run(run_dir, device, split)
    index, dev = run.dataset, next(model.parameters()).device
    s, ds = index[split], loader.dataset
    bad = [r for r in rows if not 0 <= r < len(s)]
    if bad:
        raise ValueError(f"rows {bad} are out of range for {index.name}/{split} ({len(s)} rows)")
    batch = collate_items([ds[int(np.searchsorted(ds.rows, r))] for r in rows])
    x = batch["input"].to(dev)
    cams = model.cam(x).float()
    probs = torch.sigmoid(model(x).float()).cpu().numpy()
    out = []
    for i, r in enumerate(rows):
        size = image_size(s, int(r), index.root)
        if classes == "gt":
            cls = list(np.nonzero(s.full[r])[0])
        else:
            cls = [int(np.argmax(probs[i]))] if classes == "predicted" else [int(classes[i])]
        for c in cls:
            up = F.interpolate(cams[i, c][None, None], size=size, mode="bilinear", align_corners=False)[0, 0]
            xs, ys = cam_peaks(cams[i, [c]], size)
            own = s.boxes[(s.boxes[:, 0] == r) & (s.boxes[:, 1] == c), 2:]
            out.append({"row": int(r), "class": int(c), "class_name": index.class_names[c],
                        "score": float(probs[i, c]), "cam": up.cpu().numpy(), "peak": (int(xs[0]), int(ys[0])),
                        "hit": point_in_boxes(xs[0], ys[0], own), "boxes": own, "gt": bool(s.full[r, c])})
    return out


def cam_overlay_figure(runs: dict[str, PathLike], rows: Sequence[int], out: PathLike, split: str = "test",
                       device: str = "auto", classes: str = "gt",
                       title: str = "CAM (Table 4 / appendix Fig 1)") -> Path:
    """Figure: one line per (image, class), the image then each run's CAM of that class (★ = maximum, white
    when it hits a box of the class). ``classes``: "gt" (every ground-truth class of each image) or
    "predicted" (the first run's top-1 class of each image, shown for every run)."""
    from wsml.analysis.plots import plot_cam_overlays
    from wsml.runs import RunFolder

    if not runs:
        raise ValueError("cam_overlay_figure: give at least one run")
    dirs = list(runs.values())
    first = cam_examples(dirs[0], rows, split, classes, device)
    pairs_rows = [e["row"] for e in first]
    pairs_cls = [e["class"] for e in first]
    per_run = {name: (first if d == dirs[0] else cam_examples(d, pairs_rows, split, pairs_cls, device))
               for name, d in runs.items()}
    index = RunFolder(dirs[0]).dataset
    items = []
    for k, ex in enumerate(first):
        tag = "" if ex["gt"] else " (not in GT)"
        items.append({"image": load_image(index[split], ex["row"], index.root),
                      "label": f"{split} row {ex['row']}: {ex['class_name']}{tag}", "boxes": ex["boxes"],
                      "cams": {name: (exs[k]["cam"], exs[k]["peak"], exs[k]["hit"]) for name, exs in per_run.items()}})
    return plot_cam_overlays(items, out, title=title)
