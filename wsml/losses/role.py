"""ROLE (Cole et al. 2021, "Multi-Label Learning from Single Positive Labels"): online label estimation.

A learnable matrix of label-estimate logits (``N × C``, one row per training image) is trained jointly with
the classifier f. Per batch, with g the estimate logits of the batch rows (σ = sigmoid, mean over B·C):

    loss = ½·[BCE(f, y_obs) + BCE(g, y_obs)] on observed entries      (Cole et al.: observed positives)
         + ½·[BCE(f, σ(g).detach()) + BCE(g, σ(f).detach())]         on all entries
         + ½·[EPR(σ(f)) + EPR(σ(g))]                                 (expected-positive regulariser)

Initialisation as in the reference: unobserved estimates uniform in (0.4, 0.6) (logits in ±logit(0.6)),
observed positives 0.995 and observed negatives 0.005. Without ``observed_labels`` at construction, a row's
observed entries are initialised the first time the row is seen (its estimate is unused before that).
The estimates are trained as in Cole et al.'s code (train.py: a separate Adam group at ``lr_mult`` (10×) the
classifier's lr, no weight decay) whatever optimizer the network uses: ``loss_fn.configure_optimizer(lr)`` creates
that Adam as ``own_optimizer`` (its state is part of ``state_dict``); step it after the network's optimizer.
(With SGD and weight decay 1e-3, as VOC's network, the estimates barely moved and were pulled to 0.5.)
Differences from the reference: BCE on
logits (stable) instead of −log(p + 1e-5); observed negatives, when present, get the same BCE term as
observed positives (the reference only supports single-positive data). Under DDP the estimates are not part of
the DDP-wrapped model, so their gradients stay local to each rank: the training loop averages them over the ranks
with ``wsml.distributed.average_gradients`` after ``backward()`` (as DDP does for the model) before both optimizer
steps; ``observed_labels`` is passed so that every rank initialises all rows identically up front.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wsml.losses._checks import check_int, check_number
from wsml.losses.base import PartialLoss, check_row_ids, check_state_fits
from wsml.losses.bce import an_targets
from wsml.losses.epr import check_expected_num_pos, expected_positive_regularizer
from wsml.losses.registry import register_loss


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


LOGIT_POS = _logit(0.995)
LOGIT_NEG = _logit(0.005)


@register_loss("role")
class ROLE(PartialLoss):
    """ROLE loss with learnable label estimates ``label_logits`` [num_samples, num_classes] (needs ``index``)."""

    needs_index = True
    example_hparams = {"num_samples": 16, "num_classes": 8, "expected_num_pos": 1.5}

    def __init__(
        self,
        *,
        num_samples: int,
        num_classes: int,
        expected_num_pos: float,
        lr_mult: float = 10.0,
        init_width: float = 0.1,
        seed: int = 0,
        observed_labels: Optional[Any] = None,
    ) -> None:
        super().__init__()
        self.num_samples = check_int("num_samples", num_samples)
        self.num_classes = check_int("num_classes", num_classes)
        self.expected_num_pos = check_expected_num_pos(expected_num_pos)
        self.lr_mult = check_number("lr_mult", lr_mult, 0, lo_open=True)
        init_width = check_number("init_width", init_width, 0, 0.5, hi_open=True)
        gen = torch.Generator().manual_seed(int(seed))
        q = _logit(0.5 + init_width)
        init = (torch.rand(self.num_samples, self.num_classes, generator=gen) * 2.0 - 1.0) * q
        self.label_logits = nn.Parameter(init)
        self.register_buffer("initialized", torch.zeros(self.num_samples, dtype=torch.bool))
        self.own_optimizer: Optional[torch.optim.Optimizer] = None
        self._pending_optimizer_state: Optional[dict] = None
        if observed_labels is not None:
            from wsml.labels import as_observed, validate_observed

            obs = torch.as_tensor(validate_observed(as_observed(observed_labels)))
            if tuple(obs.shape) != (self.num_samples, self.num_classes):
                raise ValueError(
                    f"observed_labels shape {tuple(obs.shape)} != (num_samples, num_classes) "
                    f"= {(self.num_samples, self.num_classes)}"
                )
            self._init_rows(torch.arange(self.num_samples), obs)

    @torch.no_grad()
    def _init_rows(self, rows: Tensor, targets: Tensor) -> None:
        block = self.label_logits[rows]
        t = targets.to(block.device)
        block = torch.where(t == 1, LOGIT_POS, torch.where(t == -1, LOGIT_NEG, block))
        self.label_logits[rows] = block
        self.initialized[rows] = True

    def extra_param_groups(self, base_lr: float) -> list[dict[str, Any]]:
        """One group holding the label estimates, at ``lr_mult × base_lr``."""
        return [{"params": [self.label_logits], "lr": self.lr_mult * float(base_lr), "name": "role_label_estimates"}]

    def configure_optimizer(self, base_lr: float) -> torch.optim.Optimizer:
        """Create ``own_optimizer``: Adam over the estimates at ``lr_mult × base_lr``, no weight decay (Cole et al.),
        restoring the state of a loaded checkpoint if there is one."""
        lr = self.lr_mult * float(base_lr)
        self.own_optimizer = torch.optim.Adam([self.label_logits], lr=lr, weight_decay=0.0)
        if self._pending_optimizer_state is not None:
            self.own_optimizer.load_state_dict(self._pending_optimizer_state)
            self._pending_optimizer_state = None
            for group in self.own_optimizer.param_groups:  # the moments carry over, the lr is this stage's
                group["lr"] = lr
        return self.own_optimizer

    @torch.no_grad()
    def carry_over(self, state: dict[str, Any]) -> None:
        """Start from the estimates of another run's state (LinearInit stage 1 -> stage 2, as Cole et al. pass
        them on); the epoch and the estimates' optimizer start afresh, as in their new training run."""
        self.label_logits.copy_(state["label_logits"])
        self.initialized.copy_(state["initialized"])

    def get_extra_state(self) -> dict[str, Any]:
        state = super().get_extra_state()
        if self.own_optimizer is not None:
            state["optimizer"] = self.own_optimizer.state_dict()
        return state

    def set_extra_state(self, state: dict[str, Any]) -> None:
        super().set_extra_state(state)
        self._pending_optimizer_state = state.get("optimizer")
        if self.own_optimizer is not None and self._pending_optimizer_state is not None:
            self.own_optimizer.load_state_dict(self._pending_optimizer_state)
            self._pending_optimizer_state = None

    def estimated_labels(self) -> Tensor:
        """Current label estimates σ(label_logits) [N, C] (detached)."""
        return self.label_logits.detach().sigmoid()

    def compute(self, logits: Tensor, targets: Tensor, index: Optional[Tensor]) -> Tensor:
        check_state_fits(logits, "ROLE", self.num_classes, self.label_logits, "estimates")
        index = check_row_ids(index, self.num_samples)
        new = ~self.initialized[index]
        if bool(new.any()):
            self._init_rows(index[new], targets[new])
        est = self.label_logits[index].to(logits.dtype)
        observed = targets.abs().to(logits.dtype)
        y = an_targets(targets, logits.dtype)
        n = logits.numel()
        terms = (
            F.binary_cross_entropy_with_logits(logits, y, weight=observed, reduction="sum")
            + F.binary_cross_entropy_with_logits(est, y, weight=observed, reduction="sum")
            + F.binary_cross_entropy_with_logits(logits, est.detach().sigmoid(), reduction="sum")
            + F.binary_cross_entropy_with_logits(est, logits.detach().sigmoid(), reduction="sum")
        )
        reg = expected_positive_regularizer(logits.sigmoid(), self.expected_num_pos) + expected_positive_regularizer(
            est.sigmoid(), self.expected_num_pos
        )
        return 0.5 * terms / n + 0.5 * reg

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, num_samples={self.num_samples}, num_classes={self.num_classes}, "
                f"expected_num_pos={self.expected_num_pos}, lr_mult={self.lr_mult}")
