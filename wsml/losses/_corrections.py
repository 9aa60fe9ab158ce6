"""The permanent labels of LL-Cp (and Curriculum labelling): a set of (dataset row id, class) pairs.

Stored sparsely as sorted int64 keys ``row · C + class`` (OpenImages has millions of rows × 5000 classes, so
no dense N × C matrix). New keys go to a small sorted "recent" array that is merged into the main array when
it grows past 1/8 of it, so adding a batch's selection costs O(k log k) amortised and looking up a batch
costs O(B log M) with two ``searchsorted`` calls per array.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor


class CorrectionStore:
    """Sorted set of (row, class) pairs; ``lookup`` finds those of a batch's rows (the caller sets their targets)."""

    def __init__(self) -> None:
        self.num_classes: Optional[int] = None  # bound by the first ``add`` / ``lookup``
        self._main = torch.empty(0, dtype=torch.long)
        self._recent = torch.empty(0, dtype=torch.long)

    def __len__(self) -> int:
        return self._main.numel() + self._recent.numel()

    def _bind(self, num_classes: int, device: torch.device) -> None:
        if self.num_classes is None:
            self.num_classes = num_classes
        elif self.num_classes != num_classes:
            raise ValueError(f"LL-Cp corrections were recorded for {self.num_classes} classes, batch has {num_classes}")
        if self._main.device != device:
            self._main, self._recent = self._main.to(device), self._recent.to(device)

    def keys(self) -> Tensor:
        """All keys ``row · C + class``, sorted."""
        if self._recent.numel():
            self._main = torch.sort(torch.cat([self._main, self._recent])).values
            self._recent = self._recent[:0]
        return self._main

    def add(self, rows: Tensor, classes: Tensor, num_classes: int) -> None:
        """Record the pairs (rows[i], classes[i]); duplicates are ignored."""
        if rows.numel() == 0:
            return
        self._bind(num_classes, rows.device)
        new = torch.unique(rows.long() * num_classes + classes.long())
        for arr in (self._main, self._recent):
            if arr.numel():
                pos = torch.searchsorted(arr, new).clamp_(max=arr.numel() - 1)
                new = new[arr[pos] != new]
        self._recent = torch.sort(torch.cat([self._recent, new])).values
        if self._recent.numel() > max(4096, self._main.numel() // 8):
            self.keys()

    def lookup(self, index: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
        """(batch positions, classes) of the recorded pairs whose row is in ``index`` (rows may repeat)."""
        self._bind(num_classes, index.device)
        index = index.long()
        found_b, found_c = [], []
        for arr in (self._main, self._recent):
            if arr.numel() == 0:
                continue
            lo = torch.searchsorted(arr, index * num_classes)
            hi = torch.searchsorted(arr, index * num_classes + num_classes)
            counts = hi - lo
            total = int(counts.sum())
            if total == 0:
                continue
            batch_pos = torch.repeat_interleave(torch.arange(index.numel(), device=index.device), counts)
            starts = torch.repeat_interleave(lo - (torch.cumsum(counts, 0) - counts), counts)
            flat = starts + torch.arange(total, device=index.device)
            found_b.append(batch_pos)
            found_c.append(arr[flat] % num_classes)
        if not found_b:
            empty = torch.empty(0, dtype=torch.long, device=index.device)
            return empty, empty
        return torch.cat(found_b), torch.cat(found_c)

    def pairs(self) -> tuple[Tensor, Tensor]:
        """(rows, classes) of all recorded corrections, sorted by row then class."""
        keys = self.keys()
        c = self.num_classes or 1
        return keys // c, keys % c

    def state(self) -> dict[str, Any]:
        return {"keys": self.keys().cpu(), "num_classes": self.num_classes}

    def load(self, state: dict[str, Any]) -> None:
        keys = torch.as_tensor(state["keys"], dtype=torch.long)
        if keys.numel() > 1 and bool((keys[1:] <= keys[:-1]).any()):
            keys = torch.unique(keys)
        self.num_classes = state.get("num_classes")
        self._main, self._recent = keys, keys[:0]
