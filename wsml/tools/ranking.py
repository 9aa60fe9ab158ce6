"""Streaming ranking of unobserved (image, class) pairs for ``wsml find-missing``: a chunk of rows at a time.

Each chunk contributes its candidates (UNOBS entries with a finite score; without ``k`` only the flagged ones),
cut to its own best ``k`` (every pair tied with the k-th score kept); the running lists are merged and cut again,
and under torchrun the processes' lists are merged the same way (duplicate pairs of padded shards dropped). The
order is score descending, then training row id, then class id — a total order, so the streamed top ``k`` is
exactly the first ``k`` pairs of the dense ranking. Memory: one chunk plus O(k) (or O(flagged pairs)).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Optional

import numpy as np

from wsml.labels import UNOBS

RANK_BY = ("auto", "model", "oof", "mean")  # find-missing's --rank-by (here: the parser needs it without torch)

SOURCES = ("model", "oof", "ll-cp")  # flag bits 1, 2, 4, in this order in the ``sources`` column


@dataclass
class Ranked:
    """Pairs with their ranking score, the model's and OOF score (nan when absent) and flag bits."""

    rows: np.ndarray
    classes: np.ndarray
    score: np.ndarray
    model: np.ndarray
    oof: np.ndarray
    flags: np.ndarray

    def __len__(self) -> int:
        return len(self.rows)

    def take(self, idx: np.ndarray) -> Ranked:
        return Ranked(*(getattr(self, f.name)[idx] for f in fields(self)))

    @staticmethod
    def concat(parts: list[Ranked]) -> Ranked:
        return Ranked(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(Ranked)))

    def sources(self) -> list[str]:
        """The ``sources`` text of each pair: the flagging sources ``;``-separated."""
        return [";".join(name for bit, name in enumerate(SOURCES) if f >> bit & 1) for f in self.flags]


def best(r: Ranked, k: Optional[int]) -> Ranked:
    """``r`` sorted by (score desc, row, class), each pair once, cut to the first ``k`` (all when None)."""
    order = np.lexsort((r.classes, r.rows, -r.score))
    r = r.take(order)
    if len(r) > 1:
        same = (r.rows[1:] == r.rows[:-1]) & (r.classes[1:] == r.classes[:-1])  # a padded shard's duplicate
        if same.any():
            r = r.take(np.flatnonzero(np.concatenate(([True], ~same))))
    return r if k is None else r.take(slice(0, k))


def rank_chunk(rows: np.ndarray, observed: np.ndarray, thresholds: np.ndarray, score: np.ndarray,
               model: Optional[np.ndarray], oof: Optional[np.ndarray], oof_thresholds: Optional[np.ndarray],
               corrected: Optional[np.ndarray], k: Optional[int], floor: Optional[float] = None) -> Ranked:
    """The candidates of one chunk of rows (observed, score, model, oof, corrected: [n, C]), cut to its best k;
    ``floor``: the k-th best score so far (:attr:`TopPairs.floor`), below which no pair can enter the top k."""
    flags = np.zeros(observed.shape, np.uint8)
    if model is not None:
        flags |= (model >= thresholds).astype(np.uint8)
    if oof is not None:
        flags |= (oof >= (thresholds if oof_thresholds is None else oof_thresholds)).astype(np.uint8) << 1
    if corrected is not None:
        flags |= np.asarray(corrected, dtype=np.uint8) << 2
    candidate = (observed == UNOBS) & np.isfinite(score)
    if k is None:
        candidate &= flags != 0
    if floor is not None:
        candidate &= score >= floor
    if k is not None and np.count_nonzero(candidate) > k:  # keep what scores at least the chunk's k-th best
        values = score[candidate]
        candidate &= score >= np.partition(values, len(values) - k)[len(values) - k]
    r, c = np.nonzero(candidate)
    s = score[r, c]
    nan = np.full(len(r), np.nan)
    return Ranked(np.asarray(rows, dtype=np.int64)[r], c.astype(np.int64), s,
                  nan if model is None else model[r, c], nan if oof is None else oof[r, c], flags[r, c])


class TopPairs:
    """The running best ``k`` pairs (every pair when ``k`` is None) over the chunks added; ``floor`` is the k-th
    best score once k pairs are in (None before), for :func:`rank_chunk` to skip what cannot enter."""

    def __init__(self, k: Optional[int]):
        self.k, self.parts, self.size, self.floor = k, [], 0, None

    def add(self, r: Ranked) -> None:
        self.parts.append(r)
        self.size += len(r)
        if self.k is not None and self.size > 2 * self.k:
            self.parts = [best(Ranked.concat(self.parts), self.k)]
            self.size = len(self.parts[0])
            self.floor = self.parts[0].score[-1] if self.size == self.k else None

    def result(self) -> Ranked:
        if not self.parts:
            return Ranked(*(np.empty(0, t) for t in (np.int64, np.int64, np.float64, float, float, np.uint8)))
        return best(Ranked.concat(self.parts), self.k)


def merge_ranks(local: Ranked, k: Optional[int]) -> Ranked:
    """Every torchrun process's best pairs merged (the same on every rank); ``local`` when not distributed.
    Only these O(k) lists travel (:func:`wsml.distributed.all_gather_rows`), never the scores."""
    import torch
    import torch.distributed as dist

    from wsml.distributed import all_gather_rows

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return local
    sizes, parts = None, []
    for f, kind in zip(fields(Ranked), (np.int64, np.int64, np.float64, np.float64, np.float64, np.int64)):
        column = torch.from_numpy(np.ascontiguousarray(getattr(local, f.name), dtype=kind))
        gathered, sizes = all_gather_rows(column, sizes=sizes)  # one dtype on every rank (float32 scores exact)
        parts.append(gathered.numpy())
    parts[-1] = parts[-1].astype(np.uint8)
    return best(Ranked(*parts), k)
