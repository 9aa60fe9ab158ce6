"""Mean BCE on logits with some entries rejected (loss and gradient 0), as one autograd node.

Used by LL-R / LL-Ct / LL-Cp: corrected entries are handled by the caller setting their target to 1, rejected
entries are passed as flat positions. The forward is Σ softplus(z) − Σ y·z minus the k rejected terms;
the backward writes the gradient (σ(z) − y) / (B·C) in three elementwise passes and zeroes the k rejected
positions, instead of autograd's weight multiplications or scatter of a gathered correction. Small batches,
where a Python autograd node costs more than it saves, use ``F.binary_cross_entropy_with_logits`` with a
0/1 weight instead, and calls without rejected entries (Naive AN, LL-Ct) the plain fused BCE; all give the
same values and gradients.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

FUSED_MIN_NUMEL = 1 << 16  # below this the weighted PyTorch BCE is faster (measured on CPU)
_FUSED_DTYPES = (torch.float32, torch.float64)


class RejectedBCE(torch.autograd.Function):
    """``mean_{all B·C} [BCE(z, y) · (entry not rejected)]`` with a hand-written backward.

    Rejected entries must have target 0 (LL-R only rejects UNOBS entries).
    """

    @staticmethod
    def forward(ctx: Any, logits: Tensor, target: Tensor, rejected: Tensor) -> Tensor:
        # Σ BCE = Σ softplus(z) − Σ y·z: one transcendental pass, no log-sigmoid buffer
        total = F.softplus(logits).sum() - torch.dot(logits.reshape(-1), target.reshape(-1))
        if rejected.numel():  # rejected entries are UNOBS (target 0): their BCE is softplus(z)
            total = total - F.softplus(logits.reshape(-1)[rejected]).sum()
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
    """Mean over all B·C entries of BCE(logits, target), with the flat positions ``rejected`` (whose target must
    be 0) counting as 0 in the sum and still in the denominator."""
    if rejected is None or rejected.numel() == 0:
        return F.binary_cross_entropy_with_logits(logits, target)
    if logits.numel() >= FUSED_MIN_NUMEL and logits.dtype in _FUSED_DTYPES and logits.is_contiguous():
        return RejectedBCE.apply(logits, target.contiguous(), rejected)
    weight = torch.ones_like(target)
    weight.view(-1).index_fill_(0, rejected, 0)
    return F.binary_cross_entropy_with_logits(logits, target, weight=weight)
