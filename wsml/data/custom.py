"""Adapters for a user's own data: a CSV of labels (``build_csv``) or an image-folder tree (``build_folder``).

Label semantics (both adapters):

* Training rows: the given positives (and ``negatives``, CSV only) are the *observed* labels, everything
  else is UNOBS; full labels are unknown. With ``simulate_partial=True`` the given positives are taken as
  complete ground truth instead, and the observed labels are drawn with the reference protocol
  (``observe_labels(num_pos, num_neg, seed)``), to study the paper's setting on one's own data.
* Val/test rows: with ``complete_eval=True`` (default) the listed positives are assumed complete (unlisted =
  negative) and become full labels; with ``complete_eval=False`` they stay observed labels and evaluation
  counts only the given entries (as OpenImages).
* Splits: an explicit split (CSV ``split`` column, or ``train/``, ``val/``, ``test/`` folders) is used as
  given; without an explicit val split, val is 20 % of train via ``split_train_val(seed)`` exactly as in the
  reference protocol (``reference_splits``). Test is optional (CSV: ``split`` column or ``test_csv``).
"""

from __future__ import annotations

import csv as csvlib
import os
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np

from wsml.data._io import IMAGE_EXTENSIONS, check_images, need_file, protocol_options, read_names, require_root
from wsml.data.index import SPLITS, DatasetIndex, Split
from wsml.data.protocol import label_statistics, reference_splits
from wsml.labels import NEG, POS, observe_labels, subsample


class Table:
    """Rows read from a user's files: path, positive and negative class names, split (None = unspecified)."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.pos: list[list[str]] = []
        self.neg: list[list[str]] = []
        self.split: list[Optional[str]] = []
        self.where: list[str] = []  # "file, line N" for error messages

    def add(self, path: str, pos: list[str], neg: list[str], split: Optional[str], where: str) -> None:
        if not path:
            raise ValueError(f"{where}: empty image path")
        both = sorted(set(pos) & set(neg))
        if both:
            raise ValueError(f"{where}: class(es) {both} listed both as label and as negative")
        self.paths.append(path)
        self.pos.append(pos)
        self.neg.append(neg)
        self.split.append(split)
        self.where.append(where)


def _names(field: Optional[str]) -> list[str]:
    return [s.strip() for s in (field or "").split(";") if s.strip()]


def read_label_csv(path: Path, table: Table, only_split: Optional[str] = None) -> None:
    """Append the rows of a ``path,labels[,negatives][,split]`` CSV to ``table``."""
    need_file(path, "labels CSV")
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csvlib.DictReader(f)
        header = [h.strip() for h in (reader.fieldnames or [])]
        reader.fieldnames = header
        if "path" not in header or "labels" not in header:
            raise ValueError(f"{path}, line 1: the header must have the columns 'path' and 'labels', got {header}")
        for row in reader:
            where = f"{path}, line {reader.line_num}"
            if None in row:
                raise ValueError(f"{where}: more fields than the header has columns")
            split = None
            if "split" in header:
                split = (row["split"] or "").strip().lower()
                if split not in SPLITS:
                    raise ValueError(f"{where}: split must be one of {list(SPLITS)}, got {row['split']!r}")
            if only_split and split not in (None, only_split):
                raise ValueError(f"{where}: this file holds {only_split} rows only, got split {split!r}")
            table.add((row["path"] or "").strip(), _names(row["labels"]), _names(row.get("negatives")),
                      only_split or split, where)


def _class_list(classes: Union[None, str, Path, Sequence[str]], base: Path, table: Table) -> list[str]:
    if classes is None:
        return sorted({c for names in table.pos + table.neg for c in names})
    if isinstance(classes, (str, Path)):
        p = Path(classes) if Path(classes).is_absolute() else base / classes
        classes = read_names(p, "class list")
    names = [str(c).strip() for c in classes]
    if len(set(names)) != len(names):
        raise ValueError(f"the class list has repeated names: {sorted({n for n in names if names.count(n) > 1})}")
    return names


def _matrices(table: Table, rows: np.ndarray, class_id: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """(full-if-complete {0,1}, observed {1,0,-1}) for the given rows; unknown classes are an error."""
    full = np.zeros((len(rows), len(class_id)), dtype=np.uint8)
    obs = np.zeros((len(rows), len(class_id)), dtype=np.int8)
    for r, i in enumerate(rows):
        for names, value in ((table.pos[i], POS), (table.neg[i], NEG)):
            for n in names:
                if n not in class_id:
                    raise ValueError(f"{table.where[i]}: class {n!r} is not in the class list")
                obs[r, class_id[n]] = value
                full[r, class_id[n]] = value == POS
    return full, obs


def _split(table: Table, rows: np.ndarray, class_id: dict, as_full: bool) -> Split:
    full, obs = _matrices(table, rows, class_id)
    return Split(samples=[table.paths[i] for i in rows], full=full if as_full else None,
                 observed=None if as_full else obs)


def assemble(name: str, table: Table, class_names: list[str], image_root: Path, *, complete_eval: bool,
             simulate_partial: bool, missing_images: str, meta: dict, **options: Any) -> DatasetIndex:
    """Turn the rows of ``table`` into train/val/test following the module's label semantics."""
    opts = protocol_options(name, options)
    seen: dict[str, str] = {}
    for p, w in zip(table.paths, table.where):
        if p in seen:
            raise ValueError(f"{w}: image {p!r} is listed twice (first at {seen[p]})")
        seen[p] = w
    keep = check_images(image_root, table.paths, missing_images, name)
    meta = {"source": {**meta, "rows": len(table.paths), "dropped_missing_image": int((~keep).sum()),
                       "complete_eval": complete_eval, "simulate_partial": simulate_partial}}
    class_id = {c: i for i, c in enumerate(class_names)}
    split = np.array([s or "train" for s in table.split], dtype=object)
    rows = {s: np.nonzero((split == s) & keep)[0] for s in SPLITS}
    if not len(rows["train"]):
        raise ValueError(f"{name}: no training rows")
    train = _split(table, rows["train"], class_id, as_full=simulate_partial)
    test = _split(table, rows["test"], class_id, as_full=complete_eval) if len(rows["test"]) else None
    if not len(rows["val"]):  # val drawn from train: the reference protocol
        index = reference_splits(name, class_names, train, test or Split(samples=[]), root=str(image_root),
                                 meta=meta, **opts)
        val = index.splits["val"]
        if complete_eval and val.full is None:
            val.full, val.observed = (val.observed == POS).astype(np.uint8), None
        if test is None:
            del index.splits["test"]
    else:
        if simulate_partial:
            train.observed = observe_labels(train.full, num_pos=opts.get("num_pos", 1), num_neg=opts.get("num_neg", 0),
                                            seed=opts.get("seed", 1200))
        tr = subsample(np.arange(len(train)), opts.get("train_frac", 1.0), opts.get("train_frac_seed", 1200))
        splits = {"train": train.take(tr), "val": _split(table, rows["val"], class_id, as_full=complete_eval)}
        if test is not None:
            splits["test"] = test
        meta["protocol"] = {"explicit_val": True, **opts, "train_rows": len(tr)}
        index = DatasetIndex(name, class_names, splits, root=str(image_root), meta=meta)
    index.meta["stats"] = label_statistics(index)
    return index


def build_csv(root: Optional[str] = None, *, csv: Optional[str] = None, images: Optional[str] = None,
              classes: Union[None, str, Sequence[str]] = None, test_csv: Optional[str] = None,
              complete_eval: bool = True, simulate_partial: bool = False, missing_images: str = "error",
              **options: Any) -> DatasetIndex:
    """A labels CSV (header ``path,labels[,negatives][,split]``; class names ``;``-separated).

    ``root``: the CSV file, or a folder (then ``csv`` defaults to ``labels.csv`` in it). Relative ``csv``,
    ``test_csv``, ``images`` and ``classes`` paths are taken from that folder; image paths in the CSV are
    relative to ``images`` (default: the folder). ``classes``: list or text file (one name per line); by
    default all names seen, sorted. ``options``: num_pos, num_neg, seed, val_frac, train_frac, train_frac_seed.
    """
    if root is None and csv is None:
        raise ValueError("csv: give root= (a CSV file or its folder) or csv=")
    if root is not None and Path(root).is_file():
        csv_path = Path(root).resolve()
        base = csv_path.parent
    else:
        base = require_root(root, "csv") if root is not None else Path.cwd()
        csv_path = (base / (csv or "labels.csv")).resolve()
    table = Table()
    read_label_csv(csv_path, table)
    if test_csv is not None:
        if any(s == "test" for s in table.split):
            raise ValueError(f"{csv_path}: has test rows in its split column and test_csv is given too: choose one")
        read_label_csv((base / test_csv).resolve(), table, only_split="test")
    image_root = (base / images).resolve() if images else base
    return assemble("csv", table, _class_list(classes, base, table), image_root, complete_eval=complete_eval,
                    simulate_partial=simulate_partial, missing_images=missing_images,
                    meta={"format": "csv", "csv": str(csv_path), "test_csv": test_csv}, **options)


def _scan_classes(folder: Path, prefix: str, multi_label: bool, table: Table, skipped: list) -> None:
    """Add the images under ``folder/<class>/`` to ``table`` (one row per file, or merged by file name)."""
    first: dict[str, tuple[int, Path]] = {}
    for cls in sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".")):
        for dirpath, dirnames, files in os.walk(folder / cls):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for fn in sorted(files):
                file = Path(dirpath) / fn
                if fn.startswith(".") or file.suffix.lower() not in IMAGE_EXTENSIONS:
                    skipped.append(str(file))
                    continue
                key = file.relative_to(folder / cls).as_posix()
                if multi_label and key in first:
                    row, other = first[key]
                    if os.path.getsize(file) != os.path.getsize(other):
                        raise ValueError(f"{file}: same name as {other} but different content; for a single-label "
                                         f"folder layout pass multi_label=False")
                    table.pos[row].append(cls)
                    continue
                first[key] = (len(table.paths), file)
                table.add(f"{prefix}{cls}/{key}", [cls], [], prefix.rstrip("/") or None, str(file))


def build_folder(root: Optional[str], *, layout: str = "auto", multi_label: bool = True,
                 classes: Union[None, str, Sequence[str]] = None, complete_eval: bool = True,
                 simulate_partial: bool = False, **options: Any) -> DatasetIndex:
    """An image-folder tree ``root/<class>/<image>``, or ``root/{train,val,test}/<class>/<image>``.

    ``layout``: "flat", "split" or "auto" (split when the only sub-folders are train/val/test). With
    ``multi_label=True`` files with the same name (and size) in several class folders are one image with
    several positives; with ``multi_label=False`` every file is its own image with a single positive.
    """
    base = require_root(root, "folder")
    subdirs = {d.name for d in base.iterdir() if d.is_dir() and not d.name.startswith(".")}
    if layout == "auto":
        layout = "split" if subdirs and subdirs <= set(SPLITS) and "train" in subdirs else "flat"
    if layout not in ("flat", "split"):
        raise ValueError(f"folder: layout must be 'auto', 'flat' or 'split', got {layout!r}")
    table, skipped = Table(), []
    for prefix in ([f"{s}/" for s in SPLITS if s in subdirs] if layout == "split" else [""]):
        _scan_classes(base / prefix if prefix else base, prefix, multi_label, table, skipped)
    if not table.paths:
        raise ValueError(f"folder: no image files ({', '.join(IMAGE_EXTENSIONS)}) found under {base}/<class>/")
    return assemble("folder", table, _class_list(classes, base, table), base, complete_eval=complete_eval,
                    simulate_partial=simulate_partial, missing_images="error",
                    meta={"format": f"image folders ({layout})", "multi_label": multi_label,
                          "skipped_files": len(skipped)}, **options)
