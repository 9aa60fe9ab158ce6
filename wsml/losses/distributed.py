"""Global-batch helpers for LL selection under DDP: gather every rank's rows (unequal sizes padded).

Each rank contributes its ``[B_r, C]`` selection keys (and row ids); after ``gather_rows`` every rank holds the
same concatenation over ranks in rank order, so a deterministic selection on it gives the same answer on
all ranks, identical to one process running on the concatenated batch.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor


def world_size() -> int:
    """Number of processes of the default group (1 when torch.distributed is not initialized)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def gather_rows(x: Tensor, pad_value: float, sizes: Optional[list[int]] = None) -> tuple[Tensor, list[int]]:
    """All-gather ``x`` [B_r, ...] from every rank into [Σ B_r, ...]; returns it and the per-rank row counts."""
    import torch.distributed as dist

    ws = dist.get_world_size()
    if sizes is None:
        size = torch.tensor([x.shape[0]], dtype=torch.long, device=x.device)
        sizes_t = [torch.empty_like(size) for _ in range(ws)]
        dist.all_gather(sizes_t, size)
        sizes = [int(s) for s in sizes_t]
    max_rows = max(sizes)
    if x.shape[0] < max_rows:
        pad = x.new_full((max_rows - x.shape[0], *x.shape[1:]), pad_value)
        x = torch.cat([x, pad])
    parts = [torch.empty_like(x) for _ in range(ws)]
    dist.all_gather(parts, x.contiguous())
    return torch.cat([p[:s] for p, s in zip(parts, sizes)]), sizes


def gather_batch(keys: Tensor, index: Optional[Tensor]) -> tuple[Tensor, Optional[Tensor], int]:
    """Gather selection keys [B_r, C] (−inf = not eligible) and row ids [B_r] over ranks.

    Returns (global keys [G, C], global row ids [G] or None, this rank's row offset in the global batch).
    """
    import torch.distributed as dist

    gkeys, sizes = gather_rows(keys.contiguous(), float("-inf"))
    gindex = None
    if index is not None:
        gindex, _ = gather_rows(index.long(), -1, sizes)
    return gkeys, gindex, sum(sizes[: dist.get_rank()])
