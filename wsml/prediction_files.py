"""``wsml predict`` output: per-class scores plus labels thresholded with the run's val thresholds.

Two CSV layouts and one JSON layout:

* long CSV (default): ``image,rank,class,score,threshold,predicted`` - one row per image and class, the
  ``top_k`` best classes of each image by score (``top_k=0``: every class);
* wide CSV (``wide=True``): ``path,labels,score:<class>...`` - one row per image; ``labels`` holds the
  predicted classes ``;``-separated, so the file is itself a labels CSV that ``wsml prepare csv`` reads;
* JSON: a list of ``{"image", "labels", "scores": {class: score}, "thresholds": {class: thr}, "top": [...]}``.

``predicted`` / ``labels`` use ``score >= threshold`` with the per-class thresholds of
:mod:`wsml.thresholds` (chosen on val), never the top-k cut, so an image may have zero or many labels.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Sequence

import numpy as np

from wsml._types import PathLike
from wsml.run_folder import RunFolder
from wsml.thresholds import apply_thresholds


def expand_images(items: Sequence[PathLike]) -> list[str]:
    """Image files from ``items``: files as given, folders replaced by their image files (recursive, sorted,
    hidden entries skipped); a missing path, or a folder without images, is an error naming it."""
    import os

    from wsml.data._io import IMAGE_EXTENSIONS

    out = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(str(Path(d) / f) for d, dirs, files in os.walk(p) for f in files
                           if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_EXTENSIONS
                           and not any(part.startswith(".") for part in Path(d).relative_to(p).parts))
            if not found:
                raise FileNotFoundError(f"folder {p} holds no image files ({', '.join(IMAGE_EXTENSIONS)})")
            out += found
        elif p.is_file():
            out.append(str(p))
        else:
            raise FileNotFoundError(f"image {p} does not exist")
    return out


def run_image_scores(run: RunFolder, images: Sequence[PathLike], class_names: Sequence[str],
                     device: str = "auto") -> np.ndarray:
    """Sigmoid scores [N, C] of image files by the run's best checkpoint (:func:`wsml.evaluation.score_images`),
    columns in ``class_names`` order (the thresholds' classes)."""
    from wsml.evaluation import image_transform, score_images

    have = list(run.model_info()["class_names"])
    missing = [c for c in class_names if c not in have]
    if missing:
        raise ValueError(f"{run.path}: the model has no class {missing[0]!r} (thresholds.json is stale?)")
    model = run.model(device)
    scores = score_images(model, images, *image_transform(run, model))
    return scores[:, [have.index(c) for c in class_names]].astype(np.float64)


def prediction_records(images: Sequence[PathLike], scores: np.ndarray, class_names: Sequence[str],
                       thresholds: Sequence[float], top_k: int = 0) -> list[dict]:
    """One dict per image: thresholded ``labels``, all ``scores``, the ``top`` top_k classes (0 = all)."""
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0 (0 = every class), got {top_k}")
    scores = np.asarray(scores, dtype=np.float64)
    pred = apply_thresholds(scores, thresholds)
    k = scores.shape[1] if top_k == 0 else min(top_k, scores.shape[1])
    out = []
    for i, img in enumerate(images):
        order = np.argsort(-scores[i], kind="stable")
        out.append({
            "image": str(img),
            "labels": [class_names[c] for c in order if pred[i, c]],
            "scores": {class_names[c]: float(scores[i, c]) for c in range(len(class_names))},
            "thresholds": {class_names[c]: float(thresholds[c]) for c in range(len(class_names))},
            "top": [{"class": class_names[c], "score": float(scores[i, c]), "threshold": float(thresholds[c]),
                     "predicted": bool(pred[i, c])} for c in order[:k]],
        })
    return out


def write_predictions(path: PathLike, records: list[dict], class_names: Sequence[str], wide: bool = False) -> Path:
    """Write ``records`` (from :func:`prediction_records`) as .json, long .csv or (``wide``) wide .csv."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".json"):
        raise ValueError(f"prediction file must end in .csv or .json, got {path}")
    if suffix == ".json":
        path.write_text(json.dumps(records, indent=2) + "\n")
        return path
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        if wide:
            w.writerow(["path", "labels"] + [f"score:{c}" for c in class_names])
            for r in records:
                w.writerow([r["image"], ";".join(r["labels"])] + [f"{r['scores'][c]:.6f}" for c in class_names])
        else:
            w.writerow(["image", "rank", "class", "score", "threshold", "predicted"])
            for r in records:
                for k, t in enumerate(r["top"], 1):
                    w.writerow([r["image"], k, t["class"], f"{t['score']:.6f}", f"{t['threshold']:.6f}",
                                int(t["predicted"])])
    return path
