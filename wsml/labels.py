"""Observed-label encoding, converters, the reference observation protocol, splits and sparse labels.

Observed labels are an int8 matrix ``Y[N, C]`` with ``POS = 1`` (observed positive), ``UNOBS = 0``
(not observed) and ``NEG = -1`` (observed negative), the convention of the reference single-positive
code bases. Full (ground-truth) labels are a different object: ``{0, 1}`` with 0 = negative.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import numpy as np

from wsml._types import PathLike

POS = 1
UNOBS = 0
NEG = -1

ArrayLike = Union[np.ndarray, Sequence]


def _bad_values_message(Y: np.ndarray, allowed: Sequence[int], what: str) -> str:
    bad = ~np.isin(Y, allowed)
    rows, cols = np.nonzero(bad)
    values = np.unique(Y[bad])[:10]
    return (
        f"{what}: values {values.tolist()} are not allowed (allowed: {sorted(allowed)}); "
        f"first at row {rows[0]}, column {cols[0]} ({int(bad.sum())} bad entries)"
    )


def _as_2d_int(Y: ArrayLike, what: str) -> np.ndarray:
    Y = np.asarray(Y)
    if Y.ndim != 2:
        raise ValueError(f"{what}: expected a 2-D matrix [N, C], got shape {Y.shape}")
    if Y.dtype.kind == "f":
        if not np.all(np.isfinite(Y)):
            raise ValueError(f"{what}: contains NaN or inf")
        if not np.all(Y == np.round(Y)):
            raise ValueError(f"{what}: contains non-integer values such as {Y[Y != np.round(Y)][:5].tolist()}")
    elif Y.dtype.kind not in "iub":
        raise ValueError(f"{what}: expected a numeric matrix, got dtype {Y.dtype}")
    return Y


def validate_observed(Y: ArrayLike, what: str = "observed labels") -> np.ndarray:
    """Check an observed-label matrix is ``{1, 0, -1}`` (POS/UNOBS/NEG) and return it as int8."""
    Y = _as_2d_int(Y, what)
    if not np.isin(Y, (POS, UNOBS, NEG)).all():
        raise ValueError(_bad_values_message(Y, (POS, UNOBS, NEG), what))
    return Y.astype(np.int8, copy=False)


def validate_full(Y: ArrayLike, what: str = "full labels") -> np.ndarray:
    """Check a ground-truth label matrix is ``{0, 1}`` and return it as uint8.

    A matrix containing -1 is probably an observed-label matrix passed by mistake: the error says so.
    """
    Y = _as_2d_int(Y, what)
    if not np.isin(Y, (0, 1)).all():
        msg = _bad_values_message(Y, (0, 1), what)
        if np.isin(Y, (POS, UNOBS, NEG)).all():
            msg += " — this looks like an observed-label matrix {1,0,-1}; full labels must be {0,1}"
        raise ValueError(msg)
    return Y.astype(np.uint8, copy=False)


def from_unknown_minus_one(Y: ArrayLike) -> np.ndarray:
    """Convert the ``{1 = positive, 0 = negative, -1 = unknown}`` convention to wsml's ``{1, 0, -1}``."""
    Y = validate_observed(Y, "labels (1=pos, 0=neg, -1=unknown)")  # the same value set {1, 0, -1}
    out = np.full(Y.shape, UNOBS, dtype=np.int8)
    out[Y == 1] = POS
    out[Y == 0] = NEG
    return out


def from_mask(Y: ArrayLike, known: ArrayLike) -> np.ndarray:
    """Convert ``{0, 1}`` labels plus a boolean ``known`` mask (True = observed) to wsml's encoding."""
    Y = validate_full(Y, "labels (0/1 with mask)")
    known = np.asarray(known)
    if known.shape != Y.shape:
        raise ValueError(f"mask shape {known.shape} does not match labels shape {Y.shape}")
    if known.dtype != bool:
        if not np.isin(known, (0, 1)).all():
            raise ValueError(_bad_values_message(_as_2d_int(known, "mask"), (0, 1), "mask"))
        known = known.astype(bool)
    out = np.full(Y.shape, UNOBS, dtype=np.int8)
    out[known & (Y == 1)] = POS
    out[known & (Y == 0)] = NEG
    return out


def observe_labels(Y_full: ArrayLike, num_pos: int = 1, num_neg: int = 0, seed: int = 1200) -> np.ndarray:
    """Hide labels the way the reference single-positive protocol does (Cole et al. 2021).

    One ``RandomState(seed)`` for the whole matrix; per row in order: shuffle the positive indices and
    keep ``num_pos`` (-1 = all), then shuffle the negative indices (always, so the random stream matches
    the reference) and keep ``num_neg`` (-1 = all). Everything else becomes UNOBS.
    """
    Y = validate_full(Y_full)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an integer (the protocol's fixed seed, e.g. 1200), got {seed!r}: "
                         "the observed labels must be the same set every time")
    for name, v in (("num_pos", num_pos), ("num_neg", num_neg)):
        if not isinstance(v, (int, np.integer)) or v < -1:
            raise ValueError(f"{name} must be an integer >= 0, or -1 for all; got {v!r}")
    rng = np.random.RandomState(seed)
    out = np.zeros(Y.shape, dtype=np.int8)
    for i in range(Y.shape[0]):
        pos = np.nonzero(Y[i] == 1)[0]
        rng.shuffle(pos)
        out[i, pos if num_pos == -1 else pos[:num_pos]] = POS
        neg = np.nonzero(Y[i] == 0)[0]
        rng.shuffle(neg)
        out[i, neg if num_neg == -1 else neg[:num_neg]] = NEG
    return out


def split_train_val(n: int, val_frac: float = 0.2, seed: int = 1200) -> tuple[np.ndarray, np.ndarray]:
    """Split ``n`` rows of an official training set into (train, val) indices, as the reference code does."""
    if not 0.0 <= val_frac < 1.0:
        raise ValueError(f"val_frac must be in [0, 1), got {val_frac}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    p = np.random.RandomState(seed).permutation(n)
    n_val = int(round(val_frac * n))
    return np.sort(p[: n - n_val]), np.sort(p[n - n_val :])


def subsample(idx: np.ndarray, frac: float, seed: int) -> np.ndarray:
    """Keep a random ``frac`` of the indices ``idx`` (sorted), for the paper's data-size study (Fig 6)."""
    if not 0.0 < frac <= 1.0:
        raise ValueError(f"subsample fraction must be in (0, 1], got {frac}")
    if frac == 1.0:
        return np.sort(np.asarray(idx))
    keep = max(1, int(round(frac * len(idx))))
    return np.sort(np.random.RandomState(seed).choice(np.asarray(idx), keep, replace=False))


class SparseLabels:
    """Observed labels stored row-compressed: only POS and NEG entries are kept.

    For very large data sets (OpenImages: millions of rows x 5000 classes) where a dense int8 matrix
    would need gigabytes. ``labels[rows]`` returns a dense int8 block for a batch of rows.
    """

    def __init__(self, indptr: np.ndarray, indices: np.ndarray, values: np.ndarray, num_classes: int):
        self.indptr = np.asarray(indptr, dtype=np.int64)
        self.indices = np.asarray(indices, dtype=np.int32)
        self.values = np.asarray(values, dtype=np.int8)
        self.num_classes = int(num_classes)
        if self.indptr.ndim != 1 or len(self.indptr) < 1 or self.indptr[0] != 0:
            raise ValueError("SparseLabels: indptr must be 1-D and start at 0")
        if self.indptr[-1] != len(self.indices) or len(self.indices) != len(self.values):
            raise ValueError(
                f"SparseLabels: indptr ends at {self.indptr[-1]} but there are {len(self.indices)} indices "
                f"and {len(self.values)} values"
            )
        if len(self.indices) and (self.indices.min() < 0 or self.indices.max() >= self.num_classes):
            raise ValueError(f"SparseLabels: class index out of range [0, {self.num_classes})")
        if not np.isin(self.values, (POS, NEG)).all():
            raise ValueError(_bad_values_message(self.values[None], (POS, NEG), "SparseLabels values"))

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.indptr) - 1, self.num_classes)

    def __len__(self) -> int:
        return len(self.indptr) - 1

    @classmethod
    def from_dense(cls, Y: ArrayLike) -> SparseLabels:
        Y = validate_observed(Y)
        rows, cols = np.nonzero(Y)
        indptr = np.zeros(Y.shape[0] + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=Y.shape[0]), out=indptr[1:])
        return cls(indptr, cols, Y[rows, cols], Y.shape[1])

    @classmethod
    def from_coo(cls, rows: ArrayLike, cols: ArrayLike, values: ArrayLike, shape: tuple[int, int]) -> SparseLabels:
        """Build from (row, class, value) triplets; a later duplicate of the same entry wins."""
        rows, cols, values = (np.asarray(a).reshape(-1) for a in (rows, cols, values))
        n, c = shape
        if not len(rows) == len(cols) == len(values):
            raise ValueError(f"SparseLabels.from_coo: {len(rows)} rows, {len(cols)} cols, {len(values)} values")
        for name, a in (("row", rows), ("class", cols)):
            if len(a) and a.dtype.kind not in "iu":
                raise ValueError(f"SparseLabels.from_coo: {name} indices must be integers, got dtype {a.dtype}")
        rows, cols = rows.astype(np.int64), cols.astype(np.int64)
        if len(rows) and (rows.min() < 0 or rows.max() >= n):
            raise ValueError(f"SparseLabels.from_coo: row index out of range [0, {n})")
        if len(cols) and (cols.min() < 0 or cols.max() >= c):
            raise ValueError(f"SparseLabels.from_coo: class index out of range [0, {c})")
        key = rows * c + cols
        # keep the last occurrence of each key, then sort by (row, col)
        _, last = np.unique(key[::-1], return_index=True)
        keep = len(key) - 1 - last
        order = keep[np.argsort(key[keep], kind="stable")]
        rows, cols, values = rows[order], cols[order], values[order]
        indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
        return cls(indptr, cols, values, c)

    def _row_ids(self, rows) -> np.ndarray:
        """Row selector (slice, int, int array with negatives, bool mask) -> int64 row ids, bounds-checked."""
        n = len(self)
        if isinstance(rows, slice):
            return np.arange(n)[rows]
        r = np.atleast_1d(np.asarray(rows))
        if r.dtype == bool:
            if r.shape != (n,):
                raise IndexError(f"SparseLabels: boolean row mask has shape {r.shape}, expected ({n},)")
            return np.flatnonzero(r)
        if r.ndim != 1 or (r.size and r.dtype.kind not in "iu"):
            raise IndexError(f"SparseLabels: rows must be a slice, an int or a 1-D int array, got {r.dtype} {r.shape}")
        r = r.astype(np.int64)
        if r.size and (r.min() < -n or r.max() >= n):
            bad = r[(r < -n) | (r >= n)][0]
            raise IndexError(f"SparseLabels: row {bad} out of range for {n} rows")
        return np.where(r < 0, r + n, r)

    def _entries(self, rows) -> tuple[np.ndarray, np.ndarray]:
        """(number of stored entries of each selected row, their positions in ``indices``/``values``, row by row)."""
        rows = self._row_ids(rows)
        starts = self.indptr[rows]
        counts = self.indptr[rows + 1] - starts
        flat = np.repeat(starts - (np.cumsum(counts) - counts), counts) + np.arange(counts.sum())
        return counts, flat

    def __getitem__(self, rows) -> np.ndarray:
        counts, flat = self._entries(rows)
        out = np.zeros((len(counts), self.num_classes), dtype=np.int8)
        if flat.size:
            local = np.repeat(np.arange(len(counts)), counts)
            out[local, self.indices[flat]] = self.values[flat]
        return out

    def to_dense(self) -> np.ndarray:
        return self[np.arange(len(self))]

    def take(self, rows: ArrayLike) -> SparseLabels:
        """A new SparseLabels holding only ``rows`` (in that order)."""
        counts, flat = self._entries(rows)
        indptr = np.zeros(len(counts) + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        return SparseLabels(indptr, self.indices[flat], self.values[flat], self.num_classes)

    def known_per_class(self) -> np.ndarray:
        """Number of rows in which each class's label is known (POS or NEG): OpenImages' group key."""
        return np.bincount(self.indices, minlength=self.num_classes)

    def save(self, path: PathLike) -> None:
        """Write an ``.npz`` archive to exactly ``path`` (no suffix is added)."""
        with open(path, "wb") as f:
            np.savez(f, indptr=self.indptr, indices=self.indices, values=self.values, num_classes=self.num_classes)

    @classmethod
    def load(cls, path: PathLike) -> SparseLabels:
        with np.load(path, allow_pickle=False) as z:
            missing = {"indptr", "indices", "values", "num_classes"} - set(z.files)
            if missing:
                raise ValueError(f"{path}: not a SparseLabels file (missing {sorted(missing)})")
            return cls(z["indptr"], z["indices"], z["values"], int(z["num_classes"]))


def as_observed(Y: Union[np.ndarray, SparseLabels], rows: Optional[np.ndarray] = None) -> np.ndarray:
    """Dense int8 observed labels for ``rows`` (all rows when None) of a dense or sparse matrix."""
    if isinstance(Y, SparseLabels):
        return Y[np.arange(len(Y)) if rows is None else rows]
    return Y if rows is None else Y[rows]


def as_full(Y: Union[np.ndarray, SparseLabels], rows: Optional[np.ndarray] = None) -> np.ndarray:
    """Dense uint8 {0,1} full labels for ``rows`` (all when None) of a dense matrix or a SparseLabels of positives."""
    if isinstance(Y, SparseLabels):
        counts, flat = Y._entries(np.arange(len(Y)) if rows is None else rows)
        out = np.zeros((len(counts), Y.num_classes), dtype=np.uint8)
        pos = Y.values[flat] == POS
        out[np.repeat(np.arange(len(counts)), counts)[pos], Y.indices[flat][pos]] = 1
        return out
    return Y if rows is None else Y[rows]
