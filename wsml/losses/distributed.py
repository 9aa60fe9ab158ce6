"""Global-batch helpers for LL selection under DDP: gather every rank's rows (unequal sizes padded).

Each rank contributes its ``[B_r, C]`` selection keys (and row ids); after ``gather_batch`` (through
``wsml.distributed.all_gather_rows``, the one variable-size gather) every rank holds the
same concatenation over ranks in rank order, so a deterministic selection on it gives the same answer on
all ranks, identical to one process running on the concatenated batch.
"""

from __future__ import annotations

from typing import Optional

import torch.distributed as dist
from torch import Tensor

from wsml.distributed import all_gather_rows


def world_size() -> int:
    """Number of processes of the default group (1 when torch.distributed is not initialized)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def gather_batch(
    logits: Tensor, targets: Tensor, index: Optional[Tensor]
) -> tuple[Tensor, Tensor, Optional[Tensor], int]:
    """Gather logits [B_r, C], targets [B_r, C] and row ids [B_r] (optional) over ranks, in rank order.

    Returns (global logits [G, C], global targets [G, C], global row ids [G] or None, this rank's row offset).
    The selection then runs on exactly the tensors one process would see for the concatenated batch.
    """
    gz, sizes = all_gather_rows(logits.contiguous(), 0.0)
    gt, _ = all_gather_rows(targets.contiguous(), 1.0, sizes)
    gindex = None
    if index is not None:
        gindex, _ = all_gather_rows(index.long(), -1, sizes)
    return gz, gt, gindex, sum(sizes[: dist.get_rank()])
