"""Curriculum labelling with the partial-BCE loss (Durand, Mehrasa & Mori, CVPR 2019, "Learning a Deep ConvNet for
Multi-label Classification with Partial Labels").

**Partial-BCE**: BCE on the *known* labels only, normalised by the proportion p_b of known labels of the image:

    ℓ_b = g(p_b) / C · Σ_{c known} BCE(z_bc, y_bc),    g(p) = a · p^γ + b,   g(1) = 1, g(0.1) = 5

so a = −4 / (1 − 0.1^γ), b = 1 − a (γ = ``gamma`` = 1: a = −4.44, b = 5.44). An image with few known labels
gets a larger weight per label. The loss is the batch mean of ℓ_b, i.e. the mean over all B·C entries with
unknown ones counting 0.

**Curriculum labelling** (the paper's "score proportion" strategy): from epoch ``start_epoch`` on, in every
batch the proportion θ (``theta``) of the still-unknown (UNOBS) entries with the most confident predictions
(largest |z|) are labelled with the model's decision — POS if z > 0, else NEG — and these labels are kept:
they are known labels for every later batch and epoch (also in the partial-BCE normalisation), as the paper's
rounds of "predict the easy missing labels, then keep training with them". Differences from the paper: the
labelling is done online per batch instead of between separate training rounds, and the paper's GNN label
model is not included. The labels are kept sparsely (as LL-Cp's corrections) and saved in ``state_dict``.
Under DDP (``global_selection``) the selection is made on the batch gathered from all ranks, so every rank
records the same labels.

With single positive labels and no observed negatives, the first epochs only ever push predictions up, so the
most confident unknown labels are labelled POS and the model collapses towards predicting everything positive
(the failure the Large Loss paper reports for Curriculum labelling in that setting); it needs observed
negatives (e.g. OpenImages' partial labels).
"""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from wsml.losses.base import PartialLoss
from wsml.losses.checks import check_bool, check_int, check_number
from wsml.losses.corrections import CorrectionStore
from wsml.losses.distributed import gather_rows, world_size
from wsml.losses.large_loss import ceil_count
from wsml.losses.registry import register_loss
from wsml.losses.selection import topk_unobserved


def partial_bce_weights(gamma: float) -> tuple[float, float]:
    """(a, b) of g(p) = a·p^γ + b with g(1) = 1 and g(0.1) = 5."""
    a = -4.0 / (1.0 - 0.1**gamma)
    return a, 1.0 - a


def partial_bce(logits: Tensor, targets: Tensor, gamma: float) -> Tensor:
    """Durand et al.'s partial-BCE: mean over rows of g(p_b)/C · Σ_{known c} BCE (targets: 1 / 0 unknown / −1)."""
    known = (targets != 0).to(logits.dtype)
    num_classes = logits.shape[1]
    a, b = partial_bce_weights(gamma)
    g = a * (known.sum(1) / num_classes).pow(gamma) + b
    bce = F.binary_cross_entropy_with_logits(logits, (targets == 1).to(logits.dtype), reduction="none")
    return (g * (bce * known).sum(1)).sum() / logits.numel()


@register_loss("curriculum", aliases=("curriculum-labeling", "curriculum-labelling", "partial-bce"))
class CurriculumLabeling(PartialLoss):
    """Partial-BCE + curriculum labelling of the most confident UNOBS entries (kept permanently; needs ``index``)."""

    needs_index = True

    def __init__(self, *, theta: float = 0.1, gamma: float = 1.0, start_epoch: int = 2,
                 global_selection: bool = True) -> None:
        super().__init__()
        self.theta = check_number("theta", theta, 0.0, 1.0)
        self.gamma = check_number("gamma", gamma, 0.0, lo_open=True)
        self.start_epoch = check_int("start_epoch", start_epoch, 1)
        self.global_selection = check_bool("global_selection", global_selection)
        self.pos_store = CorrectionStore()
        self.neg_store = CorrectionStore()
        self.num_modified_epoch = 0

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.num_modified_epoch = 0

    def _known(self, targets: Tensor, index: Tensor) -> Tensor:
        """Targets with the curriculum labels of these rows filled in (observed labels are never changed)."""
        C = targets.shape[1]
        out = targets
        for store, value in ((self.pos_store, 1), (self.neg_store, -1)):
            if len(store):
                rows, classes = store.lookup(index, C)
                if rows.numel():
                    if out is targets:
                        out = targets.clone()
                    out[rows, classes] = value
        return out

    @torch.no_grad()
    def _select(self, logits: Tensor, targets: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
        """Local flat positions to label now and their labels (True = POS); records them (globally) in the stores."""
        B, C = logits.shape
        z = logits.detach()
        keys = z.abs().masked_fill(targets != 0, float("-inf"))
        offset = 0
        if self.global_selection and world_size() > 1:
            import torch.distributed as dist

            keys, sizes = gather_rows(keys.contiguous(), float("-inf"))
            z, _ = gather_rows(z.contiguous(), 0.0, sizes)
            index, _ = gather_rows(index.long(), -1, sizes)
            offset = sum(sizes[: dist.get_rank()])
        k = ceil_count(self.theta * float((keys != float("-inf")).sum()))
        sel = topk_unobserved(keys, None, k)
        positive = z.reshape(-1)[sel] > 0
        rows, classes = index.long()[sel // C], sel % C
        self.pos_store.add(rows[positive], classes[positive], C)
        self.neg_store.add(rows[~positive], classes[~positive], C)
        lo = offset * C
        local = (sel >= lo) & (sel < lo + B * C)
        return sel[local] - lo, positive[local]

    def compute(self, logits: Tensor, targets: Tensor, index: Optional[Tensor]) -> Tensor:
        if int(index.min()) < 0:
            raise ValueError(f"curriculum index values (dataset row ids) must be >= 0, got {int(index.min())}")
        targets = self._known(targets, index)
        if self.epoch >= self.start_epoch and self.theta > 0:
            sel, positive = self._select(logits, targets, index)
            if sel.numel():
                targets = targets.clone()
                targets.view(-1)[sel] = torch.where(positive, 1, -1).to(targets.dtype)
                self.num_modified_epoch += sel.numel()
        return partial_bce(logits, targets, self.gamma)

    def labels(self) -> tuple[Tensor, Tensor, Tensor]:
        """(rows, classes, labels ±1) of every curriculum label so far, positives first."""
        pr, pc = self.pos_store.pairs()
        nr, nc = self.neg_store.pairs()
        values = torch.cat([torch.ones(pr.numel(), dtype=torch.long), -torch.ones(nr.numel(), dtype=torch.long)])
        return torch.cat([pr.cpu(), nr.cpu()]), torch.cat([pc.cpu(), nc.cpu()]), values

    def get_extra_state(self) -> dict[str, Any]:
        state = super().get_extra_state()
        state["curriculum_pos"] = self.pos_store.state()
        state["curriculum_neg"] = self.neg_store.state()
        return state

    def set_extra_state(self, state: dict[str, Any]) -> None:
        super().set_extra_state(state)
        if "curriculum_pos" in state:
            self.pos_store.load(state["curriculum_pos"])
        if "curriculum_neg" in state:
            self.neg_store.load(state["curriculum_neg"])

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, theta={self.theta}, gamma={self.gamma}, start_epoch={self.start_epoch}, "
                f"labelled={len(self.pos_store) + len(self.neg_store)}")
