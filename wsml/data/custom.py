"""Adapters for a user's own data: a CSV of labels (``build_csv``) or an image-folder tree (``build_folder``).

Label semantics (both adapters):

* Training rows: the given positives (and ``negatives``, CSV only) are the *observed* labels, everything
  else is UNOBS; full labels are unknown. With ``simulate_partial=True`` the given positives are taken as
  complete ground truth instead, and the observed labels are drawn with the reference protocol
  (``observe_labels(num_pos, num_neg, seed)``), to study the paper's setting on one's own data.
* Val/test rows: with ``complete_eval=True`` (default) the listed positives are assumed complete (unlisted =
  negative) and become full labels; with ``complete_eval=False`` they stay observed labels and evaluation
  counts only the given entries under the partial-labels policy (``wsml.partial_val``).
* Splits: an explicit split (CSV ``split`` column, or ``train/``, ``val/``, ``test/`` folders) is used as
  given; without an explicit val split, val is 20 % of train via ``split_train_val(seed)`` exactly as in the
  reference protocol (``reference_splits``) and keeps those rows' *partial* labels. Test is optional (CSV:
  ``split`` column or ``test_csv``). ``meta["label_sets"]`` records per split "complete" or "partial".
* Checks at prepare time: every image is opened (missing, undecodable, over ``max_pixels``), image paths stay
  inside the data root, and every class needs a training positive (strict label files: ``label_files``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np

from wsml.data._io import DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, need_file, protocol_options, read_names, require_root
from wsml.data.image_check import inspect_images
from wsml.data.index import SPLITS, DatasetIndex, Split, load_array
from wsml.data.label_files import Table, read_label_file
from wsml.data.protocol import label_statistics, reference_splits
from wsml.labels import POS, SparseLabels, observe_labels, subsample

FEW_POSITIVES = 5  # prepare warns about classes with fewer training positives
SPARSE_ABOVE = 2**25  # a split's labels are stored sparse above this many entries (N x C; 32 MB as int8)


def _class_list(classes: Union[None, str, Path, Sequence[str]], base: Path, table: Table) -> list[str]:
    if classes is None:
        return table.columns or sorted(table.vocab)
    if isinstance(classes, (str, Path)):
        p = Path(classes) if Path(classes).is_absolute() else base / classes
        classes = read_names(p, "class list")
    names = [str(c).strip() for c in classes]
    if len(set(names)) != len(names):
        raise ValueError(f"the class list has repeated names: {sorted({n for n in names if names.count(n) > 1})}")
    return names


def _labels(table: Table, rows: np.ndarray, vocab_class: np.ndarray, num_classes: int,
            as_full: bool) -> SparseLabels:
    """The labels of ``rows`` (in that order) as CSR: observed {1,-1} entries, or with ``as_full`` the positives
    (listed positives are complete: everything else is 0). Built from the table's flat entry arrays in one pass,
    never as an N x C matrix; a class outside the class list is an error naming the first row that uses it."""
    entry_row = np.frombuffer(table.entry_row, dtype=f"i{table.entry_row.itemsize}")
    new_row = np.full(len(table), -1, dtype=np.int64)
    new_row[rows] = np.arange(len(rows))
    sel = np.flatnonzero(new_row[entry_row] >= 0)
    r = new_row[entry_row[sel]]
    names = np.frombuffer(table.entry_name, dtype=f"i{table.entry_name.itemsize}")[sel]
    values = np.frombuffer(table.entry_value, dtype=np.int8)[sel]
    cls = vocab_class[names]
    if (cls < 0).any():  # the first offending entry as a row-by-row reading meets it: by row, positives first
        bad = np.flatnonzero(cls < 0)
        first = bad[np.lexsort((bad, values[bad] != POS, r[bad]))[0]]
        raise ValueError(f"{table.where_of(int(entry_row[sel[first]]))}: class {table.names[names[first]]!r} is "
                         f"not in the class list")
    if as_full:
        keep = values == POS
        r, cls, values = r[keep], cls[keep], values[keep]
    return SparseLabels.from_coo(r, cls, values, (len(rows), num_classes))


def _split(table: Table, rows: np.ndarray, vocab_class: np.ndarray, num_classes: int, as_full: bool,
           sparse: Optional[bool]) -> Split:
    """One split of the table; labels stay sparse when ``sparse`` (None: when N x C is above SPARSE_ABOVE)."""
    labels: Union[SparseLabels, np.ndarray] = _labels(table, rows, vocab_class, num_classes, as_full)
    if not (sparse if sparse is not None else len(rows) * num_classes > SPARSE_ABOVE):
        labels = labels.to_dense()
        labels = labels.astype(np.uint8) if as_full else labels
    return Split(samples=[table.paths[i] for i in rows], full=labels if as_full else None,
                 observed=None if as_full else labels)


class Checks:
    """The strictness options shared by both adapters (see :func:`build_csv`)."""

    def __init__(self, on_bad_image: str = "error", max_pixels: int = DEFAULT_MAX_PIXELS,
                 allow_outside_root: bool = False, allow_unseen_classes: bool = False,
                 missing_images: Optional[str] = None) -> None:
        if missing_images is not None:  # the older name of on_bad_image ("drop"/"ignore" keep their meaning)
            on_bad_image = missing_images
        self.on_bad_image, self.max_pixels = on_bad_image, max_pixels
        self.allow_outside_root, self.allow_unseen_classes = allow_outside_root, allow_unseen_classes


def confine(table: Table, image_root: Path, allow_outside_root: bool) -> None:
    """Image paths must stay inside the data root: absolute paths and ``..`` escapes are errors unless allowed."""
    if allow_outside_root:
        return
    for row, p in enumerate(table.paths):
        norm = os.path.normpath(p.replace("\\", "/"))
        if os.path.isabs(p) or norm == ".." or norm.startswith("../"):
            raise ValueError(f"{table.where_of(row)}: image path {p!r} is outside the data root {image_root}; give "
                             f"paths relative to it, or pass allow_outside_root=true to read files elsewhere")


def _positives(split: Split) -> np.ndarray:
    """Positives per class of a split (full labels when known, else observed positives)."""
    labels = split.full if split.full is not None else split.observed
    if isinstance(labels, SparseLabels):
        return np.bincount(labels.indices[labels.values == POS], minlength=labels.num_classes).astype(np.int64)
    if split.full is not None:
        return split.full.sum(0).astype(np.int64)
    return (np.asarray(split.observed) == POS).sum(0).astype(np.int64)


def _unlabelled_rows(observed: Union[np.ndarray, SparseLabels]) -> int:
    """Rows without any observed label (every entry unknown)."""
    if isinstance(observed, SparseLabels):
        return int((np.diff(observed.indptr) == 0).sum())
    return int((np.asarray(observed) == 0).all(1).sum())


def _check_unseen(index: DatasetIndex, allow: bool) -> None:
    train_pos = _positives(index["train"])
    unseen = [index.class_names[c] for c in np.flatnonzero(train_pos == 0)]
    if unseen and not allow:
        raise ValueError(f"{index.name}: class(es) {unseen[:10]} have no positive in the training rows (a typo, or "
                         f"present only in val/test rows or as negatives): the model cannot learn them. Fix the "
                         f"labels, add training rows, or pass allow_unseen_classes=true")


def _check_unique(table: Table) -> None:
    seen: dict[str, int] = {}
    for row, p in enumerate(table.paths):
        first = seen.setdefault(p, row)
        if first != row:
            raise ValueError(f"{table.where_of(row)}: image {p!r} is listed twice (first at {table.where_of(first)})")


def assemble(name: str, table: Table, class_names: list[str], image_root: Path, *, complete_eval: bool,
             simulate_partial: bool, checks: Checks, meta: dict, features: Optional[np.ndarray] = None,
             sparse_labels: Optional[bool] = None, **options: Any) -> DatasetIndex:
    """Turn the rows of ``table`` into train/val/test following the module's label semantics.

    ``features``: one feature row per table row (kind "features": paths only name the rows, no image is read).
    ``sparse_labels``: keep labels as :class:`SparseLabels` (None: when a split's N x C is above SPARSE_ABOVE).
    """
    opts = protocol_options(name, options)
    _check_unique(table)
    if features is None:
        confine(table, image_root, checks.allow_outside_root)
        keep, bad = inspect_images(image_root, table.paths, checks.on_bad_image, name, checks.max_pixels)
    else:
        keep, bad = np.ones(len(table), dtype=bool), []
    meta = {"source": {**meta, "rows": len(table.paths), "dropped_bad_images": len(bad),
                       "bad_images": [f"{p} ({r})" for p, r in bad[:100]], "complete_eval": complete_eval,
                       "simulate_partial": simulate_partial, "max_pixels": checks.max_pixels,
                       "allow_outside_root": checks.allow_outside_root}}
    class_id = {c: i for i, c in enumerate(class_names)}
    vocab_class = np.array([class_id.get(n, -1) for n in table.vocab], dtype=np.int64).reshape(-1)
    code = np.frombuffer(table.split_code, dtype=np.int8)
    rows = {s: np.flatnonzero((np.where(code < 0, 0, code) == i) & keep) for i, s in enumerate(SPLITS)}
    if not len(rows["train"]):
        raise ValueError(f"{name}: no training rows")

    def split(s: str, as_full: bool) -> Split:
        out = _split(table, rows[s], vocab_class, len(class_names), as_full,
                     False if as_full and simulate_partial and s == "train" else sparse_labels)
        if features is not None:  # all rows in order: the memory-mapped file as is (no copy of N x D)
            every = len(rows[s]) == len(features) and bool((np.diff(rows[s]) == 1).all())
            out.features = features if every else np.asarray(features[rows[s]], dtype=np.float32)
        return out

    train = split("train", as_full=simulate_partial)  # simulate_partial: observe_labels draws from dense labels
    test = split("test", as_full=complete_eval) if len(rows["test"]) else None
    kind = "images" if features is None else "features"
    if not len(rows["val"]):  # val drawn from train (the reference protocol): its labels are as partial as train's
        index = reference_splits(name, class_names, train, test or Split(samples=[]), root=str(image_root),
                                 kind=kind, meta=meta, **opts)
        if test is None:
            del index.splits["test"]
    else:
        if simulate_partial:
            train.observed = observe_labels(train.full, num_pos=opts.get("num_pos", 1), num_neg=opts.get("num_neg", 0),
                                            seed=opts.get("seed", 1200))
        tr = subsample(np.arange(len(train)), opts.get("train_frac", 1.0), opts.get("train_frac_seed", 1200))
        splits = {"train": train.take(tr), "val": split("val", as_full=complete_eval)}
        if test is not None:
            splits["test"] = test
        meta["protocol"] = {"explicit_val": True, **opts, "train_rows": len(tr)}
        index = DatasetIndex(name, class_names, splits, root=str(image_root), kind=kind, meta=meta)
    # what evaluation may assume of each split (wsml.partial_val): complete label sets, or partial ones
    index.meta["label_sets"] = {s: "partial" if s == "train" or index[s].full is None else "complete"
                                for s in index.splits}
    index.meta["class_positives"] = {s: _positives(index[s]).tolist() for s in index.splits}
    train_obs = index["train"].observed
    if train_obs is not None and not simulate_partial:
        index.meta["unlabelled_train_rows"] = _unlabelled_rows(train_obs)
    _check_unseen(index, checks.allow_unseen_classes)
    index.meta["stats"] = label_statistics(index)
    return index


def prepare_notes(index: DatasetIndex) -> list[str]:
    """What ``wsml prepare`` prints for own data: classes with positives per split, and warnings."""
    counts = index.meta.get("class_positives")
    if not counts:
        return []
    splits = list(counts)
    width = max(len(c) for c in index.class_names)
    lines = [f"  {'class':<{width}}  " + "  ".join(f"{s:>6}" for s in splits) + "   (positives per split)"]
    for c, cname in enumerate(index.class_names):
        lines.append(f"  {cname:<{width}}  " + "  ".join(f"{counts[s][c]:>6}" for s in splits))
    unlabelled = index.meta.get("unlabelled_train_rows", 0)
    if unlabelled:
        lines.append(f"warning: {unlabelled} training rows have no label at all: every entry of them is unknown "
                     f"(Naive AN reads them as all absent)")
    few = [f"{n} ({counts['train'][c]})" for c, n in enumerate(index.class_names) if counts["train"][c] < FEW_POSITIVES]
    if few:
        lines.append(f"warning: class(es) with fewer than {FEW_POSITIVES} training positives: {', '.join(few)}; "
                     f"check their spelling, or add examples")
    if index.meta.get("label_sets", {}).get("val") == "partial":
        lines.append("warning: the val split has partial labels (drawn from the training rows, or "
                     "complete_eval=false): val mAP and per-class F1 cannot be measured there, so epochs are chosen "
                     "by PU-AUC and thresholds by the PU rule (README: Your own data). Give a few hundred fully "
                     "labelled rows split=val for honest val numbers")
    return lines


def build_csv(root: Optional[str] = None, *, csv: Optional[str] = None, images: Optional[str] = None,
              classes: Union[None, str, Sequence[str]] = None, test_csv: Optional[str] = None,
              format: str = "labels", ignore_columns: Union[str, Sequence[str]] = (), minus_one: str = "error",
              complete_eval: bool = True, simulate_partial: bool = False, on_bad_image: str = "error",
              max_pixels: int = DEFAULT_MAX_PIXELS, allow_outside_root: bool = False,
              allow_unseen_classes: bool = False, missing_images: Optional[str] = None,
              features: Optional[str] = None, sparse_labels: Union[str, bool] = "auto",
              **options: Any) -> DatasetIndex:
    """A labels CSV: ``path,labels[,negatives][,split]`` (class names ``;``-separated), or with ``format="wide"``
    ``path[,split],<class>...`` with one cell per class: 1 present, 0 absent, empty unknown (``minus_one``:
    how to read -1: "error", "unknown" or "negative").

    ``root``: the CSV file, or a folder (then ``csv`` defaults to ``labels.csv`` in it). Relative ``csv``,
    ``test_csv``, ``images`` and ``classes`` paths are taken from that folder; image paths in the CSV are
    relative to ``images`` (default: the folder) and may not leave it unless ``allow_outside_root``.
    ``classes``: list or text file (one name per line); by default all names seen, sorted (wide: the column
    order). ``ignore_columns``: extra columns to skip. ``on_bad_image``: "error" | "drop" | "ignore" for
    missing, undecodable or over-``max_pixels`` images. ``options``: num_pos, num_neg, seed, val_frac,
    train_frac, train_frac_seed.

    ``features``: a float ``.npy`` [rows, D] with one feature row per data row (the CSV's rows in file order, then
    ``test_csv``'s): the data set is then of kind "features" (``model.backbone=linear`` or ``mlp``), the ``path``
    column only names the rows and no image is read. ``sparse_labels``: "auto" (default: a split's labels are kept
    sparse when N x C is above 2**25 entries), true or false.
    """
    protocol_options("csv", options)  # an unknown option fails before any file is read
    if root is None and csv is None:
        raise ValueError("csv: give --root (a CSV file or its folder) or csv=")
    if root is not None and Path(root).is_file():
        csv_path = Path(root).resolve()
        base = csv_path.parent
    else:
        base = require_root(root, "csv") if root is not None else Path.cwd()
        csv_path = (base / (csv or "labels.csv")).resolve()
    ignore = [c for c in ignore_columns.split(",")] if isinstance(ignore_columns, str) else list(ignore_columns)
    table = Table()
    read = {"fmt": format, "ignore_columns": ignore, "minus_one": minus_one}
    read_label_file(csv_path, table, **read)
    if test_csv is not None:
        if SPLITS.index("test") in table.split_code:
            raise ValueError(f"{csv_path}: has test rows in its split column and test_csv is given too: choose one")
        read_label_file((base / test_csv).resolve(), table, only_split="test", **read)
    image_root = (base / images).resolve() if images else base
    checks = Checks(on_bad_image, max_pixels, allow_outside_root, allow_unseen_classes, missing_images)
    feats = None if features is None else read_features((base / features).resolve(), len(table))
    return assemble("csv", table, _class_list(classes, base, table), image_root, complete_eval=complete_eval,
                    simulate_partial=simulate_partial, checks=checks, features=feats,
                    sparse_labels=sparse_choice(sparse_labels),
                    meta={"format": "csv" if format == "labels" else "csv-wide",  # wsml review reads "csv" only
                           "csv": str(csv_path), "test_csv": test_csv,
                           **({"features": str((base / features).resolve())} if features else {})}, **options)


def sparse_choice(value: Union[str, bool, None]) -> Optional[bool]:
    """The ``sparse_labels`` option: "auto" (None: decided by size), true or false."""
    if value is None or value == "auto":
        return None
    if isinstance(value, bool):
        return value
    raise ValueError(f"sparse_labels must be auto, true or false, got {value!r}")


def read_features(path: Path, rows: int) -> np.ndarray:
    """A float feature matrix [rows, D] (memory-mapped, checked finite in blocks) for ``features=``."""
    a = load_array(need_file(path, "feature rows"), mmap=True)
    if a.ndim != 2 or a.dtype.kind != "f" or len(a) != rows:
        raise ValueError(f"{path}: expected a float matrix with one row per labels-CSV data row ({rows} rows), got "
                         f"{a.dtype} {a.shape}")
    for start in range(0, rows, 65536):
        finite = np.isfinite(a[start:start + 65536]).all(1)
        if not finite.all():
            raise ValueError(f"{path}: row {start + int(np.flatnonzero(~finite)[0])} holds NaN or inf")
    return a


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
                    table.add_label(row, cls)
                    continue
                first[key] = (len(table.paths), file)
                table.add(f"{prefix}{cls}/{key}", [cls], [], prefix.rstrip("/") or None, str(file))


def build_folder(root: Optional[str], *, layout: str = "auto", multi_label: bool = True,
                 classes: Union[None, str, Sequence[str]] = None, complete_eval: bool = True,
                 simulate_partial: bool = False, on_bad_image: str = "error", max_pixels: int = DEFAULT_MAX_PIXELS,
                 allow_unseen_classes: bool = False, sparse_labels: Union[str, bool] = "auto",
                 **options: Any) -> DatasetIndex:
    """An image-folder tree ``root/<class>/<image>``, or ``root/{train,val,test}/<class>/<image>``.

    ``layout``: "flat", "split" or "auto" (split when the only sub-folders are train/val/test). With
    ``multi_label=True`` files with the same name (and size) in several class folders are one image with
    several positives; with ``multi_label=False`` every file is its own image with a single positive.
    ``on_bad_image``, ``max_pixels``, ``allow_unseen_classes``: as for :func:`build_csv`.
    """
    protocol_options("folder", options)
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
                    simulate_partial=simulate_partial,
                    checks=Checks(on_bad_image, max_pixels, allow_unseen_classes=allow_unseen_classes),
                    sparse_labels=sparse_choice(sparse_labels),
                    meta={"format": f"image folders ({layout})", "multi_label": multi_label,
                          "skipped_files": len(skipped)}, **options)
