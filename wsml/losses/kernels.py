"""Mean BCE on logits with some entries rejected (loss and gradient 0), as one autograd node.

Used by LL-R / LL-Ct / LL-Cp: corrected entries are handled by the caller setting their target to 1, rejected
entries are passed as flat positions. The forward is PyTorch's fused BCE sum minus the k rejected terms;
the backward writes the gradient (σ(z) − y) / (B·C) in three elementwise passes and zeroes the k rejected
positions, instead of autograd's weight multiplications or scatter of a gathered correction. Small batches,
where a Python autograd node costs more than it saves, use ``F.binary_cross_entropy_with_logits`` with a
0/1 weight instead; both give the same values and gradients.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

FUSED_MIN_NUMEL = 1 << 14  # below this the plain PyTorch path is faster


class RejectedBCE(torch.autograd.Function):
    """``mean_{all B·C} [BCE(z, y) · (entry not rejected)]`` with a hand-written backward."""

    @staticmethod
    def forward(ctx: Any, logits: Tensor, target: Tensor, rejected: Tensor) -> Tensor:
        total = F.binary_cross_entropy_with_logits(logits, target, reduction="sum")
        if rejected.numel():
            z, y = logits.reshape(-1)[rejected], target.reshape(-1)[rejected]
            total = total - F.binary_cross_entropy_with_logits(z, y, reduction="sum")
        ctx.save_for_backward(logits, target, rejected)
        return total / logits.numel()

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Optional[Tensor], None, None]:
        logits, target, rejected = ctx.saved_tensors
        grad = torch.sigmoid(logits)
        grad.sub_(target).mul_(grad_out / logits.numel())
        if rejected.numel():
            grad.view(-1)[rejected] = 0
        return grad, None, None


def rejected_bce(logits: Tensor, target: Tensor, rejected: Optional[Tensor] = None) -> Tensor:
    """Mean over all B·C entries of BCE(logits, target), with the flat positions ``rejected`` counting as 0."""
    if rejected is None:
        rejected = torch.empty(0, dtype=torch.long, device=logits.device)
    fused_ok = logits.dtype in (torch.float32, torch.float64) and logits.is_contiguous() and target.is_contiguous()
    if fused_ok and logits.numel() >= FUSED_MIN_NUMEL:
        return RejectedBCE.apply(logits, target, rejected)
    if rejected.numel() == 0:
        return F.binary_cross_entropy_with_logits(logits, target)
    weight = torch.ones_like(target)
    weight.view(-1)[rejected] = 0
    return F.binary_cross_entropy_with_logits(logits, target, weight=weight)
