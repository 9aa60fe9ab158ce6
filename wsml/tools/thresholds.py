"""Per-class decision thresholds chosen on the val split, so that predictions become label sets.

A multi-label model outputs one sigmoid score per class; turning scores into labels needs a threshold per
class, and 0.5 is rarely right after training from partial labels (Naive AN pushes every score down, LL-R
much less). wsml picks, for every class, the threshold that maximises that class's F1 on the **val** split
(the split used for model selection, never test), using the run's best checkpoint:

    predicted[c] = score[c] >= threshold[c]

The threshold is the midpoint between the lowest score kept positive and the next lower score, so the
val F1 is exactly reproduced by the rule above. A class without any positive among the counted val
entries keeps ``DEFAULT_THRESHOLD`` (0.5), recorded with ``"source": "default"``.

Thresholds are chosen lazily: ``wsml predict`` / ``wsml eval`` (or :func:`ensure_thresholds`) score the
val split once and write ``thresholds.json`` in the run folder; they are recomputed when ``best.pt``
changes (its modification time is stored). When the val labels are partial (own data without complete val
rows, ``wsml.partial_val``), F1 cannot be measured there and :func:`best_pu_threshold` is used instead.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import numpy as np

from wsml._types import PathLike
from wsml.runs import RunFolder

DEFAULT_THRESHOLD = 0.5
FILE_NAME = "thresholds.json"


def best_f1_threshold(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(threshold, F1) maximising F1 = 2TP / (2TP + FP + FN) for one class; (0.5, nan) without positives.

    Only cuts between distinct scores are considered (tied scores get the same label). Ties in F1 go to the
    higher threshold.
    """
    s, y = np.asarray(scores, dtype=np.float64).ravel(), np.asarray(labels).ravel().astype(bool)
    if s.shape != y.shape:
        raise ValueError(f"scores ({s.shape}) and labels ({y.shape}) differ in shape")
    return _best_cut(s, y, lambda tp, predicted, num_pos: 2 * tp / (predicted + num_pos))


def _best_cut(s: np.ndarray, y: np.ndarray, criterion) -> tuple[float, float]:
    """(threshold, criterion value) of the cut between distinct scores that maximises
    ``criterion(true positives, predicted positives, positives)`` (ties go to the higher threshold);
    (0.5, nan) without a positive."""
    num_pos = int(y.sum())
    if num_pos == 0 or len(s) == 0:
        return DEFAULT_THRESHOLD, float("nan")
    order = np.argsort(-s, kind="stable")
    s_sorted, tp = s[order], np.cumsum(y[order])
    # a cut after position i is allowed when the next score is strictly lower (or i is the last)
    cut = np.nonzero(np.append(s_sorted[:-1] > s_sorted[1:], True))[0]
    value = criterion(tp[cut], cut + 1, num_pos)
    best = int(np.argmax(value))
    i = int(cut[best])
    thr = s_sorted[i] if i == len(s) - 1 else 0.5 * (s_sorted[i] + s_sorted[i + 1])
    return float(thr), float(value[best])


def choose_thresholds(scores: np.ndarray, labels: np.ndarray, mask: Optional[np.ndarray] = None) -> dict:
    """Per-class F1-maximising thresholds for ``scores`` [N, C] against ``labels`` {0,1} [N, C].

    ``mask`` (bool [N, C], True = counts) excludes unknown entries. Returns ``{"thresholds": [C], "f1": [C],
    "num_pos": [C], "source": [C]}`` (source "f1" or "default").
    """
    scores, labels = np.asarray(scores), np.asarray(labels)
    if scores.ndim != 2 or scores.shape != labels.shape:
        raise ValueError(f"scores {scores.shape} and labels {labels.shape} must both be [N, C]")
    if mask is not None and np.asarray(mask).shape != scores.shape:
        raise ValueError(f"mask {np.asarray(mask).shape} must have the shape of scores {scores.shape}")
    out: dict = {"thresholds": [], "f1": [], "num_pos": [], "source": []}
    for c in range(scores.shape[1]):
        keep = slice(None) if mask is None else np.asarray(mask[:, c], dtype=bool)
        thr, f1 = best_f1_threshold(scores[keep, c], labels[keep, c])
        out["thresholds"].append(thr)
        out["f1"].append(None if np.isnan(f1) else round(f1, 6))
        out["num_pos"].append(int(np.asarray(labels[keep, c]).astype(bool).sum()))
        out["source"].append("default" if np.isnan(f1) else "f1")
    return out


def best_pu_threshold(scores: np.ndarray, positive: np.ndarray) -> tuple[float, float]:
    """(threshold, criterion) for one class when only some positives are known (partial val labels).

    F1 needs the false positives, which partial labels hide. With the observed positives a random sample of
    all positives, their recall r(t) estimates the true recall, and precision · recall = π · r(t)² / q(t),
    q(t) the share of val entries scored >= t and π the (unknown, constant) class prior. So the cut that
    maximises r(t)² / q(t) (Lee & Liu, ICML 2003) maximises precision · recall, a close cousin of F1, from
    observed positives alone. (0.5, nan) without an observed positive.
    """
    s, y = np.asarray(scores, dtype=np.float64).ravel(), np.asarray(positive).ravel().astype(bool)
    return _best_cut(s, y, lambda tp, predicted, num_pos: (tp / num_pos) ** 2 / (predicted / len(s)))


def choose_pu_thresholds(scores: np.ndarray, positive: np.ndarray) -> dict:
    """Per-class :func:`best_pu_threshold` (``source`` "pu" or "default"); ``f1`` is None: not measurable."""
    out: dict = {"thresholds": [], "f1": [], "num_pos": [], "source": []}
    for c in range(scores.shape[1]):
        thr, crit = best_pu_threshold(scores[:, c], positive[:, c])
        out["thresholds"].append(thr)
        out["f1"].append(None)
        out["num_pos"].append(int(np.asarray(positive[:, c]).sum()))
        out["source"].append("default" if np.isnan(crit) else "pu")
    return out


def apply_thresholds(scores: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """uint8 {0,1} [N, C]: ``scores >= thresholds`` per class."""
    scores = np.asarray(scores, dtype=np.float64)
    thr = np.asarray(thresholds, dtype=np.float64)
    if scores.shape[-1] != len(thr):
        raise ValueError(f"{len(thr)} thresholds for {scores.shape[-1]} classes")
    return (scores >= thr).astype(np.uint8)


def f1_per_class(pred: np.ndarray, labels: np.ndarray, mask: Optional[np.ndarray] = None) -> np.ndarray:
    """F1 of each class (nan where the class has neither a positive nor a predicted positive)."""
    pred, labels = np.asarray(pred).astype(bool), np.asarray(labels).astype(bool)
    m = np.ones_like(pred) if mask is None else np.asarray(mask, dtype=bool)
    tp = (pred & labels & m).sum(0)
    denom = ((pred & m).sum(0) + (labels & m).sum(0)).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, 2 * tp / np.maximum(denom, 1), np.nan)


# ------------------------------------------------------------------------------------------ run folders


def _stamp(run: RunFolder) -> int:
    if not run.best_pt.is_file():
        raise FileNotFoundError(f"{run.path}: no best.pt (is this a finished `wsml train` run folder?)")
    return run.best_pt.stat().st_mtime_ns


def load_thresholds(run: Union[RunFolder, PathLike]) -> Optional[dict]:
    """The run's ``thresholds.json`` when it exists and matches the current best.pt; else None."""
    from wsml.runs import read_json

    run = RunFolder.of(run)
    path = run.file(FILE_NAME)
    if not path.is_file():
        return None
    try:
        data = read_json(path)
    except ValueError as e:
        raise ValueError(f"{e}; delete it to recompute the thresholds") from None
    return data if data.get("best_pt_mtime_ns") == _stamp(run) else None


def ensure_thresholds(run: Union[RunFolder, PathLike], device: str = "auto", val: Optional[tuple] = None) -> dict:
    """The run's per-class thresholds: read ``thresholds.json`` or choose them on val (and write the file, with
    the val scoring's ``predictions_val.npz`` and ``eval_val.json``). ``val``: the (result, scores, rows) of
    :func:`wsml.evaluation.evaluate_run` on val when the caller has just computed them (not scored again).

    The dict has ``class_names``, ``thresholds``, ``f1`` (val F1 at the threshold), ``num_pos`` (val
    positives), ``source``, ``split`` and ``checkpoint_epoch``.
    """
    from wsml.checkpoint import write_json
    from wsml.evaluation import evaluate_run, targets_at
    from wsml.labels import POS
    from wsml.partial_val import PARTIAL, dense_observed, split_labels

    run = RunFolder.of(run)
    cached = load_thresholds(run)
    if cached is not None:
        return cached
    stamp = _stamp(run)
    result, scores, rows = val if val is not None else evaluate_run(run, "val", device=device, write=True)
    index = run.dataset
    partial = split_labels(index, "val") == PARTIAL  # F1 is not measurable on partial labels: the PU rule
    if scores is None:  # too large to hold: the val scores stayed in chunks, thresholds a block of classes at a time
        from wsml.metrics_blocked import ScoreChunks, choose_thresholds_blocked

        store = ScoreChunks(run.file("predictions_val.chunks"))
        chosen, rows = choose_thresholds_blocked(store, index["val"], partial), store.rows
    elif partial:
        chosen = choose_pu_thresholds(scores, dense_observed(index["val"], rows) == POS)
    else:
        chosen = choose_thresholds(scores, *targets_at(index["val"], rows))
    criterion = ("PU rule: max recall(observed positives)^2 / predicted-positive rate (partial val labels)"
                 if partial else "per-class F1")
    data = {"split": "val", "criterion": criterion, "checkpoint_epoch": result["checkpoint_epoch"],
            "num_samples": int(len(rows)), "class_names": list(index.class_names), **chosen,
            "best_pt_mtime_ns": stamp}
    write_json(run.file(FILE_NAME), data)
    return data


def _pct(values: np.ndarray) -> Optional[float]:
    """Mean ×100 over the defined (non-nan) entries; None when there are none."""
    return float(np.nanmean(values) * 100) if np.isfinite(values).any() else None


def thresholded_metrics(run: Union[RunFolder, PathLike], split: str, scores: np.ndarray, rows: np.ndarray,
                        device: str = "auto", thresholds: Optional[dict] = None) -> dict:
    """Macro F1 / precision / recall (×100) of ``scores`` (the run's scores of ``rows`` of ``split``, from
    :func:`wsml.evaluation.evaluate_run`) with the val thresholds. On ``split="val"`` they are optimistic: the
    thresholds were chosen there. ``thresholds``: the run's, when the caller holds them already."""
    from wsml.evaluation import targets_at

    run = RunFolder.of(run)
    thr = thresholds if thresholds is not None else ensure_thresholds(run, device)
    labels, mask = targets_at(run.split(split), rows)
    y = labels.astype(bool)
    m = np.ones_like(y) if mask is None else mask.astype(bool)
    p = apply_thresholds(scores, thr["thresholds"]).astype(bool)
    f1 = f1_per_class(p, y, m)
    tp, npred, npos = (p & y & m).sum(0), (p & m).sum(0), (y & m).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        prec = np.where(npred > 0, tp / np.maximum(npred, 1), np.nan)
        rec = np.where(npos > 0, tp / np.maximum(npos, 1), np.nan)
    return {"split": split, "thresholds_from": "val", "macro_f1": _pct(f1), "macro_precision": _pct(prec),
            "macro_recall": _pct(rec), "f1_per_class": [None if np.isnan(v) else round(float(v), 6) for v in f1]}


def per_class_table(result: dict, thresholds: dict) -> list[dict]:
    """One row per class (AP, F1 ×100 at the val threshold, threshold) from an evaluation ``result`` (with the
    :func:`thresholded_metrics` fields) and the run's ``thresholds``."""
    names = thresholds.get("class_names") or [str(c) for c in range(len(result.get("f1_per_class", [])))]
    ap, f1, t = result.get("ap_per_class") or [None] * len(names), result.get("f1_per_class") or [None] * len(names), \
        thresholds.get("thresholds") or [None] * len(names)
    return [{"class": n, "ap": a, "f1": None if f is None else round(100 * f, 4), "threshold": th}
            for n, a, f, th in zip(names, ap, f1, t)]


def per_class_lines(rows: list[dict]) -> list[str]:
    """The :func:`per_class_table` as aligned text lines (what ``wsml eval`` prints)."""
    def num(v, spec):  # "-" (a class left out of the mAP) right-aligned like the numbers of its column
        return f"{'-' if v is None else format(v, spec):>{spec.split('.')[0] or 1}}"

    width = max([len(r["class"]) for r in rows] + [5])
    lines = [f"  {'class':<{width}}  {'AP':>6}  {'F1':>6}  threshold"]
    lines += [f"  {r['class']:<{width}}  {num(r['ap'], '6.2f')}  {num(r['f1'], '6.2f')}  {num(r['threshold'], '.4f')}"
              for r in rows]
    return lines
