"""LL-R, LL-Ct and LL-Cp written to be read (Kim et al., CVPR 2022, Eq. 3-7): the specification that the fast
path in ``large_loss`` must match, the oracle of its tests (called on float64 tensors) and the straightforward
baseline of ``benchmarks/bench_losses.py``. One batch in one process: no input checks, no DDP, and LL-Cp's memory
is the caller's label matrix, as in the paper's code (remembered entries are written into the targets as POS).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor


def num_modified(epoch: int, delta_rel: float, numel: int, permanent: bool = False) -> int:
    """k = ceil(rate · B·C) with rate = min(1, (t − 1) · Δrel / 100), LL-Cp's rate Δrel / 100; 0 in epoch 1."""
    if epoch < 2:
        return 0
    x = min(1.0, (delta_rel if permanent else (epoch - 1) * delta_rel) / 100.0) * numel
    return math.ceil(x - 1e-9 * max(1.0, x))  # 0.016 · 1250 = 20.000000000000004 is k = 20


def largest_unobserved(logits: Tensor, targets: Tensor, k: int) -> Tensor:
    """Flat positions of the k largest Naive-AN losses softplus(z) among the UNOBS entries (fewer if fewer are
    UNOBS)."""
    unobs_loss = torch.where(targets == 0, F.softplus(logits.detach()), -math.inf)  # observed: never modified
    values, sel = torch.topk(unobs_loss.flatten(), min(k, logits.numel()))
    return sel[values > -math.inf]


def select(logits: Tensor, targets: Tensor, epoch: int, permanent: bool = False, delta_rel: float = 0.2,
           r0: Optional[float] = None, delta_abs: Optional[float] = None) -> tuple[Tensor, Tensor]:
    """(entries modified this batch, entries LL-Cp remembers), flat positions; ``r0`` given: absolute schedule,
    the UNOBS losses above R(t) = r0 − t · delta_abs. LL-Cp remembers the losses strictly above the k-th largest
    (Eq. 7, "l > R(t)"), so k − 1 without ties, or every selected entry when fewer than k are UNOBS."""
    if r0 is not None:
        threshold = r0 - epoch * delta_abs if epoch >= 2 else math.inf
        sel = torch.nonzero(((targets == 0) & (F.softplus(logits.detach()) > threshold)).flatten()).flatten()
        return sel, sel
    k = num_modified(epoch, delta_rel, logits.numel(), permanent)
    sel = largest_unobserved(logits, targets, k)
    if sel.numel() < k or k == 0:
        return sel, sel
    z = logits.detach().flatten()[sel]  # the AN loss softplus(z) increases with z
    return sel, sel[z > z.min()]


def per_entry(logits: Tensor, targets: Tensor, sel: Tensor, correct: bool) -> Tensor:
    """[B, C] Naive-AN losses with the ``sel`` entries set to 0 (LL-R) or to the BCE against 1 (LL-Ct, LL-Cp)."""
    loss = F.binary_cross_entropy_with_logits(logits, (targets == 1).to(logits.dtype), reduction="none")
    modified = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none") if correct \
        else torch.zeros_like(loss)
    mask = torch.zeros(logits.numel(), dtype=torch.bool, device=logits.device)
    mask[sel] = True
    return torch.where(mask.view_as(loss), modified, loss)


def large_loss(logits: Tensor, targets: Tensor, epoch: int, method: str = "ll-r", delta_rel: float = 0.2,
               r0: Optional[float] = None, delta_abs: Optional[float] = None) -> tuple[Tensor, Tensor, Tensor]:
    """(mean loss over all B·C entries, entries modified, entries LL-Cp remembers) of one batch;
    ``method`` is "ll-r", "ll-ct" or "ll-cp"."""
    sel, remember = select(logits, targets, epoch, method == "ll-cp", delta_rel, r0, delta_abs)
    return per_entry(logits, targets, sel, method != "ll-r").mean(), sel, remember
