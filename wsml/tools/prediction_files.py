"""``wsml predict`` output: per-class scores plus labels thresholded with the run's val thresholds.

Two CSV layouts and one JSON layout:

* long CSV (default): ``image,rank,class,score,threshold,predicted`` - one row per image and class, the
  ``top_k`` best classes of each image by score (``top_k=0``: every class);
* wide CSV (``wide=True``): ``path,labels,score:<class>...`` - one row per image; ``labels`` holds the
  predicted classes ``;``-separated and ``path`` is relative to the CSV's folder, so the file is itself a labels
  CSV that ``wsml prepare csv`` reads (images outside that folder: ``allow_outside_root=true``);
* JSON: a list of ``{"image", "labels", "scores": {class: score}, "thresholds": {class: thr}, "top": [...]}``.

``predicted`` / ``labels`` use ``score >= threshold`` with the per-class thresholds of
:mod:`wsml.tools.thresholds` (chosen on val), never the top-k cut, so an image may have zero or many labels.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from wsml._types import PathLike
from wsml.data.label_files import SCORE_PREFIX
from wsml.runs import RunFolder
from wsml.tools.thresholds import apply_thresholds


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
    parts = [s for _, s in run_image_score_batches(run, images, class_names, device)]
    return np.concatenate(parts) if parts else np.zeros((0, len(class_names)))


def run_image_score_batches(run: RunFolder, images: Sequence[PathLike], class_names: Sequence[str],
                            device: str = "auto", batch: int = 256, skipped: Optional[list] = None):
    """(image paths, sigmoid scores float64 [b, C] in ``class_names`` order) for ``batch`` images at a time, as
    they are scored (:func:`wsml.evaluation.iter_image_scores`): memory does not grow with the number of images.
    With a ``skipped`` list, unreadable images are left out and their error lines collected there."""
    from wsml.evaluation import image_transform, iter_image_scores

    have = list(run.model_info()["class_names"])
    missing = [c for c in class_names if c not in have]
    if missing:
        raise ValueError(f"{run.path}: the model has no class {missing[0]!r} (thresholds.json is stale?)")
    cols = np.array([have.index(c) for c in class_names], dtype=np.int64)
    model = run.model(device)
    paths, rows = [], []
    for path, probs in zip(images, iter_image_scores(model, images, *image_transform(run, model), skipped)):
        if probs is None:
            continue
        paths.append(path)
        rows.append(probs[cols].astype(np.float64))
        if len(paths) == batch:
            yield paths, np.stack(rows)
            paths, rows = [], []
    if paths:
        yield paths, np.stack(rows)


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


class PredictionWriter:
    """Writes prediction records as they come, in :func:`write_predictions`'s layouts (the same bytes), to
    ``<path>.partial`` first; :meth:`close` renames it to ``path``, so an interrupted run leaves no half file
    under the final name (the rows written so far stay in the .partial file)."""

    def __init__(self, path: PathLike, class_names: Sequence[str], wide: bool = False):
        self.path = Path(path)
        self.suffix = self.path.suffix.lower()
        if self.suffix not in (".csv", ".json"):
            raise ValueError(f"prediction file must end in .csv or .json, got {self.path}")
        self.partial = self.path.with_name(self.path.name + ".partial")
        self.class_names, self.wide, self.count = list(class_names), wide, 0
        self.f = open(self.partial, "w", newline="", encoding="utf-8")
        self.csv = csv.writer(self.f) if self.suffix == ".csv" else None
        if self.csv is not None:
            self.csv.writerow(["path", "labels"] + [f"{SCORE_PREFIX}{c}" for c in self.class_names] if wide else
                              ["image", "rank", "class", "score", "threshold", "predicted"])

    def write(self, records: list[dict]) -> None:
        for r in records:
            if self.csv is None:  # the layout of json.dumps(list, indent=2), one element at a time
                body = "\n".join("  " + line for line in json.dumps(r, indent=2).split("\n"))
                self.f.write(("[\n" if self.count == 0 else ",\n") + body)
            elif self.wide:  # a labels CSV: image paths relative to its folder, where `wsml prepare csv` reads them
                self.csv.writerow([os.path.relpath(Path(r["image"]).resolve(), self.path.parent.resolve()),
                                   ";".join(r["labels"])]
                                  + [f"{r['scores'][c]:.6f}" for c in self.class_names])
            else:
                for k, t in enumerate(r["top"], 1):
                    self.csv.writerow([r["image"], k, t["class"], f"{t['score']:.6f}", f"{t['threshold']:.6f}",
                                       int(t["predicted"])])
            self.count += 1
        self.f.flush()

    def close(self) -> Path:
        if self.csv is None:
            self.f.write("\n]\n" if self.count else "[]\n")
        self.f.close()
        self.partial.replace(self.path)
        return self.path


def write_predictions(path: PathLike, records: list[dict], class_names: Sequence[str], wide: bool = False) -> Path:
    """Write ``records`` (from :func:`prediction_records`) as .json, long .csv or (``wide``) wide .csv."""
    w = PredictionWriter(path, class_names, wide)
    w.write(records)
    return w.close()
