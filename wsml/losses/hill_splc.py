"""Hill and SPLC (Zhang et al. 2021, "Simple and Robust Loss Design for Multi-Label Learning with Missing Labels").

Both use the *focal margin* loss on positives, with p = σ(z) and p_m = σ(z − m):

    L+ = −(1 − p_m)^γ · log p_m                       (m = ``margin`` = 1, γ = ``gamma`` = 2)

**Hill** re-weights the negatives' MSE-like term in the shape of a hill, so that confident (possibly false)
negatives get a small gradient:

    L−_Hill = (λ − p) · p²                            (λ = ``lamb`` = 1.5)

**SPLC** (self-paced loss correction) uses the focal loss on negatives and, from epoch ``start_epoch`` on
(2 = after the first epoch, 1-based), treats an UNOBS label whose current prediction p > τ (``tau`` = 0.6) as
a positive, per batch and without memory:

    L−_SPLC = 1[p ≤ τ] · (−p^γ · log(1 − p)) + 1[p > τ] · (−(1 − p)^γ · log p)

The corrected term has no margin, as in the authors' release (the margin is applied to observed positives
only); the test p > τ is made on the detached prediction. Observed NEG entries (absent in the single-positive
setting) take the negative term and are never corrected. Both losses are the mean over all B·C entries (the
authors sum; the scale only rescales the learning rate).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from wsml.losses._checks import check_int, check_number
from wsml.losses.asl import safe_pow
from wsml.losses.base import PartialLoss
from wsml.losses.registry import register_loss


def focal_margin_positive(logits: Tensor, margin: float, gamma: float) -> Tensor:
    """Per-entry focal margin loss −(1 − σ(z − m))^γ · log σ(z − m)."""
    shifted = logits - margin
    return safe_pow(torch.sigmoid(-shifted), gamma) * -F.logsigmoid(shifted)


def hill_negative(logits: Tensor, lamb: float) -> Tensor:
    """Per-entry Hill negative loss (λ − p) · p²."""
    p = torch.sigmoid(logits)
    return (lamb - p) * p * p


def focal_negative(logits: Tensor, gamma: float) -> Tensor:
    """Per-entry focal loss of a negative −p^γ · log(1 − p)."""
    return safe_pow(torch.sigmoid(logits), gamma) * -F.logsigmoid(-logits)


def _margin_gamma(margin: float, gamma: float) -> tuple[float, float]:
    return check_number("margin", margin), check_number("gamma", gamma, 0.0)


@register_loss("hill")
class HillLoss(PartialLoss):
    """Hill: focal margin loss on POS, (λ − p)·p² on UNOBS and NEG."""

    def __init__(self, *, lamb: float = 1.5, margin: float = 1.0, gamma: float = 2.0) -> None:
        super().__init__()
        # λ >= 1 keeps (λ − p)·p² >= 0 and increasing on [0, 1]; the paper uses 1.5
        self.lamb = check_number("lamb", lamb, 1.0)
        self.margin, self.gamma = _margin_gamma(margin, gamma)

    def compute(self, logits: Tensor, targets: Tensor, index: Optional[Tensor]) -> Tensor:
        pos = focal_margin_positive(logits, self.margin, self.gamma)
        return torch.where(targets == 1, pos, hill_negative(logits, self.lamb)).mean()

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, lamb={self.lamb}, margin={self.margin}, gamma={self.gamma}"


@register_loss("splc")
class SPLC(PartialLoss):
    """SPLC: focal margin loss on POS, focal loss on negatives, UNOBS with p > τ taken as POS from ``start_epoch``.

    ``num_modified_epoch`` counts the corrected entries since ``set_epoch``; ``last_modified`` gives the
    (rows, classes) corrected in the last call (rows: dataset ids from ``index``, or batch positions).
    """

    modifies_labels = True

    def __init__(self, *, tau: float = 0.6, margin: float = 1.0, gamma: float = 2.0, start_epoch: int = 2) -> None:
        super().__init__()
        self.tau = check_number("tau", tau, 0.0, 1.0)
        self.margin, self.gamma = _margin_gamma(margin, gamma)
        self.start_epoch = check_int("start_epoch", start_epoch, 1)

    def compute(self, logits: Tensor, targets: Tensor, index: Optional[Tensor]) -> Tensor:
        if self.epoch >= self.start_epoch:
            corrected = (targets == 0) & (torch.sigmoid(logits.detach()) > self.tau)
        else:
            corrected = torch.zeros_like(targets, dtype=torch.bool)
        loss = torch.where(
            targets == 1,
            focal_margin_positive(logits, self.margin, self.gamma),
            torch.where(corrected, focal_negative(-logits, self.gamma), focal_negative(logits, self.gamma)),
        )
        self.record_modified(torch.nonzero(corrected.reshape(-1))[:, 0], logits.shape[1], index)
        return loss.mean()

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, tau={self.tau}, margin={self.margin}, gamma={self.gamma}, "
                f"start_epoch={self.start_epoch}")
