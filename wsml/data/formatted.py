"""Cole et al.'s formatted files (``wsml prepare formatted --root DIR --out OUT [images=IMAGE_ROOT]``).

Cole et al. (2021) distribute each data set as ``formatted_{train,val}_{images,labels}.npy`` (+ optionally
``formatted_{train,val}_labels_obs.npy``), read by their ``datasets.load_data``: ``images`` is an array of image
paths relative to the data set's image folder, ``labels`` the {0,1} ground truth, ``labels_obs`` the {1,0,-1}
observed labels. Their "val" files are the official test set (or val set, for VOC/COCO). This is the only form in
which the paper's NUS-WIDE images (Cole et al.'s 2020 re-crawl) exist, and a cross-check for VOC/COCO/CUB.

Protocol as theirs: ``formatted_train_labels_obs.npy``, when present, is the observed training set as is;
otherwise it is drawn with the reference protocol (``observe_labels``, seed 1200) over the whole official
training set; then 20 % of it becomes val (``split_train_val``, seed 1200); the "val" files are the test split.
Images are not dropped by default (``missing_images="error"``): dropping rows would change the reference split.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from wsml.data._io import check_images, protocol_options, read_names, require_root
from wsml.data.custom import SPARSE_ABOVE, sparse_choice
from wsml.data.index import DatasetIndex, Split
from wsml.data.protocol import reference_splits
from wsml.labels import SparseLabels


def _load(path: Path) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"Cole et al.'s formatted file {path} does not exist")
    try:
        return np.load(path, allow_pickle=False, mmap_mode="r")
    except ValueError as e:  # object arrays need pickle, which wsml never unpickles
        raise ValueError(f"{path}: not a plain numpy array ({e}); wsml does not unpickle files: re-save it with "
                         f"np.save(path, np.asarray(a, dtype=str)) for image paths or a numeric dtype for labels") \
            from None


Labels = Union[np.ndarray, SparseLabels]
BLOCK_ROWS = 65536  # label matrices are checked (and made sparse) this many rows at a time


def _read_labels(path: Path, allowed: tuple, rows: int, dtype: type,
                 sparse: Optional[bool]) -> Labels:
    """A label matrix checked block by block; sparse (CSR of its non-zero entries) when ``sparse``, or with None
    when N x C is above SPARSE_ABOVE."""
    a = _load(path)
    if a.ndim != 2 or a.shape[0] != rows:
        raise ValueError(f"{path}: expected a matrix with {rows} rows (one per image), got shape {a.shape}")
    if a.dtype.kind not in "biuf":
        raise ValueError(f"{path}: expected numeric labels, got dtype {a.dtype}")
    sparse = a.size > SPARSE_ABOVE if sparse is None else sparse
    counts, cols, vals = [], [], []
    for start in range(0, rows, BLOCK_ROWS):
        block = np.asarray(a[start:start + BLOCK_ROWS])
        bad = ~np.isin(block, allowed)
        if bad.any():
            r, c = np.argwhere(bad)[0]
            raise ValueError(f"{path}: label values must be in {list(allowed)}; row {start + r}, column {c} is "
                             f"{block[r, c]!r}")
        if sparse:
            r, c = np.nonzero(block)
            counts.append(np.bincount(r, minlength=len(block)))
            cols.append(c.astype(np.int32))
            vals.append(block[r, c].astype(np.int8))
    if not sparse:
        return np.asarray(a).astype(dtype)
    indptr = np.zeros(rows + 1, dtype=np.int64)
    np.cumsum(np.concatenate(counts) if counts else np.zeros(0, np.int64), out=indptr[1:])
    empty = np.zeros(0, np.int32)
    return SparseLabels(indptr, np.concatenate(cols) if cols else empty, np.concatenate(vals) if vals else empty,
                        a.shape[1])


def read_formatted_phase(base: Path, phase: str, observed: bool, sparse: Optional[bool] = False
                         ) -> tuple[list[str], Labels, Optional[Labels]]:
    """(image paths, full {0,1} labels, observed {1,0,-1} labels or None) of ``formatted_<phase>_*.npy``;
    ``sparse``: as :func:`_read_labels` (full labels then hold their positives)."""
    images = _load(base / f"formatted_{phase}_images.npy")
    if images.ndim != 1 or images.dtype.kind not in "US":
        raise ValueError(f"{base / f'formatted_{phase}_images.npy'}: expected a 1-D array of image paths, "
                         f"got shape {images.shape} dtype {images.dtype}")
    paths = [p.decode() if isinstance(p, bytes) else str(p) for p in images.tolist()]
    full = _read_labels(base / f"formatted_{phase}_labels.npy", (0, 1), len(paths), np.uint8, sparse)
    obs_path = base / f"formatted_{phase}_labels_obs.npy"
    obs = None
    if observed and obs_path.is_file():
        obs = _read_labels(obs_path, (-1, 0, 1), len(paths), np.int8, sparse)
        if obs.shape != full.shape:
            raise ValueError(f"{obs_path}: shape {obs.shape} differs from the labels' {full.shape}")
    return paths, full, obs


def build_formatted(root: Optional[str], *, images: Optional[str] = None, class_names: Optional[str] = None,
                    missing_images: str = "error", name: str = "formatted", labels_obs: str = "file",
                    sparse_labels: Union[str, bool] = "auto", **options: Any) -> DatasetIndex:
    """Cole et al.'s formatted ``.npy`` files under ``root``; image paths relative to ``images`` (default ``root``).

    ``class_names``: a file with one class name per line (the files carry none; default c0, c1, ...).
    ``options``: the reference-protocol options (num_pos, num_neg, seed, val_frac, train_frac, train_frac_seed);
    num_pos/num_neg/seed only apply when there is no ``formatted_train_labels_obs.npy`` or with
    ``labels_obs="draw"`` (e.g. the Full-label upper bound: ``labels_obs=draw num_pos=-1 num_neg=-1``).
    ``sparse_labels``: "auto" (sparse when N x C is above 2**25 entries), true or false; drawing the observed
    labels (``observe_labels``) reads the training labels dense.
    """
    opts = protocol_options("formatted", options)
    if missing_images not in ("error", "ignore"):
        raise ValueError(f"formatted: missing_images must be 'error' or 'ignore' (dropping images would change Cole "
                         f"et al.'s split), got {missing_images!r}")
    base = require_root(root, "formatted")
    image_root = Path(images).expanduser() if images else base
    if labels_obs not in ("file", "draw"):
        raise ValueError(f"formatted: labels_obs must be 'file' or 'draw', got {labels_obs!r}")
    sparse = sparse_choice(sparse_labels)
    draw = labels_obs == "draw" or not (base / "formatted_train_labels_obs.npy").is_file()
    tr_paths, tr_full, tr_obs = read_formatted_phase(base, "train", observed=labels_obs == "file",
                                                     sparse=False if draw else sparse)
    te_paths, te_full, _ = read_formatted_phase(base, "val", observed=False, sparse=sparse)
    if tr_full.shape[1] != te_full.shape[1]:
        raise ValueError(f"{base}: train labels have {tr_full.shape[1]} classes, val labels {te_full.shape[1]}")
    num_classes = tr_full.shape[1]
    names = read_names(Path(class_names), "class names") if class_names else [f"c{i}" for i in range(num_classes)]
    if len(names) != num_classes:
        raise ValueError(f"{class_names}: {len(names)} class names for {num_classes} label columns")
    for phase, paths in (("train", tr_paths), ("val", te_paths)):
        check_images(image_root, paths, missing_images, f"formatted/{phase}")
    source = {"format": "Cole et al. formatted .npy", "path": str(base), "official_splits": {
        "train": "formatted_train_*", "test": "formatted_val_*"},
        "observed": "formatted_train_labels_obs.npy" if tr_obs is not None else
        f"drawn: observe_labels(num_pos={opts.get('num_pos', 1)}, num_neg={opts.get('num_neg', 0)}, "
        f"seed={opts.get('seed', 1200)}) over the whole official training set"}
    train = Split(samples=tr_paths, full=tr_full, observed=tr_obs)
    test = Split(samples=te_paths, full=te_full)
    return reference_splits(name, names, train, test, root=str(image_root), meta={"source": source}, **opts)
