"""Small helpers shared by the analysis callbacks: tensors to numpy, the run folder of a training context."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch


def to_numpy(x: Any) -> np.ndarray:
    """A tensor (any device) or array-like as a numpy array."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def run_dir_of(ctx: Any) -> Optional[Path]:
    """The run folder of an engine context (attribute or key ``run_dir``), if any.

    None on ranks other than 0 under torchrun: only rank 0 writes files (each rank measures its own share
    of the batches; the engine logs rank 0's numbers)."""
    rank = ctx.get("rank", 0) if isinstance(ctx, dict) else getattr(ctx, "rank", 0)
    if rank:
        return None
    value = ctx.get("run_dir") if isinstance(ctx, dict) else getattr(ctx, "run_dir", None)
    return Path(value) if value else None


def batch_full(batch: dict, what: str) -> Optional[np.ndarray]:
    """The batch's full labels {0,1} [B, C] as uint8, or None when the data set has none."""
    full = batch.get("full")
    if full is None:
        return None
    full = to_numpy(full)
    if full.ndim != 2:
        raise ValueError(f"{what}: batch['full'] must be [B, C], got shape {full.shape}")
    return full.astype(np.uint8, copy=False)


def batch_rows_positions(index: np.ndarray, rows: np.ndarray, what: str) -> np.ndarray:
    """Positions in the batch of the dataset row ids ``rows`` (each must be one of the batch's ``index``)."""
    order = np.argsort(index, kind="stable")
    sorted_index = index[order]
    pos = np.searchsorted(sorted_index, rows)
    pos = np.clip(pos, 0, len(index) - 1)
    bad = sorted_index[pos] != rows
    if bad.any():
        raise ValueError(f"{what}: modified row id {int(rows[bad][0])} is not in the batch's index "
                         f"{index[:8].tolist()}{'…' if len(index) > 8 else ''}")
    return order[pos]


def safe_ratio(num: float, den: float) -> float:
    """num / den, NaN when den is 0 (an undefined rate, written as 'nan' in metrics.csv)."""
    return float(num) / float(den) if den else float("nan")
