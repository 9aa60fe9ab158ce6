"""Precision of large-loss modification (paper §4.4, Fig 4) and the log behind the qualitative Fig 3.

LL-R / LL-Ct / LL-Cp modify (reject or correct) the unobserved entries with the largest loss. The paper
measures the *precision of modification*: among the modified entries, the % whose ground truth is
positive (i.e. that were really false negatives). We compare it with the *base rate*: the % of all
unobserved entries that are truly positive — the precision a random choice of unobserved entries gets.

``ModificationCallback`` reads ``loss_fn.last_modified`` — (rows, classes) LongTensors of the entries the
loss modified in its last call, rows being dataset row ids of the batch — after every batch. Per epoch it
logs (into metrics.csv):

* ``mod_count`` / ``mod_true`` / ``mod_precision`` — distinct entries modified in this epoch, how many of
  them are truly positive, and their ratio (the paper's precision for LL-R and LL-Ct);
* ``mod_cum_count`` / ``mod_cum_precision`` — the same over all entries modified in any epoch so far
  (the paper's accumulated precision for LL-Cp);
* ``mod_base_rate`` — truly positive / unobserved entries among the rows seen in the epoch;
* ``mod_oracle_precision`` / ``mod_cum_oracle_precision`` — the precision a perfect ranker would get if it
  modified as many entries as the method did: min(1, #false negatives / #modified). A method's precision
  below 1 is only a ranking error where this reference is 1; above the count of false negatives even a
  perfect ranker must modify true negatives.

It also saves every (epoch, row, class, truth) it saw to ``modifications.npz`` in the run folder.
Precisions are fractions in [0, 1]; NaN when nothing was modified.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np

from wsml._types import PathLike
from wsml.analysis._common import batch_full, batch_rows_positions, run_dir_of, safe_ratio, to_numpy
from wsml.labels import UNOBS

LOG_FILE = "modifications.npz"


def modification_truth(rows: Any, classes: Any, full: Any, index: Optional[Any] = None) -> np.ndarray:
    """Ground truth {0,1} of each modified entry (rows[i], classes[i]).

    ``full`` is the label matrix the rows index into; when ``index`` is given, ``full`` holds the batch
    only and ``index`` the batch's dataset row ids (the rows are looked up in it).
    """
    rows = to_numpy(rows).astype(np.int64).ravel()
    classes = to_numpy(classes).astype(np.int64).ravel()
    full = to_numpy(full)
    if rows.shape != classes.shape:
        raise ValueError(f"modification: {rows.size} rows but {classes.size} classes in last_modified")
    if rows.size == 0:
        return np.zeros(0, dtype=np.uint8)
    if classes.min() < 0 or classes.max() >= full.shape[1]:
        raise ValueError(f"modification: class id {int(classes.max())} out of range for {full.shape[1]} classes")
    pos = rows if index is None else batch_rows_positions(to_numpy(index).astype(np.int64).ravel(), rows,
                                                          "modification")
    if pos.min() < 0 or pos.max() >= full.shape[0]:
        raise ValueError(f"modification: row id {int(pos.max())} out of range for {full.shape[0]} rows")
    return full[pos, classes].astype(np.uint8)


def precision_counts(rows: Any, classes: Any, truth: Any, num_classes: int) -> tuple[int, int]:
    """(distinct modified entries, how many of them are truly positive); duplicates count once."""
    rows = to_numpy(rows).astype(np.int64).ravel()
    keys = rows * int(num_classes) + to_numpy(classes).astype(np.int64).ravel()
    keys, first = np.unique(keys, return_index=True)
    return int(keys.size), int(to_numpy(truth).ravel()[first].sum())


def missing_positive_rate(observed: Any, full: Any) -> tuple[int, int]:
    """(unobserved entries, unobserved entries that are truly positive) — the base rate's counts."""
    obs, fl = to_numpy(observed), to_numpy(full)
    if obs.shape != fl.shape:
        raise ValueError(f"missing_positive_rate: observed {obs.shape} and full {fl.shape} differ in shape")
    unobs = obs == UNOBS
    return int(unobs.sum()), int((unobs & (fl == 1)).sum())


def oracle_precision(n_false_negatives: int, n_selected: int) -> float:
    """Precision of a perfect ranker that modifies ``n_selected`` unobserved entries when ``n_false_negatives``
    of them are truly positive: min(1, #FN / #selected); NaN when nothing is selected."""
    if n_selected <= 0:
        return float("nan")
    return min(1.0, n_false_negatives / n_selected)


class ModificationCallback:
    """Per-epoch precision of the LL methods' modifications vs the base rate; inert for other losses."""

    name = "modification"

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self.run_dir: Optional[Path] = None
        self.epoch = 0
        self.num_classes = 0
        self._epoch_parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._log: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        self._cum_keys = np.zeros(0, dtype=np.int64)
        self._cum_true = np.zeros(0, dtype=np.uint8)
        self._unobs = [0, 0]
        self.active = False

    def on_train_start(self, ctx: Any) -> None:
        self._reset()
        self.run_dir = run_dir_of(ctx)
        done = int(getattr(ctx, "epoch", 0))
        if done > 0 and self.run_dir is not None:
            self._restore(done, getattr(getattr(ctx, "loss_fn", None), "modifies_labels", False))

    def _restore(self, done: int, modifies: bool) -> None:
        """A resume continues the log and the accumulated counts (LL-Cp's Fig 4) of the epochs already trained;
        an LL run whose log is missing refuses the resume rather than restart the counts."""
        log = load_modifications(self.run_dir)
        if log is None:
            if modifies:
                raise ValueError(f"{self.run_dir / LOG_FILE} is missing: the modification callback cannot continue "
                                 f"the accumulated counts after epoch {done}; train the run again or drop the callback")
            return
        keep = log["epoch"] <= done
        self._log = [tuple(log[k][keep] for k in ("epoch", "row", "cls", "truth"))]
        self.num_classes = c = int(log["num_classes"])
        self._cum_keys, ix = np.unique(self._log[0][1] * c + self._log[0][2], return_index=True)
        self._cum_true = self._log[0][3][ix]

    def on_epoch_start(self, ctx: Any, epoch: int) -> None:
        self.epoch = int(epoch)
        self._epoch_parts = []
        self._unobs = [0, 0]

    def on_batch_end(self, ctx: Any, batch: dict, logits: Any, loss_fn: Any = None) -> None:
        mod = getattr(loss_fn, "last_modified", None)
        if mod is None:
            return
        full = batch_full(batch, "modification")
        if full is None:
            return  # no ground truth: precision is unknowable
        self.active = True
        self.num_classes = full.shape[1]
        n_unobs, n_missing = missing_positive_rate(batch["observed"], full)
        self._unobs[0] += n_unobs
        self._unobs[1] += n_missing
        rows, classes = (to_numpy(t).astype(np.int64).ravel() for t in mod)
        if rows.size:
            truth = modification_truth(rows, classes, full, index=batch["index"])
            self._epoch_parts.append((rows, classes, truth))

    def on_epoch_end(self, ctx: Any, epoch: int) -> dict:
        if not self.active:
            return {}
        c = self.num_classes
        if self._epoch_parts:
            rows, classes, truth = (np.concatenate(a) for a in zip(*self._epoch_parts))
        else:
            rows = classes = np.zeros(0, dtype=np.int64)
            truth = np.zeros(0, dtype=np.uint8)
        n, n_true = precision_counts(rows, classes, truth, c)
        keys, first = np.unique(rows * c + classes, return_index=True)
        self._log.append((np.full(keys.size, int(epoch), dtype=np.int32), keys // c, keys % c, truth[first]))
        cum_keys, ix = np.unique(np.concatenate([self._cum_keys, keys]), return_index=True)
        self._cum_true = np.concatenate([self._cum_true, truth[first]])[ix]
        self._cum_keys = cum_keys
        if self.run_dir is not None:
            self.save(self.run_dir / LOG_FILE)
        return {"mod_count": n, "mod_true": n_true, "mod_precision": safe_ratio(n_true, n),
                "mod_cum_count": int(self._cum_keys.size),
                "mod_cum_precision": safe_ratio(int(self._cum_true.sum()), self._cum_keys.size),
                "mod_base_rate": safe_ratio(self._unobs[1], self._unobs[0]),
                "mod_oracle_precision": oracle_precision(self._unobs[1], n),
                "mod_cum_oracle_precision": oracle_precision(self._unobs[1], int(self._cum_keys.size))}

    def save(self, path: PathLike) -> None:
        """Write the modification log: arrays epoch, row, cls, truth (one entry per distinct pair and epoch)."""
        cols = [np.concatenate(a) for a in zip(*self._log)] if self._log else [np.zeros(0, np.int64)] * 4
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, epoch=cols[0].astype(np.int32), row=cols[1].astype(np.int64),
                            cls=cols[2].astype(np.int32), truth=cols[3].astype(np.uint8),
                            num_classes=np.int64(self.num_classes))


def load_modifications(run_dir: PathLike) -> Optional[dict]:
    """The arrays of ``modifications.npz`` in a run folder, or None when it has none."""
    p = Path(run_dir) / LOG_FILE
    if not p.exists():
        return None
    with np.load(p, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def modified_by_row(log: dict, row: int) -> dict[int, list[tuple[int, bool]]]:
    """For one training row: {epoch: [(class, truly positive), ...]} from a modification log."""
    sel = log["row"] == row
    out: dict[int, list[tuple[int, bool]]] = {}
    for e, c, t in zip(log["epoch"][sel], log["cls"][sel], log["truth"][sel]):
        out.setdefault(int(e), []).append((int(c), bool(t)))
    return out
