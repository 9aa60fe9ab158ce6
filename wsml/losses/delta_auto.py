"""``loss.delta_rel=auto``: choose Δrel for a user's data from the share of positives the labels miss.

LL-R/LL-Ct reject (or correct) a growing share of the batch's label entries, rate(t) = (t − 1) · Δrel / 100
(paper Eq. 4-5), taken among the unobserved entries. The ideal end point is the share of entries that are
missed positives: with k positives per image, o of them observed and C classes it is (k − o) / C. So Δrel =
100 · (k − o) / (C · (E − 1)) for a run whose loss sees E epochs. k comes from complete val rows (mean
positives per row), or from ``loss.expected_num_pos`` when the user knows it; without either, Δrel falls
back to ``FALLBACK`` with a note saying how to give k. The estimate and the choice are printed.
"""

from __future__ import annotations

from typing import Callable

from wsml.labels import POS, SparseLabels

FALLBACK = 0.4  # the paper's COCO/NUS value, when nothing tells how many positives are missing


def loss_epochs(cfg) -> int:
    """Epochs over which the LL schedule runs: LinearInit's stage 1 (its schedule restarts in stage 2), else all."""
    return cfg.train.linear_epochs if cfg.train.scheme == "linearinit" else cfg.train.epochs


def positives_per_image(cfg, index) -> tuple[float, str]:
    """(k, where it comes from): complete val rows first, then ``loss.expected_num_pos``; (nan, "") without."""
    val = index.splits.get("val")
    if val is not None and val.full is not None and len(val):
        full = val.full  # dense {0,1}, or a SparseLabels of the positives
        positives = len(full.values) if isinstance(full, SparseLabels) else int(full.sum())
        return positives / len(val), f"{len(val)} complete val rows"
    if cfg.loss.expected_num_pos:
        return float(cfg.loss.expected_num_pos), "loss.expected_num_pos"
    return float("nan"), ""


def auto_delta_rel(cfg, index, log: Callable = print) -> float:
    """Δrel (percent per epoch) so that (E − 1) · Δrel reaches the share of label entries that are missed positives."""
    k, source = positives_per_image(cfg, index)
    if not source:
        log(f"note: loss.delta_rel=auto has no complete val rows and no loss.expected_num_pos to estimate the missing "
            f"positives from: using Δrel {FALLBACK}; give split=val rows with complete labels or "
            f"loss.expected_num_pos=K (positives per image)")
        return FALLBACK
    obs = index["train"].train_targets()
    obs = obs.values if isinstance(obs, SparseLabels) else obs  # sparse: its stored entries (no N x C matrix)
    observed = float((obs == POS).sum() / max(len(index["train"]), 1))
    c, epochs = index.num_classes, loss_epochs(cfg)
    share = max(k - observed, 0.0) / c
    delta = round(100.0 * share / max(epochs - 1, 1), 4)
    log(f"loss.delta_rel=auto: {k:.2f} positives per image ({source}), {observed:.2f} observed per training image "
        f"-> {100 * share:.1f} % of the {c} label entries are missed positives; over {epochs} epochs Δrel = "
        f"{delta} (% per epoch)")
    return delta


def resolve_delta_rel(cfg, index, hp: dict, log: Callable = print) -> dict:
    """``hp`` with ``delta_rel="auto"`` replaced by :func:`auto_delta_rel` (unchanged otherwise)."""
    if hp.get("delta_rel") == "auto":
        hp = {**hp, "delta_rel": auto_delta_rel(cfg, index, log)}
    return hp


