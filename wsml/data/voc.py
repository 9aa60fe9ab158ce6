"""PASCAL VOC 2012 adapter (20 classes): image-level labels from ``ImageSets/Main``, boxes from ``Annotations``.

Reference protocol (Cole et al. 2021, used by the paper): a class is positive only where its
``<class>_{train,val}.txt`` flag is 1; flag 0 ("difficult": the class appears only in difficult objects) and
-1 are negative. Images without any positive are dropped, rows are sorted by file name, classes are in the
usual alphabetical order. Official train -> train/val (20 %), official val -> test.

Boxes (for localisation analyses) come from ``Annotations/<id>.xml``. Objects marked ``difficult`` are left
out by default, which keeps boxes consistent with the labels (a class seen only in difficult objects is a
negative). Coordinates are converted from VOC's 1-based inclusive pixels to 0-based continuous
``(x0, y0, x1, y1) = (xmin - 1, ymin - 1, xmax, ymax)``, the convention COCO boxes already use.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Optional

import numpy as np

from wsml.data._io import (
    boxes_array,
    check_images,
    locate,
    protocol_options,
    read_id_table,
    require_root,
    rows_from_positives,
    to_int,
)
from wsml.data.index import DatasetIndex, Split
from wsml.data.protocol import reference_splits

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable", "dog",
    "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)


def read_voc_labels(base: Path, phase: str) -> tuple[list[str], np.ndarray, int]:
    """Image ids (sorted by file name), full labels and the number of images dropped for having no positive."""
    positives: dict[str, list[int]] = {}
    seen: set[str] = set()
    for c, cls in enumerate(VOC_CLASSES):
        path = base / "ImageSets" / "Main" / f"{cls}_{phase}.txt"
        for line, fields in read_id_table(path, "<image_id> <flag>"):
            if len(fields) != 2:
                raise ValueError(f"{path}, line {line}: expected '<image_id> <flag>', got {' '.join(fields)!r}")
            flag = to_int(fields[1], path, line, "flag", (-1, 0, 1))
            seen.add(fields[0])
            if flag == 1:
                positives.setdefault(fields[0], []).append(c)
    ids = sorted(positives, key=lambda i: i + ".jpg")
    return ids, rows_from_positives([positives[i] for i in ids], len(VOC_CLASSES)), len(seen) - len(ids)


def _coord(bb: ET.Element, key: str, path: Path, k: int) -> float:
    text = bb.findtext(key)
    try:
        return float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{path}: object #{k} has a missing or non-numeric bndbox/{key} ({text!r})") from None


def read_voc_boxes(base: Path, ids: list[str], include_difficult: bool = False) -> np.ndarray:
    """Rows ``(sample, class, x0, y0, x1, y1)`` for the objects in ``Annotations/<id>.xml`` of each image."""
    cls_id = {c: i for i, c in enumerate(VOC_CLASSES)}
    rows = []
    for r, img in enumerate(ids):
        path = base / "Annotations" / f"{img}.xml"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: file not found (VOC annotation of image {img}; pass boxes=False to skip)")
        try:
            objects = ET.parse(path).getroot().findall("object")
        except ET.ParseError as e:
            raise ValueError(f"{path}, line {e.position[0]}: malformed XML ({e})") from None
        for k, obj in enumerate(objects, start=1):
            name = (obj.findtext("name") or "").strip()
            if name not in cls_id:
                raise ValueError(f"{path}: object #{k} has unknown class name {name!r}")
            difficult = (obj.findtext("difficult") or "0").strip()
            if difficult not in ("0", "1"):
                raise ValueError(f"{path}: object #{k} has difficult={difficult!r}, expected 0 or 1")
            if difficult == "1" and not include_difficult:
                continue
            bb = obj.find("bndbox")
            if bb is None:
                raise ValueError(f"{path}: object #{k} ({name}) has no bndbox")
            x0, y0, x1, y1 = (_coord(bb, key, path, k) for key in ("xmin", "ymin", "xmax", "ymax"))
            rows.append((r, cls_id[name], x0 - 1.0, y0 - 1.0, x1, y1))
    return boxes_array(rows)


def _official_split(base: Path, phase: str, boxes: bool, include_difficult: bool, missing: str,
                    source: dict) -> Split:
    ids, full, dropped = read_voc_labels(base, phase)
    keep = check_images(base / "JPEGImages", [i + ".jpg" for i in ids], missing, f"voc/{phase}")
    source[phase] = {"images_listed": len(ids) + dropped, "dropped_no_positive": dropped,
                     "dropped_missing_image": int((~keep).sum()), "rows": int(keep.sum())}
    ids = [i for i, k in zip(ids, keep) if k]
    return Split(samples=[i + ".jpg" for i in ids], full=full[keep],
                 boxes=read_voc_boxes(base, ids, include_difficult) if boxes else None)


def build_voc(root: Optional[str], *, boxes: bool = True, include_difficult: bool = False,
              missing_images: str = "error", **options: Any) -> DatasetIndex:
    """PASCAL VOC 2012 under ``root`` (the folder holding ``VOCdevkit``, or ``VOCdevkit``/``VOC2012`` itself).

    ``options`` are the reference-protocol options (num_pos, num_neg, seed, val_frac, train_frac,
    train_frac_seed); ``missing_images``: "error" | "drop" | "ignore" for images absent from ``JPEGImages``.
    """
    opts = protocol_options("voc", options)
    base = locate(require_root(root, "voc"), ("VOCdevkit/VOC2012", "VOC2012", ""), "ImageSets/Main", "voc")
    source: dict = {}
    train = _official_split(base, "train", boxes, include_difficult, missing_images, source)
    test = _official_split(base, "val", boxes, include_difficult, missing_images, source)
    meta = {"source": {"format": "VOC2012", "path": str(base), "include_difficult_boxes": include_difficult,
                       "box_coordinates": "0-based continuous (xmin-1, ymin-1, xmax, ymax)",
                       "official_splits": {"train": "train", "test": "val"}, **source}}
    return reference_splits("voc", list(VOC_CLASSES), train, test, root=str(base / "JPEGImages"), meta=meta,
                            **opts)
