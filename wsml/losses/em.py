"""EM and EM+APL (Zhou et al., ECCV 2022, "Acknowledging the Unknown for Multi-label Learning with Single Positive
Labels"): unobserved labels are treated as *unknown*, not negative.

**EM** (entropy maximisation), p = σ(z), mean over all B·C entries:

    POS: −log p          NEG: −log(1 − p)          UNOBS: −α · H(p),  H(p) = −p log p − (1 − p) log(1 − p)

α (``alpha``): VOC 0.2, COCO 0.1, NUS 0.1, CUB 0.01.

**EM+APL** adds asymmetric pseudo-labelling with a self-paced procedure: after each epoch t ≥ ``warmup_epoch``,
for every class c the n_c = ⌊``neg_proportion`` · U_c / (``num_epochs`` − ``warmup_epoch``)⌋ UNOBS entries
with the lowest predicted probability that are not pseudo-labelled yet become *soft negative* pseudo-labels
with target s = the probability predicted then (U_c = number of UNOBS entries of class c in the training set);
there are num_epochs − warmup_epoch such rounds, after epochs warmup_epoch … num_epochs − 1 (a longer run
gets no further rounds).
No positive pseudo-labels are made (the asymmetric tolerance: false positives are much more harmful than
false negatives in single-positive data). Pseudo-labelled entries then have loss β · BCE(z, s), β = ``beta``.
Defaults per data set (authors): warm-up VOC 5, COCO 5, NUS 4, CUB 3; β VOC 0.02, COCO 0.9, NUS 0.2,
CUB 0.4; neg_proportion 0.9; 10 epochs. The defaults here are COCO's.

Simplification (documented): the authors run an extra evaluation-mode pass over the training set after the
epoch to get the predictions; this loss instead records the (detached) training-mode predictions of every
entry it sees during epoch t and pseudo-labels from them when ``set_epoch(t + 1)`` is called. Memory: three
N × C tensors (predictions, soft pseudo-labels, UNOBS mask), kept in ``state_dict`` so a resumed run continues
exactly. Under DDP the recorded predictions are merged over ranks before labelling, so all ranks agree.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from wsml.losses.base import PartialLoss, check_row_ids, check_state_fits
from wsml.losses.checks import check_int, check_number
from wsml.losses.distributed import world_size
from wsml.losses.registry import register_loss


def neg_entropy(logits: Tensor) -> Tensor:
    """Per-entry p·log p + (1 − p)·log(1 − p) = −H(σ(z)), computed from logits."""
    p = torch.sigmoid(logits)
    return p * F.logsigmoid(logits) + (1.0 - p) * F.logsigmoid(-logits)


def em_terms(logits: Tensor, targets: Tensor, alpha: float) -> Tensor:
    """Per-entry EM loss: −log p (POS), −log(1 − p) (NEG), −α·H(p) (UNOBS)."""
    return torch.where(
        targets == 1, -F.logsigmoid(logits),
        torch.where(targets == -1, -F.logsigmoid(-logits), alpha * neg_entropy(logits)),
    )


@register_loss("em", aliases=("entropy-maximization",))
class EntropyMaximization(PartialLoss):
    """EM: BCE on observed labels, α-weighted entropy maximisation on UNOBS labels."""

    def __init__(self, *, alpha: float = 0.1) -> None:
        super().__init__()
        self.alpha = check_number("alpha", alpha, 0.0)

    def compute(self, logits: Tensor, targets: Tensor, index: Optional[Tensor]) -> Tensor:
        return em_terms(logits, targets, self.alpha).mean()

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, alpha={self.alpha}"


@register_loss("em-apl", aliases=("em+apl", "apl"))
class EMAPL(EntropyMaximization):
    """EM+APL: EM plus soft negative pseudo-labels made per class after each epoch >= ``warmup_epoch``."""

    needs_index = True

    def __init__(self, *, num_samples: int, num_classes: int, alpha: float = 0.1, beta: float = 0.9,
                 warmup_epoch: int = 5, num_epochs: int = 10, neg_proportion: float = 0.9) -> None:
        super().__init__(alpha=alpha)
        self.num_samples = check_int("num_samples", num_samples)
        self.num_classes = check_int("num_classes", num_classes)
        self.beta = check_number("beta", beta, 0.0)
        self.warmup_epoch = check_int("warmup_epoch", warmup_epoch)
        self.num_epochs = check_int("num_epochs", num_epochs)
        if self.num_epochs <= self.warmup_epoch:
            raise ValueError(f"num_epochs ({num_epochs}) must be larger than warmup_epoch ({warmup_epoch}): "
                             "APL spreads the pseudo-labels over the epochs after the warm-up")
        self.neg_proportion = check_number("neg_proportion", neg_proportion, 0.0, 1.0)
        shape = (self.num_samples, self.num_classes)
        # predictions recorded in the current epoch (-1 = not seen), soft pseudo-labels (-1 = none)
        self.register_buffer("recorded", torch.full(shape, -1.0))
        self.register_buffer("pseudo", torch.full(shape, -1.0))
        self.register_buffer("unobserved", torch.zeros(shape, dtype=torch.bool))
        self.register_buffer("seen", torch.zeros(self.num_samples, dtype=torch.bool))
        self.labelled_through = 0  # last epoch whose predictions were turned into pseudo-labels
        self.num_modified_epoch = 0

    # --- pseudo-labelling -----------------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        previous = epoch - 1
        due = self.warmup_epoch <= previous < self.num_epochs  # rounds spread over the epochs after the warm-up
        if due and previous > self.labelled_through and self.epoch == previous:
            self._pseudo_label()
            self.labelled_through = previous
        if epoch != self.epoch:
            self.recorded.fill_(-1.0)
        super().set_epoch(epoch)
        self.num_modified_epoch = 0

    @torch.no_grad()
    def _pseudo_label(self) -> None:
        if world_size() > 1:
            import torch.distributed as dist

            for t in (self.recorded, self.unobserved, self.seen):
                as_float = t.float()
                dist.all_reduce(as_float, op=dist.ReduceOp.MAX)
                t.copy_(as_float.to(t.dtype))
        rounds = self.num_epochs - self.warmup_epoch
        per_class = (self.neg_proportion * self.unobserved.sum(0).double() / rounds).floor().long().tolist()
        candidates = self.unobserved & (self.pseudo < 0) & (self.recorded >= 0)
        for c, n in enumerate(per_class):
            rows = candidates[:, c].nonzero().squeeze(1)
            n = min(n, rows.numel())
            if n <= 0:
                continue
            scores = self.recorded[rows, c]
            # lowest scores first; stable sort so ties go to the smaller row id on every rank
            chosen = rows[torch.sort(scores, stable=True).indices[:n]]
            self.pseudo[chosen, c] = self.recorded[chosen, c]

    def pseudo_labels(self) -> tuple[Tensor, Tensor, Tensor]:
        """(rows, classes, soft targets) of all pseudo-labels so far."""
        rows, classes = (self.pseudo >= 0).nonzero(as_tuple=True)
        return rows, classes, self.pseudo[rows, classes]

    # --- loss -----------------------------------------------------------------------------------------------
    def compute(self, logits: Tensor, targets: Tensor, index: Optional[Tensor]) -> Tensor:
        check_state_fits(logits, "EM+APL", self.num_classes, self.pseudo, "state")
        index = check_row_ids(index, self.num_samples)
        with torch.no_grad():
            new = ~self.seen[index]
            if bool(new.any()):
                self.unobserved[index[new]] = targets[new] == 0
                self.seen[index[new]] = True
            self.recorded[index] = torch.sigmoid(logits.detach()).to(self.recorded.dtype)
        soft = self.pseudo[index].to(logits.dtype)
        labelled = (targets == 0) & (soft >= 0)
        self.num_modified_epoch += int(labelled.sum())
        pl = self.beta * F.binary_cross_entropy_with_logits(logits, soft.clamp(min=0.0), reduction="none")
        return torch.where(labelled, pl, em_terms(logits, targets, self.alpha)).mean()

    def get_extra_state(self) -> dict:
        state = super().get_extra_state()
        state["labelled_through"] = self.labelled_through
        return state

    def set_extra_state(self, state: dict) -> None:
        super().set_extra_state(state)
        self.labelled_through = int(state.get("labelled_through", 0))

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, beta={self.beta}, warmup_epoch={self.warmup_epoch}, "
                f"num_epochs={self.num_epochs}, neg_proportion={self.neg_proportion}, "
                f"num_samples={self.num_samples}, num_classes={self.num_classes}")

