"""Binary cross-entropy baselines: Full, Naive AN, Naive IU, WAN and LSAN (Cole et al. 2021 / DESIGN §2).

All use the numerically stable BCE on logits and return the mean over all B·C entries (entries that do not
contribute still count in the denominator).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from wsml.losses._checks import check_number
from wsml.losses.base import PartialLoss
from wsml.losses.registry import register_loss


def an_targets(targets: Tensor, dtype: torch.dtype) -> Tensor:
    """Assume-negative targets: 1.0 for POS, 0.0 for UNOBS and NEG."""
    return torch.relu(targets).to(dtype)


@register_loss("full", aliases=("bce",))
class FullBCE(PartialLoss):
    """BCE against fully observed targets (POS / NEG only); any UNOBS entry is an error."""

    allow_unobserved = False

    def compute(self, logits: Tensor, targets: Tensor, index: Optional[Tensor]) -> Tensor:
        return F.binary_cross_entropy_with_logits(logits, an_targets(targets, logits.dtype))


@register_loss("an", aliases=("naive-an", "assume-negative"))
class AssumeNegative(PartialLoss):
    """Naive AN: BCE with every UNOBS label taken as negative."""

    def compute(self, logits: Tensor, targets: Tensor, index: Optional[Tensor]) -> Tensor:
        return F.binary_cross_entropy_with_logits(logits, an_targets(targets, logits.dtype))


@register_loss("iu", aliases=("naive-iu", "ignore-unobserved"))
class IgnoreUnobserved(PartialLoss):
    """Naive IU: BCE on observed entries only; UNOBS entries contribute 0."""

    def compute(self, logits: Tensor, targets: Tensor, index: Optional[Tensor]) -> Tensor:
        weight = targets.abs().to(logits.dtype)
        return F.binary_cross_entropy_with_logits(logits, an_targets(targets, logits.dtype), weight=weight)


@register_loss("wan")
class WeakAssumeNegative(PartialLoss):
    """WAN: like AN, but each UNOBS term is divided by (C − 1)."""

    def compute(self, logits: Tensor, targets: Tensor, index: Optional[Tensor]) -> Tensor:
        num_classes = logits.shape[1]
        scale = 1.0 / (num_classes - 1) if num_classes > 1 else 1.0
        weight = torch.ones_like(logits).masked_fill_(targets == 0, scale)
        return F.binary_cross_entropy_with_logits(logits, an_targets(targets, logits.dtype), weight=weight)


@register_loss("lsan", aliases=("an-ls",))
class LabelSmoothingAN(PartialLoss):
    """LSAN: AN with label smoothing ε = ``ls_coef``: target 1 − ε for POS, ε for UNOBS and NEG."""

    def __init__(self, *, ls_coef: float = 0.1) -> None:
        super().__init__()
        self.ls_coef = check_number("ls_coef", ls_coef, 0, 0.5, hi_open=True)

    def compute(self, logits: Tensor, targets: Tensor, index: Optional[Tensor]) -> Tensor:
        eps = self.ls_coef
        soft = an_targets(targets, logits.dtype).mul_(1.0 - 2.0 * eps).add_(eps)
        return F.binary_cross_entropy_with_logits(logits, soft)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, ls_coef={self.ls_coef}"
