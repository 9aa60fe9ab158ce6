"""mAP, masked mAP and group mAP of very large splits (OpenImages' test set: 125 000 × 5000) in bounded memory.

Scores never exist as one [N, C] array: scoring writes them to a folder in row chunks (:class:`ScoreChunkWriter`;
one writer per torchrun process, so no rank gathers N × C), each chunk stored class-major ([C, n] float32), so
that a block of classes is one contiguous slice of every chunk file. Evaluation reads one block of classes at a
time (:class:`ScoreChunks`), builds that block's targets from dense or sparse (``SparseLabels``) labels
(:class:`ClassTargets`) and runs :func:`wsml.metrics.ap_class_major` on it. Each class's AP there depends on
that class alone, so the results are identical, bit for bit, to :func:`wsml.metrics.average_precision_per_class`
on the whole matrix; peak memory is about ``block_bytes`` plus the chunk row ids.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Iterator, Optional, Union

import numpy as np

from wsml._types import PathLike
from wsml.labels import POS, UNOBS, SparseLabels
from wsml.metrics import MaskedMAP, ap_class_major, group_map_from_ap

CHUNK_ROWS = 4096  # rows per chunk file
BLOCK_BYTES = 256 * 2**20  # working memory of one block of classes (about 40 bytes per (row, class) entry)
BYTES_PER_ENTRY = 40
_CHUNK = re.compile(r"r(\d+)_(\d+)\.scores\.npy$")


class ScoreChunkWriter:
    """Writes scores [b, C] with their split row ids [b] as they come, one class-major file per ``chunk_rows``
    rows: ``r<rank>_<i>.scores.npy`` [C, n] and ``r<rank>_<i>.rows.npy`` [n]. Memory: one chunk."""

    def __init__(self, folder: PathLike, num_classes: int, rank: int = 0, chunk_rows: int = CHUNK_ROWS):
        self.folder, self.num_classes, self.rank, self.chunk_rows = Path(folder), int(num_classes), rank, chunk_rows
        self.folder.mkdir(parents=True, exist_ok=True)
        self._scores: list[np.ndarray] = []
        self._rows: list[np.ndarray] = []
        self._count = 0
        self._index = 0

    def append(self, scores: np.ndarray, rows: np.ndarray) -> None:
        scores, rows = np.asarray(scores), np.asarray(rows, dtype=np.int64).reshape(-1)
        if scores.ndim != 2 or scores.shape != (len(rows), self.num_classes):
            raise ValueError(f"scores of shape {scores.shape} for {len(rows)} rows and {self.num_classes} classes")
        self._scores.append(scores)
        self._rows.append(rows)
        self._count += len(rows)
        if self._count >= self.chunk_rows:
            self.flush()

    def flush(self) -> None:
        if not self._count:
            return
        scores = np.concatenate(self._scores)
        stem = self.folder / f"r{self.rank:03d}_{self._index:05d}"
        _save(Path(f"{stem}.rows.npy"), np.concatenate(self._rows))
        _save(Path(f"{stem}.scores.npy"), np.ascontiguousarray(scores.T))  # the .scores file marks a complete chunk
        self._scores, self._rows, self._count, self._index = [], [], 0, self._index + 1

    def close(self) -> None:
        self.flush()


def _save(path: Path, array: np.ndarray) -> None:
    """``np.save`` to a temporary name moved into place: a killed scoring never leaves a truncated chunk."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, array)
    tmp.replace(path)


class ScoreChunks:
    """The chunk files of a folder (every rank's, or ``rank``'s only), read back one block of classes or one chunk
    of rows at a time.

    Rows are de-duplicated (the first copy of a row id in rank, then chunk order is kept — what
    :func:`wsml.evaluation.predict_split` keeps) and served sorted by row id: ``self.rows``.
    """

    def __init__(self, folder: PathLike, rank: Optional[int] = None):
        self.folder = Path(folder)
        found = sorted((int(m[1]), int(m[2]), p) for p in self.folder.glob("r*.scores.npy")
                       if (m := _CHUNK.search(p.name)) and rank in (None, int(m[1])))
        if not found:
            raise FileNotFoundError(f"{self.folder} holds no score chunks (r<rank>_<i>.scores.npy)")
        self.paths = [p for _, _, p in found]
        rows = [np.load(str(p).replace(".scores.npy", ".rows.npy"), allow_pickle=False) for p in self.paths]
        sizes = np.array([len(r) for r in rows])
        every = np.concatenate(rows)
        uniq, first = np.unique(every, return_index=True)  # sorted ids, first copy of each
        self.rows = uniq
        owner = np.searchsorted(np.cumsum(sizes), first, side="right")  # chunk of each kept copy
        offsets = np.concatenate(([0], np.cumsum(sizes)[:-1]))
        self._plan = []  # per chunk: (local positions kept, their positions in self.rows)
        for i in range(len(self.paths)):
            dest = np.flatnonzero(owner == i)
            self._plan.append((first[dest] - offsets[i], dest))
        head = np.load(self.paths[0], mmap_mode="r", allow_pickle=False)
        self.num_classes, self.dtype = head.shape[0], head.dtype

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.rows), self.num_classes)

    def class_block(self, c0: int, c1: int) -> np.ndarray:
        """Scores of classes [c0, c1) as a fresh class-major array [c1 - c0, N] (rows sorted by row id)."""
        out = np.empty((c1 - c0, len(self.rows)), dtype=self.dtype)
        for path, (local, dest) in zip(self.paths, self._plan):
            if len(dest):
                chunk = np.load(path, mmap_mode="r", allow_pickle=False)
                out[:, dest] = np.asarray(chunk[c0:c1])[:, local]  # a contiguous slice of the file
                del chunk
        return out

    def row_chunks(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(row ids [n], scores [n, C]) chunk by chunk, duplicates dropped (rows not sorted across chunks)."""
        for path, (local, dest) in zip(self.paths, self._plan):
            if len(dest):
                yield self.rows[dest], np.load(path, allow_pickle=False).T[local]

    def to_dense(self) -> np.ndarray:
        """Scores [N, C] in ``self.rows`` order (small splits only: N × C in memory)."""
        return np.ascontiguousarray(self.class_block(0, self.num_classes).T)


class ClassTargets:
    """Labels {0,1} and optional mask (True = counts) of a split at given rows, served class-major per block
    of classes. From dense full labels, or from observed labels (dense or ``SparseLabels``): positives = POS,
    mask = known (POS or NEG), as OpenImages is evaluated."""

    def __init__(self, n: int, num_classes: int, dense: Optional[tuple[np.ndarray, np.ndarray]] = None,
                 entries: Optional[tuple[np.ndarray, np.ndarray, np.ndarray]] = None, masked: bool = True):
        self.n, self.num_classes, self._dense = n, num_classes, dense  # dense: (source [N_split, C], rows)
        self._masked = dense is None and masked  # unmasked entries: sparse full labels (every entry counts)
        if entries is not None:  # (row position, class, value) sorted by class
            self._rows, self._cls, self._vals = entries
            self._ptr = np.searchsorted(self._cls, np.arange(num_classes + 1))

    @classmethod
    def full(cls, labels: Union[np.ndarray, SparseLabels], rows: np.ndarray) -> ClassTargets:
        """Complete labels (dense {0,1}, or a SparseLabels of the positives): every entry counts, no mask."""
        if isinstance(labels, SparseLabels):
            return cls.observed(labels, rows, masked=False)
        return cls(len(rows), labels.shape[1], dense=(labels, np.asarray(rows)))

    @classmethod
    def observed(cls, obs: Union[np.ndarray, SparseLabels], rows: np.ndarray, masked: bool = True) -> ClassTargets:
        rows = np.asarray(rows)
        if isinstance(obs, SparseLabels):
            sub = obs.take(rows)
            pos = np.repeat(np.arange(len(rows)), np.diff(sub.indptr))
            cols, vals = sub.indices, sub.values
        else:
            pos, cols = np.nonzero(np.asarray(obs)[rows] != UNOBS)
            vals = np.asarray(obs)[rows[pos], cols]
        order = np.argsort(cols, kind="stable")
        return cls(len(rows), obs.shape[1], entries=(pos[order], cols[order].astype(np.int64), vals[order]),
                   masked=masked)

    @classmethod
    def eval_of(cls, split, rows: np.ndarray) -> ClassTargets:
        """What ``split.eval_targets()`` gives, without densifying sparse observed labels."""
        if split.full is not None:
            return cls.full(split.full if isinstance(split.full, SparseLabels) else np.asarray(split.full), rows)
        if split.observed is None:
            raise ValueError("split has neither full nor observed labels: cannot evaluate")
        return cls.observed(split.observed, rows)

    def block(self, c0: int, c1: int) -> tuple[np.ndarray, Optional[np.ndarray]]:
        """(labels bool [c1 - c0, N], mask bool [c1 - c0, N] or None)."""
        if self._dense is not None:
            src, rows = self._dense
            return np.ascontiguousarray((src[:, c0:c1][rows] != 0).T), None
        lo, hi = self._ptr[c0], self._ptr[c1]
        Y = np.zeros((c1 - c0, self.n), bool)
        at = (self._cls[lo:hi] - c0, self._rows[lo:hi])
        Y[at] = self._vals[lo:hi] == POS
        if not self._masked:
            return Y, None
        M = np.zeros((c1 - c0, self.n), bool)
        M[at] = True
        return Y, M

    def counts(self) -> tuple[np.ndarray, np.ndarray]:
        """(counted positives, counted negatives) per class."""
        if self._dense is not None:
            pos = np.zeros(self.num_classes, np.int64)
            for c0, c1 in _blocks(self.num_classes, self.n, BLOCK_BYTES):
                pos[c0:c1] = self.block(c0, c1)[0].sum(axis=1)
            return pos, self.n - pos
        pos = np.bincount(self._cls[self._vals == POS], minlength=self.num_classes)
        if not self._masked:
            return pos, self.n - pos
        return pos, np.bincount(self._cls, minlength=self.num_classes) - pos

    def any_counted(self) -> np.ndarray:
        """bool [C]: the class has a counted entry (the reproduction policy's classes; all when unmasked)."""
        if not self._masked:
            return np.ones(self.num_classes, bool)
        return np.diff(self._ptr) > 0


def _blocks(num_classes: int, n: int, block_bytes: int) -> Iterator[tuple[int, int]]:
    width = max(1, block_bytes // max(1, n * BYTES_PER_ENTRY))
    for c0 in range(0, num_classes, width):
        yield c0, min(num_classes, c0 + width)


def ap_per_class_blocked(scores: ScoreChunks, targets: ClassTargets, block_bytes: int = BLOCK_BYTES) -> np.ndarray:
    """AP of every class, float64 [C], identical to :func:`wsml.metrics.average_precision_per_class`."""
    n, c = scores.shape
    if (targets.n, targets.num_classes) != (n, c):
        raise ValueError(f"targets {targets.n} × {targets.num_classes} do not match scores {n} × {c}")
    ap = np.zeros(c)
    for c0, c1 in _blocks(c, n, block_bytes):
        work = scores.class_block(c0, c1)
        if work.dtype.kind == "f" and np.isnan(work).any():
            cls, pos = np.argwhere(np.isnan(work))[0]
            raise ValueError(f"scores contain NaN, first at row {scores.rows[pos]}, column {c0 + cls}")
        Y, M = targets.block(c0, c1)
        flat = np.flatnonzero(Y if M is None else Y & M)  # class-major: already grouped by class
        pos_scores = work.ravel()[flat]
        if M is not None:
            work[~M] = -np.inf
        n_counted = np.full(c1 - c0, n) if M is None else M.sum(axis=1)
        ap[c0:c1] = ap_class_major(work, flat // n, pos_scores, n_counted)
    return ap


def map_blocked(ap: np.ndarray, keep: np.ndarray) -> float:
    """mAP ×100 under the reproduction policy (the classes ``keep``), as :func:`wsml.metrics.mean_average_precision`."""
    if not keep.any():
        raise ValueError("mean_average_precision: no class has a counted entry (the mask removes everything)")
    return float(ap[keep].mean() * 100.0)


def partial_labels_map_blocked(ap: np.ndarray, targets: ClassTargets) -> MaskedMAP:
    """The partial-labels policy (:func:`wsml.metrics.partial_labels_map`) from the AP per class of ``targets``."""
    pos, neg = targets.counts()
    ok = (pos > 0) & (neg > 0)
    left = np.flatnonzero(~ok).tolist()
    if not ok.any():
        return MaskedMAP(None, 0, left, f"not available: none of the {len(ap)} classes has both a known "
                         "positive and a known negative among the counted entries")
    return MaskedMAP(float(ap[ok].mean() * 100.0), int(ok.sum()), left)


def pu_auc_per_class_blocked(scores: ScoreChunks, targets: ClassTargets, block_bytes: int = BLOCK_BYTES,
                             ) -> np.ndarray:
    """PU-AUC per class (:func:`wsml.partial_val.pu_auc_per_class`; positives = counted positives of ``targets``,
    as the observed positives of partial val labels) a block of classes at a time; identical, class by class."""
    from wsml.partial_val import pu_auc_column

    n, c = scores.shape
    out = np.full(c, np.nan)
    for c0, c1 in _blocks(c, n, block_bytes):
        work = scores.class_block(c0, c1)
        Y, M = targets.block(c0, c1)
        positive = Y if M is None else Y & M
        num_pos = positive.sum(axis=1)
        for i in np.flatnonzero((num_pos > 0) & (num_pos < n)):
            out[c0 + i] = pu_auc_column(work[i], positive[i], num_pos[i])
    return out


def score_split_blocked(index, split: str, scores: ScoreChunks, block_bytes: int = BLOCK_BYTES) -> dict:
    """:func:`wsml.partial_val.score_split` plus ``group_map`` (when the data set has it), from score chunks."""
    from wsml.partial_val import PARTIAL, _rounded, split_labels

    s = index[split]
    targets = ClassTargets.eval_of(s, scores.rows)
    ap = ap_per_class_blocked(scores, targets, block_bytes)
    keep = targets.any_counted()
    if split_labels(index, split) != PARTIAL:
        out = {"map": map_blocked(ap, keep), "policy": "reproduction", "ap_per_class": _rounded(ap * 100),
               "classes_left_out": int((~keep).sum())}
    else:
        obs = targets if s.full is None else ClassTargets.observed(s.observed, scores.rows)
        ap_obs = ap if obs is targets else ap_per_class_blocked(scores, obs, block_bytes)
        pm = partial_labels_map_blocked(ap_obs, obs)
        shown = ap * 100
        shown[pm.left_out] = np.nan
        out = {"map": pm.value, "policy": "partial-labels", "classes_left_out": len(pm.left_out),
               "ap_per_class": _rounded(shown)}
        if pm.message:
            out["message"] = pm.message
    known = index.meta.get("known_per_class")
    if known is not None:
        out["group_map"] = group_map_from_ap(ap, keep, np.asarray(known))
    return out


def choose_thresholds_blocked(scores: ScoreChunks, split, partial: bool, block_bytes: int = BLOCK_BYTES) -> dict:
    """Per-class val thresholds (:func:`wsml.tools.thresholds.choose_thresholds`, or the PU rule of
    :func:`wsml.tools.thresholds.choose_pu_thresholds` when ``partial``) a block of classes at a time; each class's
    threshold depends on that class alone, so the result equals the whole-matrix one."""
    from wsml.tools.thresholds import choose_pu_thresholds, choose_thresholds

    rows = scores.rows
    targets = ClassTargets.observed(split.observed, rows) if partial else ClassTargets.eval_of(split, rows)
    out: dict = {}
    for c0, c1 in _blocks(scores.num_classes, len(scores.rows), block_bytes):
        S = scores.class_block(c0, c1).T
        Y, M = targets.block(c0, c1)
        part = (choose_pu_thresholds(S, (Y & M).T) if partial else
                choose_thresholds(S, Y.T, None if M is None else M.T))
        for key, values in part.items():
            out.setdefault(key, []).extend(values)
    return out


def score_to_chunks(forward: Callable, loader, device, folder: PathLike, num_classes: int, rank: int = 0) -> int:
    """Sigmoid scores (fp32, autocast off, as :func:`wsml.evaluation.predict_split`) of this process's share of
    the loader's split, written to ``folder`` as they come; returns the number of rows written."""
    import torch

    writer, n = ScoreChunkWriter(folder, num_classes, rank), 0
    with torch.no_grad():
        for batch in loader:
            if batch is None:  # every image of the batch failed to load (on_bad_image="skip")
                continue
            with torch.autocast(device_type=device.type, enabled=False):
                logits = forward(batch["input"].to(device, non_blocking=True))
            writer.append(torch.sigmoid(logits.float()).cpu().numpy(), np.asarray(batch["index"], dtype=np.int64))
            n += len(batch["index"])
    writer.close()
    return n
