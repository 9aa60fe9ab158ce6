"""NUS-WIDE adapter (81 concepts) from the official release's ground-truth files.

Layout (the official NUS-WIDE download): ``ImageList/{Train,Test}Imagelist.txt`` (Windows paths such as
``actor\\0001_2124494179.jpg``, relative to ``Flickr/``), ``Concepts81.txt`` (one concept per line, also
accepted under ``ConceptsList/``) and ``Groundtruth/TrainTestLabels/Labels_<concept>_{Train,Test}.txt`` (one
0/1 per line, aligned with the image list). Official Train -> train/val (20 %), Test -> test.

Cole et al. (2021), whose split the paper uses, trained on the images they could still re-crawl in 2020
and published only the resulting label files. Two documented choices reproduce that setting from the
official files: images whose file is missing under ``Flickr/`` are dropped (``missing_images="drop"``, the
default here) and images without any positive concept are dropped (``drop_empty=True``), as in the
VOC/COCO protocol: the single-positive setting needs one positive per training image. Both counts are
recorded in ``meta["source"]``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np

from wsml.data._io import (
    check_images,
    locate,
    need_file,
    protocol_options,
    read_lines,
    read_names,
    require_root,
    to_int,
)
from wsml.data.index import DatasetIndex, Split
from wsml.data.protocol import reference_splits


def read_concepts(base: Path) -> list[str]:
    """The 81 concept names in file order (``Concepts81.txt`` or ``ConceptsList/Concepts81.txt``)."""
    path = base / "Concepts81.txt"
    if not path.is_file() and (base / "ConceptsList" / "Concepts81.txt").is_file():
        path = base / "ConceptsList" / "Concepts81.txt"
    names = read_names(path, "NUS-WIDE concept list")
    if not names:
        raise ValueError(f"{path}: no concept names")
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: duplicate concept names")
    return names


def read_image_list(path: Path) -> list[str]:
    """Image paths relative to ``Flickr/``, with ``/`` separators (a leading ``...\\Flickr\\`` is removed)."""
    out = []
    for _, s in read_lines(path, "NUS-WIDE image list"):
        p = s.replace("\\", "/")
        if "Flickr/" in p:
            p = p.split("Flickr/", 1)[1]
        out.append(p.lstrip("/"))
    return out


def read_label_column(path: Path, n: int) -> np.ndarray:
    """One 0/1 per line, exactly ``n`` lines (the length of the image list)."""
    tokens = need_file(path, "NUS-WIDE labels").read_text(encoding="utf-8", errors="replace").split()
    if len(tokens) == n and set(tokens) <= {"0", "1"}:  # fast path: 81 files x 160k lines
        return (np.asarray(tokens) == "1").astype(np.uint8)
    vals = [to_int(s.split()[0], path, i, "label", (0, 1)) for i, s in read_lines(path, "NUS-WIDE labels")]
    if len(vals) != n:
        raise ValueError(f"{path}: has {len(vals)} labels but the image list has {n} images")
    return np.asarray(vals, dtype=np.uint8)


def _official_split(base: Path, phase: str, concepts: list[str], images: str, missing: str, drop_empty: bool,
                    source: dict) -> Split:
    paths = read_image_list(base / "ImageList" / f"{phase}Imagelist.txt")
    labels_dir = base / "Groundtruth" / "TrainTestLabels"
    full = np.stack([read_label_column(labels_dir / f"Labels_{c}_{phase}.txt", len(paths)) for c in concepts], 1)
    has_pos = full.any(1) if drop_empty else np.ones(len(paths), dtype=bool)
    on_disk = check_images(base / images, paths, missing, f"nus/{phase}")
    keep = has_pos & on_disk
    source[phase] = {"images_listed": len(paths), "dropped_no_positive": int((~has_pos).sum()),
                     "dropped_missing_image": int((~on_disk).sum()), "rows": int(keep.sum())}
    if not keep.any():
        raise ValueError(f"nus/{phase}: no image left (no image found under {base / images}, or none has a positive)")
    return Split(samples=[p for p, k in zip(paths, keep) if k], full=full[keep])


def build_nus(root: Optional[str], *, images: str = "Flickr", missing_images: str = "drop", drop_empty: bool = True,
              **options: Any) -> DatasetIndex:
    """NUS-WIDE under ``root`` (the folder with ``ImageList/``, ``Groundtruth/`` and ``Flickr/``).

    ``options`` are the reference-protocol options (num_pos, num_neg, seed, val_frac, train_frac,
    train_frac_seed). ``images`` is the image folder under ``root``.
    """
    opts = protocol_options("nus", options)
    base = locate(require_root(root, "nus"), ("", "NUS-WIDE", "nuswide"), "ImageList/TrainImagelist.txt", "nus")
    concepts = read_concepts(base)
    source: dict = {}
    train = _official_split(base, "Train", concepts, images, missing_images, drop_empty, source)
    test = _official_split(base, "Test", concepts, images, missing_images, drop_empty, source)
    meta = {"source": {"format": "NUS-WIDE", "path": str(base), "drop_empty": drop_empty,
                       "missing_images": missing_images, "official_splits": {"train": "Train", "test": "Test"},
                       **source}}
    return reference_splits("nus", concepts, train, test, root=str(base / images), meta=meta, **opts)
