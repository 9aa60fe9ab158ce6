"""EPR (expected positive regularisation, Cole et al. 2021): positives' −log σ plus a count regulariser."""

from __future__ import annotations

from typing import Optional

import torch.nn.functional as F
from torch import Tensor

from wsml.losses._checks import check_number
from wsml.losses.base import PartialLoss
from wsml.losses.registry import register_loss


def expected_positive_regularizer(probs: Tensor, expected_num_pos: float) -> Tensor:
    """``(mean_b Σ_c p_bc − k)² / C²``: keeps the predicted number of positives per image near k."""
    num_classes = probs.shape[1]
    return (probs.sum(1).mean() - expected_num_pos).pow(2) / float(num_classes**2)


def check_expected_num_pos(value: float) -> float:
    """The expected number of positives per image k (EPR, ROLE) as a float; ValueError unless it is > 0."""
    return check_number("expected_num_pos", value, 0, lo_open=True, hint=" (VOC 1.5, COCO 2.9, NUS 1.9, CUB 31.4)")


@register_loss("epr")
class ExpectedPositiveRegularized(PartialLoss):
    """EPR: −log σ(z) on POS entries (mean over B·C) + ``expected_positive_regularizer(σ(z), k)``."""

    example_hparams = {"expected_num_pos": 1.5}

    def __init__(self, *, expected_num_pos: float) -> None:
        super().__init__()
        self.expected_num_pos = check_expected_num_pos(expected_num_pos)

    def compute(self, logits: Tensor, targets: Tensor, index: Optional[Tensor]) -> Tensor:
        pos = (targets == 1).to(logits.dtype)
        # −log σ(z) = softplus(−z), the stable form
        observed = (F.softplus(-logits) * pos).sum() / logits.numel()
        return observed + expected_positive_regularizer(logits.sigmoid(), self.expected_num_pos)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, expected_num_pos={self.expected_num_pos}"
