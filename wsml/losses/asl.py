"""ASL, the asymmetric loss (Ridnik, Ben-Baruch et al., ICCV 2021, "Asymmetric Loss For Multi-Label Classification").

Positives and negatives get different focusing exponents, and negatives a probability shift (hard threshold)
that discards very easy negatives and down-weights very hard ones (possible missing labels). With p = σ(z):

    L+ = −(1 − p)^γ+ · log p                         (POS)
    L− = −p_m^γ− · log(1 − p_m),  p_m = max(p − m, 0)   (UNOBS and NEG: "AN + ASL" in single-positive use)

Defaults are the paper's: γ+ = 0, γ− = 4, m = 0.05. The loss is the mean over all B·C entries. The focusing
weights are differentiated like the rest of the formula (the paper's definition); log p is computed as
logsigmoid(z) and log(1 − p_m) as log(min(σ(−z) + m, 1)), so no clamping epsilon is needed.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from wsml.losses.base import PartialLoss
from wsml.losses.checks import check_number
from wsml.losses.registry import register_loss


def safe_pow(x: Tensor, exponent: float) -> Tensor:
    """x ** exponent for x >= 0 with a finite gradient (0) at x = 0 also when 0 < exponent < 1."""
    if exponent == 0:
        return torch.ones_like(x)
    if exponent >= 1:
        return x.pow(exponent)
    pos = x > 0
    return torch.where(pos, torch.where(pos, x, torch.ones_like(x)).pow(exponent), torch.zeros_like(x))


def asl_negative(logits: Tensor, gamma_neg: float, clip: float) -> Tensor:
    """Per-entry ASL negative term −p_m^γ− · log(1 − p_m), p_m = max(σ(z) − m, 0)."""
    if clip > 0:
        one_minus_pm = (torch.sigmoid(-logits) + clip).clamp(max=1.0)
        log_term = torch.log(one_minus_pm)
        pm = 1.0 - one_minus_pm
    else:
        log_term = F.logsigmoid(-logits)
        pm = torch.sigmoid(logits)
    if gamma_neg == 0:
        return -log_term
    return -safe_pow(pm, gamma_neg) * log_term


def asl_positive(logits: Tensor, gamma_pos: float) -> Tensor:
    """Per-entry ASL positive term −(1 − p)^γ+ · log p."""
    nll = -F.logsigmoid(logits)
    if gamma_pos == 0:
        return nll
    return safe_pow(torch.sigmoid(-logits), gamma_pos) * nll


@register_loss("asl", aliases=("asymmetric", "asymmetric-loss"))
class AsymmetricLoss(PartialLoss):
    """ASL with UNOBS and NEG entries as negatives; hyper-parameters ``gamma_pos``, ``gamma_neg``, ``clip`` (m)."""

    def __init__(self, *, gamma_pos: float = 0.0, gamma_neg: float = 4.0, clip: float = 0.05) -> None:
        super().__init__()
        self.gamma_pos = check_number("gamma_pos", gamma_pos, 0.0)
        self.gamma_neg = check_number("gamma_neg", gamma_neg, 0.0)
        self.clip = check_number("clip", clip, 0.0, 1.0, hi_open=True)

    def compute(self, logits: Tensor, targets: Tensor, index: Optional[Tensor]) -> Tensor:
        pos = targets == 1
        loss = torch.where(pos, asl_positive(logits, self.gamma_pos), asl_negative(logits, self.gamma_neg, self.clip))
        return loss.mean()

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, gamma_pos={self.gamma_pos}, gamma_neg={self.gamma_neg}, clip={self.clip}"
