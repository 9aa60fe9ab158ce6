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
        col = scores[:, c].astype(np.float64)
        s, p = np.sort(col), num_pos[c]
        v = col[positive[:, c]]  # average 1-based ranks of the positives, ties shared (Mann-Whitney U)
        ranks = (np.searchsorted(s, v, "left") + np.searchsorted(s, v, "right") + 1) / 2
        out[c] = (ranks.sum() - p * (p + 1) / 2) / (p * (n - p))
    return out


def pu_auc(scores: np.ndarray, positive: np.ndarray) -> tuple[Optional[float], list[int]]:
    """(mean PU-AUC ×100 over the classes with an observed positive, class ids left out); None if none left."""
    auc = pu_auc_per_class(scores, positive)
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
    out = score_split(index, "test", scores, rows)
    res = {"test_map": out.pop("map"), "test_map_policy": out.pop("policy"),
           "test_ap_per_class": out.pop("ap_per_class"), "num_test": int(len(rows)),
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
    import sys
    import warnings

    from wsml.evaluation import predict_split

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            scores, rows = predict_split(model, loader, device)
        except ValueError as e:
            scores = rows = None
            summary.update(test_map=None, message=f"not available: {e}")
    bad = [str(w.message) for w in caught if "skip" in str(w.message)]
    total = loader.dataset.num_samples
    n_bad = total if rows is None else total - len(rows)
    if n_bad:
        summary["test_images_skipped"] = int(n_bad)
        example = bad[0] if bad else ""
        print(f"warning: {n_bad} test image(s) could not be read and are left out of the test metrics "
              f"({example}); fix them and run `wsml eval {run_dir}`", file=sys.stderr)
    return scores, rows


def final_line(summary: dict, has_test: bool) -> str:
    """The last line of a training run: best epoch, its val score (named), test mAP or why there is none."""
    val = describe({"criterion": summary["val_criterion"], "select": summary["val_score"]})
    if summary.get("test_map") is not None:
        test = f", test mAP {summary['test_map']:.2f}"
    else:
        test = f", test mAP {summary.get('message', 'not available')}" if has_test else " (no test split)"
    return f"best epoch {summary['best_epoch']}: {val}{test}  ({summary['run_dir']})"
