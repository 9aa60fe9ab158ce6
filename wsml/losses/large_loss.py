"""Large loss modification (Kim et al., CVPR 2022): LL-R (rejection), LL-Ct / LL-Cp (temporary / permanent correction).

Relative schedule (the paper's default): epoch 1 modifies nothing; from epoch t ≥ 2 the k largest Naive-AN
losses among the UNOBS entries of the batch are modified, k = ceil(rate · B · C), rate = min(1, (t − 1) · Δrel
/ 100) (Δrel = ``delta_rel``, percent per epoch). LL-R gives them loss 0, LL-Ct the BCE against target 1
(−log σ(z)). LL-Cp uses a constant k = ceil(Δrel / 100 · B · C), corrects the k entries like LL-Ct and
remembers only the (row id, class) pairs whose loss is strictly greater than the k-th largest (paper Eq. 7,
"l > R(t)"; the authors' code compares ``unobserved_loss > topk_lossvalue``): k − 1 per batch without ties, so
none at k = 1 (VOC: B = 16, C = 20, Δrel 0.1). Remembered pairs are POS in every later batch and epoch (kept in
``state_dict``). Absolute schedule (``schedule="abs"``): from epoch 2 the UNOBS entries with loss
> R(t) = r0 − t · delta_abs are modified (and, for LL-Cp, all of them remembered).
Observed entries are never modified. The loss is the mean over all B·C entries.

Under DDP (torch.distributed initialized, world size > 1, ``global_selection=True``) the selection is made on
the global batch gathered from all ranks, exactly as one process would on the concatenated batch; each rank
applies its own slice and returns its local mean (DDP averages the gradients). LL-Cp records the global
selection on every rank, so the state is the same everywhere.

For analysis, ``last_modified`` gives the (rows, classes) this rank modified in the last call (rows are dataset
row ids from ``index``, or batch positions when index is None), ``num_modified_epoch`` counts them since
``set_epoch``, and LL-Cp's ``corrections()`` returns all permanent corrections.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import torch
from torch import Tensor

from wsml.losses._checks import check_bool, check_choice, check_number
from wsml.losses._corrections import CorrectionStore
from wsml.losses._kernels import rejected_bce
from wsml.losses._selection import above_threshold_unobserved, topk_unobserved
from wsml.losses.base import PartialLoss, check_batch_layout, check_finite_logits, check_target_values
from wsml.losses.distributed import gather_batch, world_size
from wsml.losses.registry import register_loss

SCHEDULES = ("rel", "abs")
_EMPTY = torch.empty(0, dtype=torch.long)


def ceil_count(x: float) -> int:
    """ceil(x), ignoring float rounding noise (0.016 · 1250 = 20.000000000000004 -> 20)."""
    r = round(x)
    return int(r) if abs(x - r) <= 1e-9 * max(1.0, abs(x)) else math.ceil(x)


def strictly_above_kth(z: Tensor, sel: Tensor, k: int) -> Tensor:
    """The selected positions LL-Cp remembers: AN loss strictly greater than the k-th largest (paper Eq. 7,
    "l > R(t)"; authors' code ``torch.where(unobserved_loss > topk_lossvalue)``), so k − 1 without ties.

    The AN loss softplus(z) is increasing in z, so the logits are compared. With fewer than k UNOBS entries the
    reference's k-th largest is a masked 0 and every selected entry is remembered.
    """
    if sel.numel() < k or sel.numel() == 0:
        return sel
    values = z.detach().reshape(-1)[sel]
    return sel[values > values.min()]


class LargeLoss(PartialLoss):
    """Shared machinery of LL-R / LL-Ct / LL-Cp; subclasses set ``correct`` and ``permanent``."""

    correct = False  # True: selected entries get target 1; False: loss 0
    permanent = False  # True: LL-Cp memory
    modifies_labels = True
    example_hparams = {"delta_rel": 10.0}

    def __init__(
        self,
        *,
        delta_rel: float = 0.2,
        schedule: str = "rel",
        r0: Optional[float] = None,
        delta_abs: Optional[float] = None,
        global_selection: bool = True,
    ) -> None:
        super().__init__()
        self.delta_rel = check_number("delta_rel", delta_rel, 0.0, 100.0)
        self.schedule = check_choice("schedule", schedule, SCHEDULES, lower=True)
        if self.schedule == "abs":
            if r0 is None or delta_abs is None:
                raise ValueError("schedule='abs' needs r0 and delta_abs (R(t) = r0 - t * delta_abs)")
            self.r0 = check_number("r0", r0)
            self.delta_abs = check_number("delta_abs", delta_abs, 0.0)
        elif r0 is not None or delta_abs is not None:
            raise ValueError("r0 and delta_abs only apply to schedule='abs'")
        else:
            self.r0 = self.delta_abs = None
        self.global_selection = check_bool("global_selection", global_selection)
        self.store = CorrectionStore() if self.permanent else None

    # --- schedule -----------------------------------------------------------------------------------------
    def rate(self) -> float:
        """Fraction of the batch's B·C entries to modify this epoch (relative schedule)."""
        if self.epoch < 2:
            return 0.0
        if self.permanent:
            return min(1.0, self.delta_rel / 100.0)
        return min(1.0, (self.epoch - 1) * self.delta_rel / 100.0)

    def threshold(self) -> float:
        """R(t) = r0 − t · delta_abs (absolute schedule)."""
        return self.r0 - self.epoch * self.delta_abs

    # --- forward -------------------------------------------------------------------------------------------
    def forward(self, logits: Tensor, targets: Tensor, index: Optional[Tensor] = None) -> Tensor:
        """Mean loss over all B·C entries; validates inputs like every PartialLoss, with fewer passes.

        The finiteness of the logits is checked on the loss value (any NaN/inf logit makes it non-finite) and
        state (LL-Cp corrections, analysis counters) is only updated once the batch has passed every check.
        """
        check_batch_layout(logits, targets, index)
        check_target_values(targets)
        self._require_index(index)
        if self.permanent and int(index.min()) < 0:
            raise ValueError(f"LL-Cp index values (dataset row ids) must be >= 0, got {int(index.min())}")
        loss, sel, pending = self._compute(logits, targets, index)
        check_finite_logits(logits, loss.item())
        if pending is not None:
            self.store.add(*pending, logits.shape[1])
        self.record_modified(sel, logits.shape[1], index)
        return loss

    def compute(self, logits: Tensor, targets: Tensor, index: Optional[Tensor]) -> Tensor:
        """The loss of validated inputs, without updating any state (``forward`` validates and records)."""
        return self._compute(logits, targets, index)[0]

    def _compute(self, logits: Tensor, targets: Tensor, index: Optional[Tensor]) -> tuple[Tensor, Tensor, Any]:
        """(loss, local flat positions modified, LL-Cp pairs to record or None)."""
        C = logits.shape[1]
        key_dtype = logits.dtype if logits.dtype in (torch.float32, torch.float64) else torch.float32
        tf = targets.to(key_dtype, copy=True)  # {1, 0, -1} as floats: selection mask, then the BCE target
        if self.permanent and len(self.store):
            rows, classes = self.store.lookup(index, C)
            if rows.numel():
                tf[rows, classes] = 1
        sel, pending = self._select(logits, tf, index) if self.epoch >= 2 else (_EMPTY.to(logits.device), None)
        y = tf.clamp_(min=0)
        if y.dtype != logits.dtype:
            y = y.to(logits.dtype)
        if self.correct:
            if sel.numel():
                y.view(-1).index_fill_(0, sel, 1)
            return rejected_bce(logits, y), sel, pending
        return rejected_bce(logits, y, sel), sel, pending

    def _select(self, logits: Tensor, tf: Tensor, index: Optional[Tensor]) -> tuple[Tensor, Any]:
        """Local flat positions to modify, and the (row id, class) pairs LL-Cp must record (global under DDP)."""
        B, C = logits.shape
        rel = self.schedule == "rel"
        if self.global_selection and (rel or self.permanent) and world_size() > 1:
            gz, gt, gindex, offset = gather_batch(logits.detach(), tf, index if self.permanent else None)
            z, t, rows_of = gz, gt, gindex
        else:
            z, t, rows_of, offset = logits, tf, index, 0
        if rel:
            k = ceil_count(self.rate() * z.numel())
            sel = topk_unobserved(z, t, k)
        else:
            sel = above_threshold_unobserved(z, t, self.threshold())
        pending = None
        if self.permanent:
            kept = strictly_above_kth(z, sel, k) if rel else sel
            pending = (rows_of[kept // C], kept % C)
        if z is not logits:
            lo = offset * C
            sel = sel[(sel >= lo) & (sel < lo + B * C)] - lo
        return sel, pending

    # --- state --------------------------------------------------------------------------------------------
    def get_extra_state(self) -> dict[str, Any]:
        state = super().get_extra_state()
        if self.store is not None:
            state["corrections"] = self.store.state()
        return state

    def set_extra_state(self, state: dict[str, Any]) -> None:
        super().set_extra_state(state)
        if self.store is not None and "corrections" in state:
            self.store.load(state["corrections"])

    def extra_repr(self) -> str:
        sched = f"delta_rel={self.delta_rel}" if self.schedule == "rel" else f"r0={self.r0}, delta_abs={self.delta_abs}"
        return f"{super().extra_repr()}, schedule={self.schedule!r}, {sched}"


@register_loss("ll-r")
class LLR(LargeLoss):
    """LL-R: large UNOBS losses are rejected (loss 0)."""


@register_loss("ll-ct")
class LLCt(LargeLoss):
    """LL-Ct: large UNOBS losses are corrected temporarily (BCE against target 1 in this batch only)."""

    correct = True


@register_loss("ll-cp")
class LLCp(LargeLoss):
    """LL-Cp: large UNOBS losses are corrected; those strictly above the k-th largest stay POS afterwards.

    ``reference_cp_bug=True`` reproduces the paper's released code, where LL-Cp silently runs as LL-Ct
    (increasing rate, no memory); for comparison only.
    """

    correct = True
    permanent = True
    needs_index = True

    def __init__(
        self,
        *,
        delta_rel: float = 0.2,
        schedule: str = "rel",
        r0: Optional[float] = None,
        delta_abs: Optional[float] = None,
        global_selection: bool = True,
        reference_cp_bug: bool = False,
    ) -> None:
        check_bool("reference_cp_bug", reference_cp_bug)
        super().__init__(
            delta_rel=delta_rel, schedule=schedule, r0=r0, delta_abs=delta_abs, global_selection=global_selection
        )
        self.reference_cp_bug = reference_cp_bug
        if reference_cp_bug:  # instance attributes shadow the class's: behave as LL-Ct
            self.permanent = False
            self.needs_index = False
            self.store = None

    def corrections(self) -> tuple[Tensor, Tensor]:
        """(rows, classes) of every permanent correction so far, sorted by row then class."""
        if self.store is None:
            empty = torch.empty(0, dtype=torch.long)
            return empty, empty
        return self.store.pairs()
