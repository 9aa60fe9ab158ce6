"""Yeast: real tabular multi-label data (2417 genes x 103 features, 14 functional classes), offline.

The CSV ships inside the ``river`` pip package (``river/datasets/yeast.csv.gz``, the MULAN version =
OpenML 40597); it is read directly, without importing river. river does not record MULAN's official
train/test membership, so the classic sizes (1500 train / 917 test) are drawn with a seeded permutation
(``split_seed``). Then the reference protocol applies (single positive, seed 1200, val 20 % of train).

Features are standardised with the mean and standard deviation of the final *train* rows only (not val
or test, so nothing leaks from the evaluation rows); a constant feature gets std 1.
"""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path
from typing import Optional

import numpy as np

from wsml._types import PathLike
from wsml.data.index import DatasetIndex, Split
from wsml.data.protocol import reference_splits
from wsml.labels import split_train_val, subsample

NUM_FEATURES = 103
NUM_CLASSES = 14


def river_yeast_path() -> Path:
    """Path of the Yeast CSV inside the installed river package; FileNotFoundError when river is missing."""
    spec = importlib.util.find_spec("river")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the Yeast data set ships with the `river` package: pip install 'wsml[yeast]' "
                                "(or pass root=<path to yeast.csv(.gz)>)")
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "yeast.csv.gz"
    if not path.is_file():
        from river.datasets import Yeast  # the package layout changed: ask river itself

        path = Path(Yeast().path)
    return path


def read_yeast_csv(path: PathLike) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Features float32 [N, 103], full labels uint8 [N, 14] and class names from a Yeast CSV (Att*, Class*)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: Yeast CSV not found")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt") as f:
            header = f.readline().strip().split(",")
            data = np.loadtxt(f, delimiter=",", dtype=np.float64, ndmin=2)
    except (OSError, EOFError, ValueError) as e:
        raise ValueError(f"{path}: cannot parse the Yeast CSV ({e})") from None
    feat = [i for i, h in enumerate(header) if h.startswith("Att")]
    lab = [i for i, h in enumerate(header) if h.startswith("Class")]
    if len(feat) != NUM_FEATURES or len(lab) != NUM_CLASSES or data.shape[1] != len(header):
        raise ValueError(f"{path}: expected {NUM_FEATURES} Att* and {NUM_CLASSES} Class* columns, got {len(feat)} "
                         f"and {len(lab)} ({data.shape[1]} values per row, {len(header)} header fields)")
    X, Y = data[:, feat], data[:, lab]
    if not np.isfinite(X).all():
        raise ValueError(f"{path}: features contain NaN or inf (row {int(np.nonzero(~np.isfinite(X))[0][0]) + 2})")
    if not np.isin(Y, (0, 1)).all():
        raise ValueError(f"{path}: labels must be 0/1, found {np.unique(Y[~np.isin(Y, (0, 1))])[:5].tolist()}")
    return X.astype(np.float32), Y.astype(np.uint8), [header[i] for i in lab]


def build_yeast(
    root: Optional[str] = None,
    *,
    num_test: int = 917,
    split_seed: int = 0,
    num_pos: int = 1,
    num_neg: int = 0,
    seed: int = 1200,
    val_frac: float = 0.2,
    train_frac: float = 1.0,
) -> DatasetIndex:
    """The ``yeast`` adapter: kind "features", official-size train (1500) / test (917) split, reference protocol.

    ``root``: a Yeast CSV file (or a folder holding ``yeast.csv(.gz)``); default: the copy inside river.
    """
    path = river_yeast_path() if root is None else Path(root)
    if path.is_dir():
        path = next((p for p in (path / "yeast.csv.gz", path / "yeast.csv") if p.is_file()), path / "yeast.csv.gz")
    X, Y, class_names = read_yeast_csv(path)
    n = len(X)
    if not 0 < num_test < n:
        raise ValueError(f"num_test must be in (0, {n}), got {num_test}")
    perm = np.random.RandomState(split_seed).permutation(n)
    off_train, off_test = np.sort(perm[: n - num_test]), np.sort(perm[n - num_test:])
    # the rows reference_splits will keep as train: standardise with their statistics only
    tr_local, _ = split_train_val(len(off_train), val_frac=val_frac, seed=seed)
    tr_rows = off_train[subsample(tr_local, train_frac, seed)]
    mean = X[tr_rows].mean(0)
    std = X[tr_rows].std(0)
    std[std == 0] = 1.0
    Xs = ((X - mean) / std).astype(np.float32)
    official_train = Split(features=Xs[off_train], full=Y[off_train])
    official_test = Split(features=Xs[off_test], full=Y[off_test])
    meta = {"source": str(path), "split": {"num_test": num_test, "split_seed": split_seed,
                                          "note": "seeded permutation with MULAN's sizes (1500/917)"},
            "standardisation": {"mean": mean.astype(float).round(6).tolist(),
                                "std": std.astype(float).round(6).tolist()}}
    return reference_splits("yeast", class_names, official_train, official_test, kind="features", num_pos=num_pos,
                            num_neg=num_neg, seed=seed, val_frac=val_frac, train_frac=train_frac,
                            train_frac_seed=seed, meta=meta)
