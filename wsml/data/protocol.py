"""The reference protocol (Cole et al. 2021, used by the paper) that turns official splits into wsml splits.

Observed labels are drawn once on the whole official training set with ``observe_labels(seed)``; then
20 % of the official training set becomes val (``split_train_val(seed)``); the official val/test set is
the test split. Val and test keep clean full labels; train keeps both (full labels only for analysis).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Optional

import numpy as np

from wsml.data.index import DatasetIndex, Split
from wsml.labels import SparseLabels, observe_labels, split_train_val, subsample


def reference_splits(
    name: str,
    class_names: list[str],
    official_train: Split,
    official_test: Split,
    *,
    root: str = "",
    kind: str = "images",
    num_pos: int = 1,
    num_neg: int = 0,
    seed: int = 1200,
    val_frac: float = 0.2,
    train_frac: float = 1.0,
    train_frac_seed: int = 1200,
    meta: Optional[dict] = None,
) -> DatasetIndex:
    """Build train/val/test from official train/test splits that carry full labels.

    ``official_train.observed`` is used as is when given (real partial labels, e.g. a user's file);
    otherwise it is drawn from the full labels with ``observe_labels(num_pos, num_neg, seed)``.
    ``train_frac`` < 1 keeps a random fraction of the training rows (the paper's Fig 6).
    """
    train = official_train
    if train.observed is None:
        if train.full is None:
            raise ValueError(f"{name}: the official training split has neither full nor observed labels")
        train = replace(train, observed=observe_labels(train.full, num_pos=num_pos, num_neg=num_neg, seed=seed))
    tr_idx, va_idx = split_train_val(len(train), val_frac=val_frac, seed=seed)
    tr_idx = subsample(tr_idx, train_frac, train_frac_seed)
    val = train.take(va_idx)
    if val.full is not None:
        val.observed = None  # val is evaluated on clean full labels
    protocol = {"num_pos": num_pos, "num_neg": num_neg, "seed": seed, "val_frac": val_frac,
                "train_frac": train_frac, "train_frac_seed": train_frac_seed,
                "train_rows": int(len(tr_idx)), "official_train_rows": int(len(train))}
    index = DatasetIndex(name, list(class_names), {"train": train.take(tr_idx), "val": val, "test": official_test},
                         root=root, kind=kind, meta={"protocol": protocol, **(meta or {})})
    index.meta["stats"] = label_statistics(index)
    return index


def label_statistics(index: DatasetIndex) -> dict:
    """Per split: rows, mean positives per row (full labels), observed positives/negatives per row."""
    stats = {}
    for name, s in index.splits.items():
        st = {"rows": len(s)}
        if isinstance(s.full, SparseLabels) and len(s):  # positives only
            st["mean_positives"] = float(len(s.full.values) / len(s))
            st["class_frequency"] = np.round(s.full.known_per_class() / len(s), 4).tolist()
        elif s.full is not None and len(s):
            st["mean_positives"] = float(s.full.sum(1).mean())
            st["class_frequency"] = np.round(s.full.mean(0), 4).tolist()
        if s.observed is not None and len(s):
            obs = getattr(s.observed, "values", s.observed)  # SparseLabels: its stored entries
            st["observed_pos_per_row"] = float((obs == 1).sum() / len(s))
            st["observed_neg_per_row"] = float((obs == -1).sum() / len(s))
        stats[name] = st
    return stats
