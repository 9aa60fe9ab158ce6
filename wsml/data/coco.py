"""MS-COCO 2014 adapter (80 classes) from ``annotations/instances_{train,val}2014.json``.

Reference protocol (Cole et al. 2021, used by the paper): rows are the image ids with at least one
annotation, sorted **as strings** (the reference code's order, which the seeded observation protocol
depends on); classes follow the JSON ``categories`` list; a class is positive when the image has any
annotation of it (crowd annotations included). Official train2014 -> train/val (20 %), val2014 -> test.
Boxes are the annotations' ``bbox = [x, y, w, h]`` as ``(x0, y0, x1, y1) = (x, y, x + w, y + h)``.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any, Optional

import numpy as np

from wsml.data._io import boxes_array, check_images, locate, need_file, protocol_options, require_root
from wsml.data.index import DatasetIndex, Split
from wsml.data.protocol import reference_splits


def load_coco_json(path: Path) -> dict:
    """The annotation file read with pycocotools (the ``coco`` extra); errors name the file."""
    try:
        from pycocotools.coco import COCO
    except ImportError:
        raise ImportError("the COCO adapter needs pycocotools: pip install 'wsml[coco]'") from None
    need_file(path, "COCO instances annotation file")
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress messages
            data = COCO(str(path)).dataset
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}, line {e.lineno}: invalid JSON ({e.msg})") from None
    except (AssertionError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a COCO annotation file ({type(e).__name__}: {e})") from None
    for key in ("categories", "annotations"):
        if not isinstance(data.get(key), list):
            raise ValueError(f"{path}: missing or invalid '{key}' list")
    return data


def _coco_split(base: Path, split: str, names: Optional[list], boxes: bool, missing: str, source: dict):
    path = base / "annotations" / f"instances_{split}2014.json"
    data = load_coco_json(path)
    try:
        cat_names = [c["name"] for c in data["categories"]]
        cat_index = {c["id"]: i for i, c in enumerate(data["categories"])}
    except (KeyError, TypeError):
        raise ValueError(f"{path}: every category needs an 'id' and a 'name'") from None
    if names is not None and cat_names != names:
        raise ValueError(f"{path}: categories differ from those of instances_train2014.json")
    positives: dict[int, set] = {}
    anns = []
    for k, ann in enumerate(data["annotations"]):
        try:
            img, cat = int(ann["image_id"]), ann["category_id"]
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{path}: annotation #{k} lacks a valid image_id/category_id") from None
        if cat not in cat_index:
            raise ValueError(f"{path}: annotation #{k} (id {ann.get('id')}) has unknown category_id {cat!r}")
        positives.setdefault(img, set()).add(cat_index[cat])
        anns.append((img, cat_index[cat], ann.get("bbox"), k))
    ids = sorted(positives, key=str)
    paths = [f"{split}2014/COCO_{split}2014_{i:012d}.jpg" for i in ids]
    keep = check_images(base, paths, missing, f"coco/{split}")
    source[split] = {"images_annotated": len(ids), "dropped_missing_image": int((~keep).sum()),
                     "rows": int(keep.sum())}
    ids = [i for i, k in zip(ids, keep) if k]
    paths = [p for p, k in zip(paths, keep) if k]
    row = {img: r for r, img in enumerate(ids)}
    full = np.zeros((len(ids), len(cat_names)), dtype=np.uint8)
    box_rows = []
    for img, c, bbox, k in anns:
        if img not in row:
            continue
        full[row[img], c] = 1
        if boxes:
            if not (isinstance(bbox, list) and len(bbox) == 4):
                raise ValueError(f"{path}: annotation #{k} has an invalid bbox {bbox!r} (expected [x, y, w, h])")
            x, y, w, h = (float(v) for v in bbox)
            box_rows.append((row[img], c, x, y, x + w, y + h))
    return cat_names, Split(samples=paths, full=full, boxes=boxes_array(box_rows) if boxes else None)


def build_coco(root: Optional[str], *, boxes: bool = True, missing_images: str = "error",
               **options: Any) -> DatasetIndex:
    """MS-COCO 2014 under ``root`` (holding ``annotations/``, ``train2014/`` and ``val2014/``).

    ``options`` are the reference-protocol options (num_pos, num_neg, seed, val_frac, train_frac,
    train_frac_seed); ``missing_images``: "error" | "drop" | "ignore".
    """
    opts = protocol_options("coco", options)
    base = locate(require_root(root, "coco"), ("", "coco"), "annotations/instances_train2014.json", "coco")
    source: dict = {}
    names, train = _coco_split(base, "train", None, boxes, missing_images, source)
    _, test = _coco_split(base, "val", names, boxes, missing_images, source)
    meta = {"source": {"format": "COCO2014", "path": str(base), "row_order": "image ids sorted as strings",
                       "official_splits": {"train": "train2014", "test": "val2014"}, **source}}
    return reference_splits("coco", names, train, test, root=str(base), meta=meta, **opts)
