"""torchrun / DDP helpers: process-group setup, rank checks, the variable-size gather and gradient averaging.

``wsml train`` is the same command in one process and under ``torchrun --nproc-per-node N``: when the
``WORLD_SIZE`` environment variable says N > 1, :func:`init_distributed` joins the process group (gloo on
CPU, nccl on GPU). The configured ``batch_size`` is the *global* batch; each process loads
``batch_size / N`` samples, so that the LL losses, which gather the batch before selecting large losses,
see exactly the batch a single process would.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass
from typing import Any, Iterable, Optional

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    """This process's place in the job (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str = ""

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the torchrun process group when ``WORLD_SIZE`` > 1; a no-op for a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device != "cpu" and torch.cuda.is_available()
    backend = "nccl" if use_cuda else "gloo"
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, backend=backend)


def _active() -> bool:
    """Whether this process is in a process group (joined by :func:`init_distributed`)."""
    return dist.is_available() and dist.is_initialized()


def cleanup() -> None:
    """Leave the process group (safe to call when none was joined).

    Garbage from the run (a DDP model in a reference cycle) is collected first: left to the interpreter's
    exit, its last reference to the gloo group would be dropped during finalization, where gloo's worker
    threads can abort the process ("terminate called without an active exception", seen once under load).
    """
    if _active():
        gc.collect()
        dist.destroy_process_group()


def barrier() -> None:
    if _active():
        dist.barrier()


def all_gather_rows(x: torch.Tensor, pad_value: float = 0, sizes: Optional[list[int]] = None
                    ) -> tuple[torch.Tensor, list[int]]:
    """Every rank's ``x`` [B_r, ...] concatenated in rank order into [Σ B_r, ...], and the row counts B_r.

    The one variable-size all-gather of wsml (the LL losses' global batch, the val/test scores): ranks may hold
    different numbers of rows, zero too (then the trailing shape is taken from the other ranks); the rows are
    padded with ``pad_value`` to the largest count for the collective and cut back after. ``sizes``: the counts
    when already known (a second tensor of the same rows). One process: ``(x, [len(x)])``.
    """
    if not _active():
        return x, [int(x.shape[0])]
    world = dist.get_world_size()
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else x.device
    t = x.to(device)
    if sizes is None:
        shape = torch.tensor(list(t.shape), dtype=torch.long, device=device)
        shapes = [torch.empty_like(shape) for _ in range(world)]
        dist.all_gather(shapes, shape)
        sizes = [int(s[0]) for s in shapes]
        if t.shape[0] == 0:  # nothing here: take the trailing shape of a rank that has rows
            t = t.new_empty((0, *max((tuple(s[1:].tolist()) for s in shapes), key=lambda s: sum(s))))
    rows = max(sizes)
    if t.shape[0] < rows:
        t = torch.cat([t, t.new_full((rows - t.shape[0], *t.shape[1:]), pad_value)])
    parts = [torch.empty_like(t) for _ in range(world)]
    dist.all_gather(parts, t.contiguous())
    return torch.cat([p[:n] for p, n in zip(parts, sizes)]).to(x.device), sizes


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank."""
    if not _active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_reduce_mean(value: float, device: torch.device) -> float:
    """The mean of a scalar over ranks."""
    if not _active():
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item()) / dist.get_world_size()


def all_reduce_sum(value: int, device: torch.device) -> int:
    """The sum of an integer over ranks."""
    if not _active():
        return int(value)
    t = torch.tensor([int(value)], dtype=torch.int64, device=device)
    dist.all_reduce(t)
    return int(t.item())


def average_gradients(params: Iterable[torch.nn.Parameter]) -> None:
    """All-reduce the gradients of parameters that DDP does not own (e.g. ROLE's label estimates).

    Each process's loss is the mean over its share of the global batch, so the average of the ranks'
    gradients is the gradient of the global-batch loss, and every rank then makes the same update.
    """
    if not _active():
        return
    world = dist.get_world_size()
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)  # every rank must take part in the same collectives
        dist.all_reduce(p.grad)
        p.grad.div_(world)
