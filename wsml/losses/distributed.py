"""Global-batch helpers for LL selection under DDP: gather every rank's rows (unequal sizes padded).

Each rank contributes its ``[B_r, C]`` selection keys (and row ids); after ``gather_rows`` every rank holds the
same concatenation over ranks in rank order, so a deterministic selection on it gives the same answer on
all ranks, identical to one process running on the concatenated batch.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.distributed as dist
from torch import Tensor


def world_size() -> int:
    """Number of processes of the default group (1 when torch.distributed is not initialized)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def gather_rows(x: Tensor, pad_value: float, sizes: Optional[list[int]] = None) -> tuple[Tensor, list[int]]:
    """All-gather ``x`` [B_r, ...] from every rank into [Σ B_r, ...]; returns it and the per-rank row counts."""
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


def gather_batch(
    logits: Tensor, targets: Tensor, index: Optional[Tensor]
) -> tuple[Tensor, Tensor, Optional[Tensor], int]:
    """Gather logits [B_r, C], targets [B_r, C] and row ids [B_r] (optional) over ranks, in rank order.

    Returns (global logits [G, C], global targets [G, C], global row ids [G] or None, this rank's row offset).
    The selection then runs on exactly the tensors one process would see for the concatenated batch.
    """
    gz, sizes = gather_rows(logits.contiguous(), 0.0)
    gt, _ = gather_rows(targets.contiguous(), 1.0, sizes)
    gindex = None
    if index is not None:
        gindex, _ = gather_rows(index.long(), -1, sizes)
    return gz, gt, gindex, sum(sizes[: dist.get_rank()])
