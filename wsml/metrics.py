"""Mean average precision (mAP), masked mAP, OpenImages group mAP.

AP is exactly ``sklearn.metrics.average_precision_score`` (ties included): over the distinct score
thresholds t_n, AP = Σ_n (R_n − R_{n−1}) P_n. Equivalently AP = (1/P) Σ_{positives i} TP(≥s_i) / K(≥s_i),
with K(≥s) the number of counted entries scoring ≥ s; tied positives share one threshold. This form only
needs each class's scores sorted once (values, no argsort) and one batched search of the positives, so
all classes are computed together, without a Python loop over classes.

A class with no positive among its counted entries scores AP 0 (the reference protocol; sklearn warns
and also returns 0). ``mask`` (bool, True = counts) removes entries, e.g. OpenImages' unannotated labels.

Which classes enter the mean is the *reproduction* policy (:func:`reproduction_classes`): without a mask every
class counts; with a mask a class with no counted entry at all is left out of the mean and of its group's mean,
as the authors' ``compute_metrics_openimages`` skips it (:func:`classes_left_out` gives the number).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Optional, Union

import numpy as np
import torch

from wsml.labels import SparseLabels

ArrayOrTensor = Union[np.ndarray, torch.Tensor, Any]


def _to_numpy(x: ArrayOrTensor, what: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.dtype in (torch.float16, torch.bfloat16):
            x = x.float()
        return x.numpy()
    x = np.asarray(x)
    if x.dtype == object:
        raise ValueError(f"{what}: expected a numeric array, got dtype object")
    return x


def _first_bad(bad: np.ndarray) -> str:
    rows, cols = np.nonzero(bad)
    return f"first at row {rows[0]}, column {cols[0]} ({int(bad.sum())} entries)"


def _check_scores(scores: ArrayOrTensor) -> np.ndarray:
    S = _to_numpy(scores, "scores")
    if S.ndim == 1:
        S = S[:, None]
    if S.ndim != 2:
        raise ValueError(f"scores: expected a matrix [N, C], got shape {S.shape}")
    if S.dtype.kind == "f":
        nan = np.isnan(S)
        if nan.any():
            raise ValueError(f"scores contain NaN, {_first_bad(nan)}")
        return S if S.dtype.itemsize >= 4 else S.astype(np.float32)
    if S.dtype.kind == "b":
        return S.astype(np.float32)
    if S.dtype.kind in "iu":
        return S.astype(np.float64)
    raise ValueError(f"scores: expected real numbers, got dtype {S.dtype}")


def _check_binary(x: ArrayOrTensor, shape: tuple[int, int], what: str) -> np.ndarray:
    Y = _to_numpy(x, what)
    if Y.ndim == 1:
        Y = Y[:, None]
    if Y.shape != shape:
        raise ValueError(f"{what} shape {Y.shape} does not match scores shape {shape}")
    if Y.dtype.kind == "b":
        return Y
    if Y.dtype.kind in "iu":
        ok = Y.size == 0 or (Y.min() >= 0 and Y.max() <= 1)
    elif Y.dtype.kind == "f":
        ok = bool(((Y == 0) | (Y == 1)).all())
    else:
        raise ValueError(f"{what}: expected a {{0,1}} or bool matrix, got dtype {Y.dtype}")
    if ok:
        return Y != 0
    bad = (Y != 0) & (Y != 1)
    msg = f"{what} must be {{0,1}}; found values {np.unique(Y[bad])[:10].tolist()}, {_first_bad(bad)}"
    if what == "labels" and np.isin(Y, (1, 0, -1)).all():
        msg += (
            ". This looks like an observed-label matrix (POS=1, UNOBS=0, NEG=-1): AP needs ground truth; "
            "pass the full {0,1} labels, or {0,1} labels with mask=(observed != 0) to count known entries only"
        )
    raise ValueError(msg)


def _sort_rows(a: np.ndarray) -> None:
    """Sort each row of ``a`` in place, blocks of rows on parallel threads (numpy's sort releases the GIL)."""
    workers = min(os.cpu_count() or 1, torch.get_num_threads(), max(1, a.shape[0] // 64))
    if workers <= 1:
        a.sort(axis=1)
        return
    blocks = np.array_split(np.arange(a.shape[0]), workers)
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda b: a[b[0] : b[-1] + 1].sort(axis=1), [b for b in blocks if len(b)]))


def average_precision_per_class(
    scores: ArrayOrTensor, labels: ArrayOrTensor, mask: Optional[ArrayOrTensor] = None
) -> np.ndarray:
    """AP of every class (column) as in sklearn, float64 [C]; 0 for a class with no counted positive.

    scores: [N, C] real (numpy, torch or nested lists); labels: [N, C] full ground truth {0,1};
    mask: optional bool [N, C], True = the entry counts. A 1-D input is one class.
    """
    S = _check_scores(scores)
    Y = _check_binary(labels, S.shape, "labels")
    M = None if mask is None else _check_binary(mask, S.shape, "mask")
    n, c = S.shape
    if n == 0 or c == 0:
        return np.zeros(c)
    # positives, found row-major (fast), then grouped by class with a stable radix sort of the class ids
    flat = np.flatnonzero(Y if M is None else Y & M)
    cls = (flat % c).astype(np.int16 if c < 2**15 else np.int64)
    order = np.argsort(cls, kind="stable")
    cls, pos_scores = cls[order], np.ravel(S)[flat[order]]
    # one copy of the scores per class; removed entries sink to -inf (handled in ap_class_major)
    src = S if M is None else np.where(M, S, -np.inf).astype(S.dtype, copy=False)
    work = np.empty((c, n), dtype=src.dtype)  # a fresh [C, N] copy; torch's blocked transpose is ~4x numpy's
    torch.from_numpy(work).copy_(torch.from_numpy(np.ascontiguousarray(src)).t())
    n_counted = np.full(c, n) if M is None else M.sum(axis=0)
    return ap_class_major(work, cls, pos_scores, n_counted)


def ap_class_major(work: np.ndarray, cls: np.ndarray, pos_scores: np.ndarray, n_counted: np.ndarray) -> np.ndarray:
    """AP per class from class-major scores ``work`` [C, N] (sorted in place; uncounted entries = -inf), the
    class id and score of every counted positive (grouped by class) and the counted entries per class.

    Each class's AP depends on that class's row only (its precision terms are summed on their own), so AP
    computed over any block of classes equals the full computation bit for bit (:mod:`wsml.metrics_blocked`).
    """
    c, n = work.shape
    _sort_rows(work)
    num_pos = np.bincount(cls, minlength=c)
    # positives of each class in a padded [C, P_max] block, padding +inf (never below a real score)
    width = max(int(num_pos.max()), 1) if c else 1
    start = np.concatenate(([0], np.cumsum(num_pos)[:-1])).astype(np.int64)
    padded = np.full((c, width), np.inf, dtype=work.dtype)
    padded[cls, np.arange(len(cls)) - start[cls]] = pos_scores
    padded.sort(axis=1)
    pt = torch.from_numpy(padded)
    # K(>=s): counted entries scoring >= s; TP(>=s): positives scoring >= s (ties grouped, as sklearn)
    below_all = torch.searchsorted(torch.from_numpy(work), pt).numpy()
    below_pos = torch.searchsorted(pt, pt).numpy()
    counted = np.where(padded == -np.inf, n_counted[:, None], n - below_all)
    valid = np.arange(width)[None, :] < num_pos[:, None]
    precision = ((num_pos[:, None] - below_pos) / np.maximum(counted, 1))[valid]  # row-major: class by class
    total = np.zeros(c)
    has = num_pos > 0
    if precision.size:
        total[has] = np.add.reduceat(precision, start[has])  # one sum per class, its own terms only
    return total / np.maximum(num_pos, 1)


def reproduction_classes(mask: Optional[ArrayOrTensor], num_classes: int) -> np.ndarray:
    """Reproduction policy: bool [C], True = the class enters the mean. Without a mask every class does (AP 0
    without positives, as sklearn and the reference); with one, a class with no counted entry is left out."""
    if mask is None:
        return np.ones(num_classes, dtype=bool)
    M = _to_numpy(mask, "mask")
    return (M[:, None] if M.ndim == 1 else M).astype(bool, copy=False).any(axis=0)


def classes_left_out(mask: Optional[ArrayOrTensor], num_classes: int) -> int:
    """How many classes the reproduction policy leaves out of the mean (no counted entry; 0 without a mask)."""
    return int((~reproduction_classes(mask, num_classes)).sum())


def mean_average_precision(
    scores: ArrayOrTensor, labels: ArrayOrTensor, mask: Optional[ArrayOrTensor] = None
) -> float:
    """mAP ×100: the mean of :func:`average_precision_per_class` over the classes the reproduction policy keeps
    (docs/design.md §3)."""
    if len(scores) == 0:
        raise ValueError("mean_average_precision: scores has no rows (an empty split): mAP is not defined")
    ap = average_precision_per_class(scores, labels, mask)
    if len(ap) == 0:
        raise ValueError("mean_average_precision: there are no classes (scores have 0 columns)")
    keep = reproduction_classes(mask, len(ap))
    if not keep.any():
        raise ValueError("mean_average_precision: no class has a counted entry (the mask removes everything)")
    return float(ap[keep].mean() * 100.0)


@dataclass
class MaskedMAP:
    """Result of :func:`partial_labels_map`: mAP ×100 over the scorable classes, or None = not available."""

    value: Optional[float]
    num_scored: int  # classes that have a counted positive and a counted negative
    left_out: list[int]  # class ids left out (no counted positive or no counted negative)
    message: str = ""  # why the value is not available (empty when it is)


def partial_labels_map(
    scores: ArrayOrTensor, labels: ArrayOrTensor, mask: Optional[ArrayOrTensor] = None
) -> MaskedMAP:
    """mAP under the *partial-labels* policy (a user's partial evaluation labels, docs/design.md §3).

    A class lacking either a counted positive or a counted negative cannot be scored — its AP would be a
    fixed 0 or 100 whatever the model does — so it is left out and counted; with no class left the value is
    None ("not available") with a message, never 100. The reproduction policy of the paper configs stays
    :func:`mean_average_precision`.
    """
    S = _check_scores(scores)
    Y = _check_binary(labels, S.shape, "labels")
    M = np.ones(S.shape, bool) if mask is None else _check_binary(mask, S.shape, "mask")
    pos, neg = (Y & M).sum(0), (~Y & M).sum(0)
    ok = (pos > 0) & (neg > 0)
    left = np.flatnonzero(~ok).tolist()
    if not ok.any():
        return MaskedMAP(None, 0, left, f"not available: none of the {S.shape[1]} classes has both a known "
                         "positive and a known negative among the counted entries")
    ap = average_precision_per_class(S[:, ok], Y[:, ok], M[:, ok])
    return MaskedMAP(float(ap.mean() * 100.0), int(ok.sum()), left)


def class_groups(known_counts: Union[ArrayOrTensor, SparseLabels], num_groups: int = 5) -> list[np.ndarray]:
    """Split class ids into ``num_groups`` groups by ascending ``known_counts`` (G1 = fewest known).

    Ties keep class-id order (stable sort). When C is not a multiple of ``num_groups`` the first
    ``C % num_groups`` groups get one class more (``np.array_split``).
    """
    if isinstance(known_counts, SparseLabels):
        known_counts = known_counts.known_per_class()
    k = _to_numpy(known_counts, "known_counts")
    if k.ndim != 1:
        raise ValueError(f"known_counts: expected one count per class, got shape {k.shape}")
    if not isinstance(num_groups, (int, np.integer)) or not 1 <= num_groups <= len(k):
        raise ValueError(f"num_groups must be an integer in [1, {len(k)}] (number of classes), got {num_groups!r}")
    if k.dtype.kind not in "iuf" or (k.size and (np.isnan(k).any() or k.min() < 0)):
        raise ValueError("known_counts must be non-negative numbers (images with the class's label known)")
    return np.array_split(np.argsort(k, kind="stable"), num_groups)


def group_mean_average_precision(
    scores: ArrayOrTensor,
    labels: ArrayOrTensor,
    known_counts: Union[ArrayOrTensor, SparseLabels],
    num_groups: int = 5,
    mask: Optional[ArrayOrTensor] = None,
) -> dict[str, float]:
    """OpenImages-style mAP per class group (paper Table 3): ``{"G1": ..., "G5": ..., "all": ...}``.

    Classes are grouped by :func:`class_groups` on ``known_counts`` (per class, the number of training
    images whose label is known — ``SparseLabels.known_per_class()``, which may be passed directly);
    "all" is the mAP over all classes. Values are ×100. Classes the reproduction policy leaves out (no counted
    entry) count in neither their group's mean nor "all"; a group left with no class is NaN.
    """
    ap = average_precision_per_class(scores, labels, mask)
    return group_map_from_ap(ap, reproduction_classes(mask, len(ap)), known_counts, num_groups)


def group_map_from_ap(ap: np.ndarray, keep: np.ndarray, known_counts, num_groups: int = 5) -> dict[str, float]:
    """Group mAP (×100) from the AP per class and the classes that count (``keep``); shared by the dense and
    the blocked (:mod:`wsml.metrics_blocked`) evaluation."""
    groups = class_groups(known_counts, num_groups)
    if sum(len(g) for g in groups) != len(ap):
        raise ValueError(f"known_counts has {sum(len(g) for g in groups)} classes but scores have {len(ap)}")

    def mean(cls: np.ndarray) -> float:
        cls = cls[keep[cls]]
        return float(ap[cls].mean() * 100.0) if len(cls) else float("nan")

    out = {f"G{i + 1}": mean(g) for i, g in enumerate(groups)}
    out["all"] = mean(np.arange(len(ap)))
    return out
