"""ASL, the asymmetric loss (Ridnik, Ben-Baruch et al., ICCV 2021, "Asymmetric Loss For Multi-Label Classification").

Positives and negatives get different focusing exponents, and negatives a probability shift (hard threshold)
that discards very easy negatives and down-weights very hard ones (possible missing labels). With p = σ(z):

    L+ = −(1 − p)^γ+ · log p                         (POS)
    L− = −p_m^γ− · log(1 − p_m),  p_m = max(p − m, 0)   (UNOBS and NEG: "AN + ASL" in single-positive use)

Defaults are the released training's: γ+ = 0, γ− = 4, m = 0.05 (Alibaba-MIIL/ASL train.py builds
``AsymmetricLoss(gamma_neg=4, gamma_pos=0, clip=0.05, disable_torch_grad_focal_loss=True)``).

**Focusing weight (``detach_weight``).** The released code computes the weights (1 − p)^γ+ and p_m^γ− with
autograd switched off, so they scale the gradient of the log term but are not differentiated themselves; the
baseline ASL of the Hill/SPLC code does the same. That is the default here (``detach_weight=True``). The paper's
formula differentiated as written (the weight too) is ``detach_weight=False``: it pushes several times more
gradient onto negative (and, in single-positive use, unobserved) entries.

**Clamp (``eps``).** The released code takes log(max(p, 1e-8)) and log(max(1 − p_m, 1e-8)); ``eps=1e-8``
(default) does the same (the gradient of a clamped log is 0, e.g. for a positive with z < −18.4).
``eps=0`` uses the exact log-sigmoid instead.

**Scaling.** The released loss is the *sum* over the batch's B·C entries; wsml's losses return the *mean*
(DESIGN), i.e. the sum divided by B·C. With SGD that is a B·C times smaller learning rate. With Adam the update
is nearly scale-free, but an L2 weight decay added to the gradient (the released recipe: Adam, weight decay
1e-4 on the weights only) is B·C times stronger relative to the loss gradient under the mean; to match the
released balance, divide ``optim.weight_decay`` by B·C (or use decoupled weight decay).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from wsml.losses._checks import check_bool, check_number
from wsml.losses.base import PartialLoss
from wsml.losses.registry import register_loss


def safe_pow(x: Tensor, exponent: float) -> Tensor:
    """x ** exponent for x >= 0 with a finite gradient (0) at x = 0 also when 0 < exponent < 1."""
    if exponent == 0:
        return torch.ones_like(x)
    if exponent >= 1:
        return x.pow(exponent)
    pos = x > 0
    return torch.where(pos, torch.where(pos, x, torch.ones_like(x)).pow(exponent), torch.zeros_like(x))


def _log(x: Tensor, eps: float) -> Tensor:
    return torch.log(x.clamp(min=eps))


def asl_negative(logits: Tensor, gamma_neg: float, clip: float, detach_weight: bool = False,
                 eps: float = 0.0) -> Tensor:
    """Per-entry ASL negative term −p_m^γ− · log(1 − p_m), p_m = max(σ(z) − m, 0) (weight detached on request)."""
    if clip > 0:
        one_minus_pm = (torch.sigmoid(-logits) + clip).clamp(max=1.0)
        log_term = _log(one_minus_pm, eps) if eps > 0 else torch.log(one_minus_pm)
        pm = 1.0 - one_minus_pm
    else:
        log_term = _log(torch.sigmoid(-logits), eps) if eps > 0 else F.logsigmoid(-logits)
        pm = torch.sigmoid(logits)
    if gamma_neg == 0:
        return -log_term
    weight = safe_pow(pm.detach() if detach_weight else pm, gamma_neg)
    return -weight * log_term


def asl_positive(logits: Tensor, gamma_pos: float, detach_weight: bool = False, eps: float = 0.0) -> Tensor:
    """Per-entry ASL positive term −(1 − p)^γ+ · log p (weight detached on request)."""
    nll = -_log(torch.sigmoid(logits), eps) if eps > 0 else -F.logsigmoid(logits)
    if gamma_pos == 0:
        return nll
    q = torch.sigmoid(-logits)
    return safe_pow(q.detach() if detach_weight else q, gamma_pos) * nll


@register_loss("asl", aliases=("asymmetric", "asymmetric-loss"))
class AsymmetricLoss(PartialLoss):
    """ASL with UNOBS and NEG entries as negatives; ``gamma_pos``, ``gamma_neg``, ``clip`` (m), ``detach_weight``
    (released training: True; the paper's maths: False) and ``eps`` (the released log clamp, 1e-8; 0 = exact)."""

    def __init__(self, *, gamma_pos: float = 0.0, gamma_neg: float = 4.0, clip: float = 0.05,
                 detach_weight: bool = True, eps: float = 1e-8) -> None:
        super().__init__()
        self.gamma_pos = check_number("gamma_pos", gamma_pos, 0.0)
        self.gamma_neg = check_number("gamma_neg", gamma_neg, 0.0)
        self.clip = check_number("clip", clip, 0.0, 1.0, hi_open=True)
        self.detach_weight = check_bool("detach_weight", detach_weight)
        self.eps = check_number("eps", eps, 0.0, 1.0, hi_open=True)

    def compute(self, logits: Tensor, targets: Tensor, index: Optional[Tensor]) -> Tensor:
        pos = targets == 1
        d, eps = self.detach_weight, self.eps
        loss = torch.where(pos, asl_positive(logits, self.gamma_pos, d, eps),
                           asl_negative(logits, self.gamma_neg, self.clip, d, eps))
        return loss.mean()

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, gamma_pos={self.gamma_pos}, gamma_neg={self.gamma_neg}, clip={self.clip}, "
                f"detach_weight={self.detach_weight}, eps={self.eps}")
