"""OpenImages V3 (2017_11) adapter: real partial labels, 5000 trainable classes, kept sparse.

Layout (``2017_11`` release): ``{train,validation,test}/annotations-human.csv`` with the header
``ImageID,Source,LabelName,Confidence`` (Confidence 1 = human-verified positive, 0 = verified negative),
``classes-trainable.txt`` (one MID per line, the class order) and ``class-descriptions.csv`` (``MID,name``).
Images are expected in ``images_{train,val,test}/<ImageID>.jpg`` next to ``2017_11/`` (the paper's
downloader layout; change with ``images=``).

Protocol (the paper's Sec. 4.2): the observed labels are the file's verified labels, nothing is drawn;
train = official train, val = official validation, test = official test; val/test are evaluated on their
verified labels only (``Split.eval_targets`` masks the unannotated entries). The annotation files have tens
of millions of rows, so they are streamed in chunks and the labels stay ``SparseLabels``. Labels of classes
outside the trainable list are ignored and counted; a training image with no trainable label keeps an all-unknown
row by default (``train_list="all"``, the authors' list), val/test images without one get no row; a
(image, class) pair verified both ways counts as positive. Rows are sorted by ImageID.
``meta["known_per_class"]`` (training images where each class is annotated) gives the paper's 5 groups.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Any, Optional

import numpy as np

from wsml.data._io import check_images, locate, need_file, read_names, require_root
from wsml.data.index import DatasetIndex, Split
from wsml.data.protocol import label_statistics
from wsml.labels import NEG, POS, SparseLabels, subsample

OFFICIAL = {"train": "train", "val": "validation", "test": "test"}
IMAGE_DIRS = {"train": "images_train", "val": "images_val", "test": "images_test"}
_CONFIDENCE = {"1": POS, "0": NEG, "1.0": POS, "0.0": NEG}
_HEX_ID = re.compile(r"[0-9a-f]{16}")


def read_trainable(base: Path) -> tuple[list[str], list[str], int]:
    """Trainable MIDs (file order), their display names and how many MIDs have no description."""
    path = base / "classes-trainable.txt"
    mids = read_names(path, "OpenImages trainable classes")
    if len(set(mids)) != len(mids):
        raise ValueError(f"{path}: repeated class MIDs")
    desc_path = need_file(base / "class-descriptions.csv", "OpenImages class names")
    wanted, names = set(mids), {}
    with open(desc_path, newline="", encoding="utf-8-sig") as f:
        for row in csv.reader(f):
            if len(row) >= 2 and row[0] in wanted:
                names[row[0]] = row[1]
    return mids, [names.get(m, m) for m in mids], len(wanted - set(names))


def _ids_to_keys(ids: list[str], path: Path) -> np.ndarray:
    """16-hex-digit ImageIDs as uint64 keys (compact: millions of ids without a Python dict)."""
    uniq, inv = np.unique(np.asarray(ids), return_inverse=True)
    for s in uniq:
        if not _HEX_ID.fullmatch(s):
            raise ValueError(f"{path}: ImageID {s!r} is not a 16-digit lowercase hexadecimal OpenImages id")
    return np.array([int(s, 16) for s in uniq], dtype=np.uint64)[inv]


def _to_sparse(rows: np.ndarray, cls: np.ndarray, val: np.ndarray, n: int, c: int) -> SparseLabels:
    """CSR labels from (row, class, value) triplets; a pair listed twice is POS if any listing is POS.

    Written out (instead of ``SparseLabels.from_coo``, which makes more sorted copies) to keep the peak memory
    of tens of millions of annotations low: see benchmarks/results/openimages_stream.md.
    """
    pair = rows.astype(np.int64) * c + cls
    order = np.lexsort((val, pair))  # by pair, then value: NEG (-1) before POS (1)
    pair, val = pair[order], val[order]
    del order
    last = np.ones(len(pair), dtype=bool)
    last[:-1] = pair[1:] != pair[:-1]
    pair, val = pair[last], val[last]
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(pair // c, minlength=n), out=indptr[1:])
    return SparseLabels(indptr, (pair % c).astype(np.int32), val, c)


def read_human_labels(path: Path, class_of: dict[str, int], chunk_rows: int = 200_000, keep_unlabeled: bool = False
                      ) -> tuple[list[str], SparseLabels, dict]:
    """Stream one ``annotations-human.csv``: sorted ImageIDs, their sparse observed labels and counts.

    ``keep_unlabeled``: also give a row (with no known label) to images whose labels are all non-trainable, as the
    authors' ``generate_imageid_list.py`` lists every ImageID of the file.
    """
    need_file(path, "OpenImages human annotations")
    keys, classes, values = [], [], []
    unlabeled_ids: list[str] = []
    buf_ids: list[str] = []
    buf_cls: list[int] = []
    buf_val: list[int] = []
    ignored = total = 0

    def flush():
        if buf_ids:
            keys.append(_ids_to_keys(buf_ids, path))
            classes.append(np.asarray(buf_cls, dtype=np.int32))
            values.append(np.asarray(buf_val, dtype=np.int8))
            buf_ids.clear()
            buf_cls.clear()
            buf_val.clear()

    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader, [])]
        missing = [c for c in ("ImageID", "LabelName", "Confidence") if c not in header]
        if missing:
            raise ValueError(f"{path}, line 1: header {header} lacks column(s) {missing}")
        ii, li, ci = (header.index(c) for c in ("ImageID", "LabelName", "Confidence"))
        width = max(ii, li, ci)
        for row in reader:
            if len(row) <= width:
                if not row:
                    continue
                raise ValueError(f"{path}, line {reader.line_num}: expected {len(header)} fields, got {row}")
            total += 1
            v = _CONFIDENCE.get(row[ci].strip())
            if v is None:
                raise ValueError(f"{path}, line {reader.line_num}: Confidence must be 0 or 1 (human-verified), "
                                 f"got {row[ci]!r}")
            c = class_of.get(row[li])
            if c is None:
                ignored += 1
                if keep_unlabeled:
                    unlabeled_ids.append(row[ii])
                continue
            buf_ids.append(row[ii])
            buf_cls.append(c)
            buf_val.append(v)
            if len(buf_ids) >= chunk_rows:
                flush()
    flush()
    key = np.concatenate(keys) if keys else np.zeros(0, dtype=np.uint64)
    cls = np.concatenate(classes) if classes else np.zeros(0, dtype=np.int32)
    val = np.concatenate(values) if values else np.zeros(0, dtype=np.int8)
    for chunks in (keys, classes, values):  # free the chunks: only the concatenated arrays remain
        chunks.clear()
    uniq = np.unique(key)
    if unlabeled_ids:
        uniq = np.union1d(uniq, _ids_to_keys(sorted(set(unlabeled_ids)), path))
    rows = np.searchsorted(uniq, key)
    del key
    labels = _to_sparse(rows, cls, val, len(uniq), len(class_of))
    ids = [f"{int(k):016x}" for k in uniq]
    stats = {"annotation_rows": total, "ignored_non_trainable": ignored, "images": len(ids),
             "positives": int((labels.values == POS).sum()), "negatives": int((labels.values == NEG).sum())}
    return ids, labels, stats


TRAIN_LISTS = ("all", "trainable")


def build_openimages(root: Optional[str], *, images: Optional[dict] = None, missing_images: str = "ignore",
                     train_frac: float = 1.0, train_frac_seed: int = 1200, chunk_rows: int = 200_000,
                     train_list: str = "all", **options: Any) -> DatasetIndex:
    """OpenImages V3 under ``root`` (the folder holding ``2017_11/``, or ``2017_11`` itself).

    ``images`` maps split -> image folder under the image root (default ``images_train`` ...);
    ``missing_images`` ("ignore" by default: labels can be prepared before the millions of images are
    downloaded); ``train_frac`` keeps a random fraction of the training images. ``train_list``: "all" (default,
    the authors' list: every ImageID of train/annotations-human.csv, also images whose labels are all
    non-trainable, which then train as all-unknown rows) or "trainable" (only images with a trainable label).
    """
    if options:
        raise ValueError(f"openimages: unknown option(s) {sorted(options)}; OpenImages has real partial labels, so "
                         f"num_pos/num_neg/seed/val_frac do not apply (options: images, missing_images, "
                         f"train_frac, train_frac_seed, chunk_rows, train_list)")
    if train_list not in TRAIN_LISTS:
        raise ValueError(f"openimages: train_list must be one of {', '.join(TRAIN_LISTS)}, got {train_list!r}")
    base = locate(require_root(root, "openimages"), ("2017_11", "", "openimages/2017_11"), "classes-trainable.txt",
                  "openimages")
    image_root = base.parent if base.name == "2017_11" else base
    dirs = {**IMAGE_DIRS, **(images or {})}
    mids, names, undescribed = read_trainable(base)
    class_of = {m: i for i, m in enumerate(mids)}
    splits, source = {}, {"format": "OpenImages V3 2017_11", "path": str(base), "classes_without_name": undescribed,
                          "official_splits": OFFICIAL}
    for split, official in OFFICIAL.items():
        ids, labels, stats = read_human_labels(base / official / "annotations-human.csv", class_of, chunk_rows,
                                               keep_unlabeled=split == "train" and train_list == "all")
        paths = [f"{dirs[split]}/{i}.jpg" for i in ids]
        keep = check_images(image_root, paths, missing_images, f"openimages/{split}")
        stats["dropped_missing_image"] = int((~keep).sum())
        rows = np.nonzero(keep)[0]
        if split == "train":
            rows = subsample(rows, train_frac, train_frac_seed)
        splits[split] = Split(samples=[paths[r] for r in rows], observed=labels.take(rows))
        stats["rows"] = len(rows)
        source[split] = stats
    protocol = {"type": "official partial labels", "train_frac": train_frac, "train_frac_seed": train_frac_seed,
                "train_rows": len(splits["train"]), "train_list": train_list}
    meta = {"protocol": protocol, "source": source, "class_mids": mids,
            "known_per_class": splits["train"].observed.known_per_class().tolist()}
    index = DatasetIndex("openimages", names, splits, root=str(image_root), meta=meta)
    index.meta["stats"] = label_statistics(index)
    return index
