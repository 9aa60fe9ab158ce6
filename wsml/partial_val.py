"""Validation and evaluation when a split's labels are *partial* (a user's own data without complete label sets).

``wsml prepare csv|folder`` records per split whether its labels are complete (every unlisted class is
absent) or partial (only the listed entries are known) in ``index.meta["label_sets"]``. A val split drawn
from single-positive training rows is partial: treating its unlisted classes as absent made the val mAP of a
96-mAP model about 32 and indistinguishable between Naive AN and LL-R. Under partial val labels wsml:

* selects the epoch by **PU-AUC**: per class, the ROC AUC of the observed positives against every other
  val entry (unobserved or observed negative), averaged over classes. When the observed positives of a
  class are a random sample of its positives (the single-positive protocol), the rest is a mixture of
  negatives and hidden positives in a fixed proportion θ_c, and AUC_PU = (1 − θ_c) · AUC + θ_c / 2 — an
  increasing affine function of the true AUC with the same θ_c at every epoch. So the epoch with the best
  PU-AUC is the epoch with the best (class-weighted) true AUC, estimated from observed labels alone;
  precision-based numbers such as AP are not estimable that way (hidden positives look like false positives).
* reports the val mAP under the *partial-labels* policy (:func:`wsml.metrics.partial_labels_map`): classes
  without a known positive and a known negative are left out; none left -> "not available".
* chooses per-class thresholds by the PU rule of :func:`wsml.tools.thresholds.best_pu_threshold`.

Data sets without the record (the paper's benchmarks) keep their reproduction behaviour unchanged.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from wsml.labels import POS, UNOBS, as_observed

COMPLETE, PARTIAL = "complete", "partial"
PU_AUC = "pu-auc"  # the partial-val epoch-selection criterion (metrics.csv / summary.json name)


def split_labels(index, split: str) -> Optional[str]:
    """"complete" or "partial" as ``wsml prepare`` recorded it for an own-data split; None when not recorded."""
    return (index.meta.get("label_sets") or {}).get(split)


def dense_observed(split, rows: np.ndarray) -> np.ndarray:
    """The split's observed labels {1,0,-1} at ``rows`` as a dense int8 array."""
    return np.asarray(as_observed(split.observed, np.asarray(rows)))


def pu_auc_per_class(scores: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """Per class, ROC AUC of the observed positives against all other entries (nan when either side is empty)."""
    scores, positive = np.asarray(scores), np.asarray(positive, dtype=bool)  # float64 per column: no N x C copy
    n = len(scores)
    out = np.full(scores.shape[1], np.nan)
    num_pos = positive.sum(0)
    for c in np.flatnonzero((num_pos > 0) & (num_pos < n)):
        out[c] = pu_auc_column(scores[:, c], positive[:, c], num_pos[c])
    return out


def pu_auc_column(scores: np.ndarray, positive: np.ndarray, p: int) -> float:
    """PU-AUC of one class: its scores [N], its observed positives bool [N] (``p`` of them, 0 < p < N)."""
    col = scores.astype(np.float64)
    s, n = np.sort(col), len(col)
    v = col[positive]  # average 1-based ranks of the positives, ties shared (Mann-Whitney U)
    ranks = (np.searchsorted(s, v, "left") + np.searchsorted(s, v, "right") + 1) / 2
    return (ranks.sum() - p * (p + 1) / 2) / (p * (n - p))


def pu_auc(scores: np.ndarray, positive: np.ndarray) -> tuple[Optional[float], list[int]]:
    """(mean PU-AUC ×100 over the classes with an observed positive, class ids left out); None if none left."""
    return pu_auc_mean(pu_auc_per_class(scores, positive))


def pu_auc_mean(auc: np.ndarray) -> tuple[Optional[float], list[int]]:
    """:func:`pu_auc` from the PU-AUC per class (nan = left out)."""
    left = np.flatnonzero(np.isnan(auc)).tolist()
    return (None if len(left) == len(auc) else float(np.nanmean(auc) * 100.0)), left


def score_val(index, scores: np.ndarray, rows: np.ndarray) -> dict:
    """The epoch-selection score of the val split and what it is.

    Returns ``{"select": float, "criterion": "map" | "pu-auc", "labels": "complete" | "partial",
    "map": float | None}``; ``map`` is the val mAP (partial-labels policy under partial labels, None when
    not available). Higher ``select`` is better.
    """
    from wsml.evaluation import split_map

    split = index["val"]
    if split_labels(index, "val") != PARTIAL:
        m = split_map(split, scores, rows)
        return {"select": m, "criterion": "map", "labels": COMPLETE, "map": m}
    obs = dense_observed(split, rows)
    auc, _ = pu_auc(scores, obs == POS)
    pm = _partial_map(scores, obs)
    # no observed positive at all in val: nothing to select on; every epoch scores 0 (the first is kept)
    return {"select": 0.0 if auc is None else auc, "criterion": PU_AUC, "labels": PARTIAL, "map": pm}


def score_val_blocked(index, store) -> dict:
    """:func:`score_val` from score chunks (:class:`wsml.metrics_blocked.ScoreChunks`), a block of classes at a
    time: the same numbers for a val split too large for N × C scores in memory."""
    from wsml.metrics_blocked import (
        ClassTargets,
        ap_per_class_blocked,
        map_blocked,
        partial_labels_map_blocked,
        pu_auc_per_class_blocked,
    )

    split = index["val"]
    if split_labels(index, "val") != PARTIAL:
        targets = ClassTargets.eval_of(split, store.rows)
        m = map_blocked(ap_per_class_blocked(store, targets), targets.any_counted())
        return {"select": m, "criterion": "map", "labels": COMPLETE, "map": m}
    obs = ClassTargets.observed(split.observed, store.rows)
    auc, _ = pu_auc_mean(pu_auc_per_class_blocked(store, obs))
    pm = partial_labels_map_blocked(ap_per_class_blocked(store, obs), obs).value
    return {"select": 0.0 if auc is None else auc, "criterion": PU_AUC, "labels": PARTIAL, "map": pm}


def _partial_map(scores: np.ndarray, obs: np.ndarray) -> Optional[float]:
    from wsml.metrics import partial_labels_map

    return partial_labels_map(scores, obs == POS, obs != UNOBS).value


def score_split(index, split: str, scores: np.ndarray, rows: np.ndarray) -> dict:
    """mAP of an evaluation split under the policy its labels call for: ``{"map": float | None, "policy": ...}``.

    Complete or unrecorded labels: :func:`wsml.evaluation.split_map` (policy "reproduction"). Partial own-data
    labels: the partial-labels policy, with the classes left out and, when none is left, a message.
    """
    from wsml.evaluation import split_classes_left_out, split_map, targets_at
    from wsml.metrics import average_precision_per_class, partial_labels_map

    s = index[split]
    ap = average_precision_per_class(scores, *targets_at(s, rows)) * 100
    if split_labels(index, split) != PARTIAL:
        return {"map": split_map(s, scores, rows), "policy": "reproduction", "ap_per_class": _rounded(ap),
                "classes_left_out": split_classes_left_out(s, rows)}
    obs = dense_observed(s, rows)
    pm = partial_labels_map(scores, obs == POS, obs != UNOBS)
    ap[pm.left_out] = np.nan
    out = {"map": pm.value, "policy": "partial-labels", "classes_left_out": len(pm.left_out),
           "ap_per_class": _rounded(ap)}
    if pm.message:
        out["message"] = pm.message
    return out


def val_summary(best: dict) -> dict:
    """summary.json fields of the selected epoch's val score. best.pt keeps the selection score as ``val_map``
    (what the stage logic compares) and, under partial val labels, the partial-labels mAP as ``val_map_value``."""
    criterion = best.get("val_criterion", "map")
    partial = criterion == PU_AUC
    return {"val_map": best.get("val_map_value") if partial else best["val_map"], "val_score": best["val_map"],
            "val_criterion": criterion, "val_labels": PARTIAL if partial else COMPLETE}


def test_summary(index, scores: np.ndarray, rows: np.ndarray) -> dict:
    """summary.json fields of the final test scoring: ``test_map`` (None when not available), its policy, AP per
    class, ``num_test`` and, under partial labels, the classes left out (and why nothing is left)."""
    return _test_fields(score_split(index, "test", scores, rows), len(rows))


def _test_fields(out: dict, num_test: int) -> dict:
    res = {"test_map": out.pop("map"), "test_map_policy": out.pop("policy"),
           "test_ap_per_class": out.pop("ap_per_class"), "num_test": int(num_test),
           "test_classes_left_out": out.pop("classes_left_out")}
    return {**res, **out}


def _rounded(values: np.ndarray) -> list:
    return [None if np.isnan(v) else round(float(v), 4) for v in values]


def describe(val: dict) -> str:
    """The log text of a val score: ``val mAP 83.21`` or ``val PU-AUC 91.30 (partial labels)``."""
    if val["criterion"] == "map":
        return f"val mAP {val['select']:6.2f}"
    return f"val PU-AUC {val['select']:6.2f} (partial labels)"


def final_test_scores(model, loader, device, summary: dict, run_dir) -> tuple:
    """Score the test split after training, never losing the run to a bad test image.

    The loader skips unreadable images (``on_bad_image="skip"``); their number goes into ``summary``
    (``test_images_skipped``) with a warning that names ``wsml eval`` to re-score once they are fixed. When
    no test image can be read, ``(None, None)`` and the summary says why.
    """
    import warnings

    from wsml.evaluation import predict_split

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            scores, rows = predict_split(model, loader, device)
        except ValueError as e:
            scores = rows = None
            summary.update(test_map=None, message=f"not available: {e}")
    _report_skipped(summary, loader, 0 if rows is None else len(rows), caught, run_dir)
    return scores, rows


def final_test_chunked(model, loader, device, summary: dict, run_dir, index, dist) -> None:
    """:func:`final_test_scores` and :func:`test_summary` (with ``test_group_map``) for a test split too large for
    N × C scores in memory: every process scores its shard to disk, rank 0 evaluates a block of classes at a time
    and keeps the scores as ``predictions_test.chunks/`` (as ``wsml eval`` does) instead of an .npz."""
    import warnings

    from wsml.evaluation import keep_chunks, scores_on_main
    from wsml.metrics_blocked import score_split_blocked

    def evaluate(store):
        out = score_split_blocked(index, "test", store)
        groups = out.pop("group_map", None)
        fields = _test_fields(out, len(store.rows))
        if groups is not None:
            fields["test_group_map"] = groups
        keep_chunks(store.folder, run_dir, "test")
        return fields

    fields = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            fields = scores_on_main(model, loader, device, run_dir, "test", index.num_classes, dist, evaluate)
        except ValueError as e:
            summary.update(test_map=None, message=f"not available: {e}")
    _report_skipped(summary, loader, 0 if fields is None else fields["num_test"], caught, run_dir)
    summary.update(fields or {})


def _report_skipped(summary: dict, loader, scored: int, caught: list, run_dir) -> None:
    """Count the test images that could not be read into ``summary`` and warn, naming ``wsml eval``."""
    import sys

    bad = [str(w.message) for w in caught if "skip" in str(w.message)]
    n_bad = loader.dataset.num_samples - scored
    if n_bad:
        summary["test_images_skipped"] = int(n_bad)
        example = bad[0] if bad else ""
        print(f"warning: {n_bad} test image(s) could not be read and are left out of the test metrics "
              f"({example}); fix them and run `wsml eval {run_dir}`", file=sys.stderr)


def final_line(summary: dict, has_test: bool) -> str:
    """The last line of a training run: best epoch, its val score (named), test mAP or why there is none."""
    val = describe({"criterion": summary["val_criterion"], "select": summary["val_score"]})
    if summary.get("test_map") is not None:
        test = f", test mAP {summary['test_map']:.2f}"
    else:
        test = f", test mAP {summary.get('message', 'not available')}" if has_test else " (no test split)"
    return f"best epoch {summary['best_epoch']}: {val}{test}  ({summary['run_dir']})"
