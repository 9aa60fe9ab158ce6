"""CUB-200-2011 attributes adapter (312 binary attributes, not the 200 bird species).

Layout of the official ``CUB_200_2011.tgz``: ``CUB_200_2011/images.txt`` (``<id> <path>``),
``CUB_200_2011/train_test_split.txt`` (``<id> <is_train>``),
``CUB_200_2011/attributes/image_attribute_labels.txt``
(``<image_id> <attribute_id> <is_present> <certainty_id> <time>``; a few lines carry extra fields, so only the
first three are read) and the attribute names ``attributes.txt`` (``<id> <name>``, next to ``CUB_200_2011/`` in
the tarball; ``CUB_200_2011/attributes/attributes.txt`` and ``CUB_200_2011/attributes.txt`` are accepted too).

Reference protocol (Cole et al. 2021): every image is kept, in ``images.txt`` order, including those with
no positive attribute (they get no observed positive); official train -> train/val (20 %), test -> test.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np

from wsml.data._io import (
    check_images,
    locate,
    protocol_options,
    read_id_table,
    read_lines,
    require_root,
    to_int,
)
from wsml.data.index import DatasetIndex, Split
from wsml.data.protocol import reference_splits

_UNSET = 255


def find_attribute_names(base: Path) -> Path:
    for p in (base.parent / "attributes.txt", base / "attributes" / "attributes.txt", base / "attributes.txt"):
        if p.is_file():
            return p
    raise FileNotFoundError(f"cub: attribute names not found: looked for attributes.txt in {base.parent}, "
                            f"{base / 'attributes'} and {base}")


def read_attribute_names(path: Path) -> list[str]:
    """Names ordered by attribute id; ids must be 1..A without gaps."""
    rows = read_id_table(path, "<attribute_id> <name>")
    ids = [to_int(f[0], path, i, "attribute id") for i, f in rows]
    if sorted(ids) != list(range(1, len(ids) + 1)):
        raise ValueError(f"{path}: attribute ids must be 1..{len(ids)} without gaps or repeats")
    names = [" ".join(f[1:]) for _, f in rows]
    return [n for _, n in sorted(zip(ids, names))]


def read_attribute_labels(path: Path, row_of: dict[int, int], num_attrs: int) -> np.ndarray:
    """The {0,1} matrix [images, attributes] from ``image_attribute_labels.txt``; every pair exactly once."""
    full = np.full((len(row_of), num_attrs), _UNSET, dtype=np.uint8)
    for i, s in read_lines(path, "CUB attribute labels"):
        f = s.split(None, 3)
        if len(f) < 3:
            raise ValueError(f"{path}, line {i}: expected '<image_id> <attribute_id> <is_present> ...', got {s!r}")
        img, att = to_int(f[0], path, i, "image id"), to_int(f[1], path, i, "attribute id")
        if img not in row_of:
            raise ValueError(f"{path}, line {i}: image id {img} is not in images.txt")
        if not 1 <= att <= num_attrs:
            raise ValueError(f"{path}, line {i}: attribute id {att} is outside 1..{num_attrs}")
        r = row_of[img]
        if full[r, att - 1] != _UNSET:
            raise ValueError(f"{path}, line {i}: image {img}, attribute {att} is listed twice")
        full[r, att - 1] = to_int(f[2], path, i, "is_present", (0, 1))
    if (full == _UNSET).any():
        r, a = np.argwhere(full == _UNSET)[0]
        img = next(k for k, v in row_of.items() if v == r)
        raise ValueError(f"{path}: no label for image {img}, attribute {a + 1} "
                         f"({int((full == _UNSET).sum())} image/attribute pairs missing)")
    return full


def build_cub(root: Optional[str], *, missing_images: str = "error", **options: Any) -> DatasetIndex:
    """CUB-200-2011 attributes under ``root`` (the folder holding ``CUB_200_2011/``, or that folder itself).

    ``options`` are the reference-protocol options (num_pos, num_neg, seed, val_frac, train_frac,
    train_frac_seed); ``missing_images``: "error" | "drop" | "ignore".
    """
    opts = protocol_options("cub", options)
    base = locate(require_root(root, "cub"), ("CUB_200_2011", "", "CUB_200_2011/CUB_200_2011"), "images.txt",
                  "cub")
    images_path = base / "images.txt"
    rows = read_id_table(images_path, "<image_id> <path>")
    ids = [to_int(f[0], images_path, i, "image id") for i, f in rows]
    paths = [" ".join(f[1:]) for _, f in rows]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{images_path}: repeated image ids")
    row_of = {img: r for r, img in enumerate(ids)}

    split_path = base / "train_test_split.txt"
    is_train = np.full(len(ids), -1, dtype=np.int8)
    for i, f in read_id_table(split_path, "<image_id> <is_train>"):
        img = to_int(f[0], split_path, i, "image id")
        if img not in row_of:
            raise ValueError(f"{split_path}, line {i}: image id {img} is not in images.txt")
        is_train[row_of[img]] = to_int(f[1], split_path, i, "is_train", (0, 1))
    if (is_train < 0).any():
        raise ValueError(f"{split_path}: no entry for image id {ids[int(np.argmax(is_train < 0))]}")

    names = read_attribute_names(find_attribute_names(base))
    full = read_attribute_labels(base / "attributes" / "image_attribute_labels.txt", row_of, len(names))
    keep = check_images(base / "images", paths, missing_images, "cub")
    source = {"format": "CUB-200-2011", "path": str(base), "images_listed": len(ids),
              "dropped_missing_image": int((~keep).sum()), "official_splits": {"train": "is_train=1",
                                                                               "test": "is_train=0"}}
    splits = []
    for flag in (1, 0):
        sel = np.nonzero((is_train == flag) & keep)[0]
        splits.append(Split(samples=[paths[r] for r in sel], full=full[sel]))
    return reference_splits("cub", names, splits[0], splits[1], root=str(base / "images"),
                            meta={"source": source}, **opts)
