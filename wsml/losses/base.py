"""``PartialLoss``: the common base of all wsml losses (epoch schedule, input validation, persistent state).

Every loss is called as ``loss_fn(logits, targets, index=None)`` with ``logits`` a floating ``[B, C]`` tensor
and ``targets`` the observed labels ``[B, C]`` in wsml's encoding (POS = 1, UNOBS = 0, NEG = -1), and returns
the mean over all B·C entries. Validation runs on every batch, so it is kept to two cheap reductions
(``aminmax`` of the targets, ``sum`` of the logits; the LL losses check the loss value instead of the sum)
and a few scalar reads; the detailed error message is only built when something is wrong.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Optional

import torch
from torch import Tensor, nn


def _first_position(bad: Tensor) -> str:
    r, c = (int(v) for v in bad.nonzero()[0])
    return f"first at row {r}, class {c} ({int(bad.sum())} bad entries)"


def check_batch_layout(logits: Tensor, targets: Tensor, index: Optional[Tensor] = None) -> None:
    """Types, shapes and devices only (no device sync): logits floating [B, C], targets [B, C], index [B]."""
    if not isinstance(logits, Tensor) or not logits.is_floating_point():
        raise ValueError(f"logits must be a floating-point tensor, got {getattr(logits, 'dtype', type(logits))}")
    if logits.dim() != 2:
        raise ValueError(f"logits must have shape [B, C], got {tuple(logits.shape)}")
    if not isinstance(targets, Tensor):
        raise ValueError(f"targets must be a tensor, got {type(targets).__name__}")
    if targets.shape != logits.shape:
        raise ValueError(f"targets shape {tuple(targets.shape)} does not match logits shape {tuple(logits.shape)}")
    if targets.dtype == torch.bool or targets.is_complex():
        raise ValueError(
            f"targets must be integer observed labels {{1 = POS, 0 = UNOBS, -1 = NEG}}, got dtype {targets.dtype}"
        )
    if targets.device != logits.device:
        raise ValueError(f"targets are on {targets.device} but logits on {logits.device}")
    if logits.numel() == 0:
        raise ValueError(f"empty batch: logits shape {tuple(logits.shape)}")
    if index is not None:
        if not isinstance(index, Tensor) or index.dim() != 1 or index.is_floating_point() or index.dtype == torch.bool:
            raise ValueError("index must be a 1-D integer tensor of dataset row ids")
        if index.numel() != logits.shape[0]:
            raise ValueError(f"index has {index.numel()} entries but the batch has {logits.shape[0]} rows")
        if index.device != logits.device:
            raise ValueError(f"index is on {index.device} but logits on {logits.device}")


def check_target_values(targets: Tensor) -> None:
    """ValueError naming the bad values unless every target is in {1, 0, -1} (one ``aminmax``)."""
    lo, hi = torch.aminmax(targets)
    if float(lo) < -1 or float(hi) > 1 or (targets.is_floating_point() and bool((targets != targets.round()).any())):
        wide = targets if targets.is_floating_point() else targets.long()  # uint8: -1 would wrap to 255
        bad = (wide != 1) & (wide != 0) & (wide != -1)
        values = torch.unique(wide[bad])[:10].tolist()
        raise ValueError(
            f"targets contain values {values} outside {{1 = POS, 0 = UNOBS, -1 = NEG}}, {_first_position(bad)}; "
            "full {0,1} labels must be converted (1 -> POS, 0 -> NEG)"
        )


def check_finite_logits(logits: Tensor, total: Optional[float] = None) -> None:
    """ValueError with the first bad position if logits contain NaN or inf.

    ``total`` is a value already computed from every logit (their sum, or the loss): when it is finite no
    logit can be NaN/inf and nothing else runs; a non-finite total triggers the exact check.
    """
    if total is None:
        total = float(logits.detach().sum(dtype=torch.float32 if logits.dtype in (torch.float16, torch.bfloat16)
                                          else None))
    if not math.isfinite(total):
        bad = ~torch.isfinite(logits.detach())
        if bool(bad.any()):  # else the total overflowed on finite values: accept
            raise ValueError(f"logits contain NaN or inf, {_first_position(bad)}")


def check_state_fits(logits: Tensor, what: str, num_classes: int, state: Tensor, state_name: str) -> None:
    """ValueError unless the batch has the ``num_classes`` columns a stateful loss was built for, on its state's
    device (EM+APL, ROLE, iu-smooth)."""
    if logits.shape[1] != num_classes:
        raise ValueError(f"{what} was built for {num_classes} classes but logits have {logits.shape[1]}")
    if logits.device != state.device:
        raise ValueError(
            f"logits are on {logits.device} but {what}'s {state_name} on {state.device}: call loss_fn.to(device)"
        )


def check_row_ids(index: Tensor, num_samples: int) -> Tensor:
    """``index`` as int64, after checking that every dataset row id is in [0, num_samples) (one ``aminmax``)."""
    lo, hi = (int(v) for v in torch.aminmax(index))
    if lo < 0 or hi >= num_samples:
        raise ValueError(f"index values must be in [0, {num_samples}), got range [{lo}, {hi}]")
    return index.long()


def validate_batch(logits: Tensor, targets: Tensor, index: Optional[Tensor] = None) -> None:
    """Raise ValueError unless logits are finite floating [B, C], targets the same shape with values in {1, 0, -1}
    and ``index`` (when given) a 1-D integer tensor of length B."""
    check_batch_layout(logits, targets, index)
    check_target_values(targets)
    check_finite_logits(logits)


class _Modified:
    """What a loss modified: the flat positions of its last call and the count since ``set_epoch`` (a plain object:
    ``nn.Module.__setattr__`` is slow on the per-batch path)."""

    __slots__ = ("sel", "index", "num_classes", "count")

    def __init__(self, per_batch: bool) -> None:
        self.sel: Optional[Tensor] = torch.empty(0, dtype=torch.long) if per_batch else None
        self.index: Optional[Tensor] = None
        self.num_classes = 1
        self.count = 0


class PartialLoss(nn.Module):
    """Base class: ``set_epoch`` (1-based), validated ``forward``, persistent state through ``state_dict``, and
    the bookkeeping of modified labels for analysis (``num_modified_epoch``, ``last_modified``).

    Subclasses implement ``compute(logits, targets, index)`` on validated inputs. ``needs_index`` makes
    ``index`` mandatory (LL-Cp, ROLE, EM+APL, Curriculum); ``allow_unobserved = False`` rejects UNOBS entries
    (``full``). A loss that changes labels per batch sets ``modifies_labels`` and calls ``record_modified`` (LL,
    SPLC); one that only counts calls ``count_modified`` (EM+APL; Curriculum with ``modified_count_per_round``).
    ``example_hparams`` are hyper-parameters with which ``build_loss`` makes a working instance (the registry
    test builds every loss with them); ``num_samples``/``num_classes``, when needed, must fit a batch of 16
    rows of row ids 0..15 and 8 classes.
    """

    loss_name = "partial"
    needs_index = False
    allow_unobserved = True
    modifies_labels = False  # True: ``last_modified`` gives the entries modified by the last call
    modified_count_per_round = False  # True: the count is the latest round's, not reset by ``set_epoch``
    example_hparams: dict[str, Any] = {}

    def __init__(self) -> None:
        super().__init__()
        self.epoch = 1
        self._modified = _Modified(self.modifies_labels)

    def set_epoch(self, epoch: int) -> None:
        """Tell the loss the current epoch (1-based); call at the start of every epoch."""
        if isinstance(epoch, bool) or not isinstance(epoch, numbers.Integral) or epoch < 1:
            raise ValueError(f"epoch must be an integer >= 1 (1-based), got {epoch!r}")
        self.epoch = int(epoch)
        if not self.modified_count_per_round:
            self._modified.count = 0

    @property
    def num_modified_epoch(self) -> int:
        """Number of labels this rank modified since the last ``set_epoch`` (0 for losses that modify none)."""
        return self._modified.count

    @property
    def last_modified(self) -> Optional[tuple[Tensor, Tensor]]:
        """(rows, classes) modified by the last call on this rank (rows: dataset ids from ``index``, or batch
        positions); None for losses without per-batch modifications."""
        m = self._modified
        if m.sel is None:
            return None
        rows = m.sel // m.num_classes
        return (rows if m.index is None else m.index.long()[rows]), m.sel % m.num_classes

    def record_modified(self, sel: Tensor, num_classes: int, index: Optional[Tensor]) -> None:
        """Record the flat positions ``sel`` (into the [B, C] batch) modified by this call and count them."""
        m = self._modified
        m.sel, m.index, m.num_classes = sel, index, num_classes
        m.count += sel.numel()

    def count_modified(self, n: int) -> None:
        """Count ``n`` modified labels (set the count to ``n`` when ``modified_count_per_round``)."""
        self._modified.count = n if self.modified_count_per_round else self._modified.count + n

    def extra_param_groups(self, base_lr: float) -> list[dict[str, Any]]:
        """Optimizer parameter groups owned by the loss (ROLE's label estimates); empty for most losses.

        Use as ``torch.optim.Adam(model_groups + loss_fn.extra_param_groups(lr))``.
        """
        return []

    def forward(self, logits: Tensor, targets: Tensor, index: Optional[Tensor] = None) -> Tensor:
        """Mean loss over all B·C entries of the batch."""
        validate_batch(logits, targets, index)
        self._require_index(index)
        if not self.allow_unobserved and bool((targets == 0).any()):
            raise ValueError(
                f"loss {self.loss_name!r} needs fully observed targets but got UNOBS (0) entries, "
                f"{_first_position(targets == 0)}; use 'an' or 'iu' for partial labels"
            )
        loss = self.compute(logits, targets, index)
        if loss.dim() == 0 and not bool(torch.isfinite(loss)):  # finite logits, but too large for the loss's dtype
            raise ValueError(f"logits are finite but so large (max |logit| {float(logits.detach().abs().max()):.3g}) "
                             f"that the loss overflows to {float(loss)} in {loss.dtype}")
        return loss

    def _require_index(self, index: Optional[Tensor]) -> None:
        if self.needs_index and index is None:
            raise ValueError(f"loss {self.loss_name!r} needs index (the dataset row ids of the batch, LongTensor [B])")

    def compute(self, logits: Tensor, targets: Tensor, index: Optional[Tensor]) -> Tensor:
        raise NotImplementedError

    def get_extra_state(self) -> dict[str, Any]:
        return {"epoch": self.epoch}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.epoch = int(state.get("epoch", 1))

    def extra_repr(self) -> str:
        return f"name={self.loss_name!r}, epoch={self.epoch}"
