"""Losses for multi-label learning from partial labels, built by name: ``build_loss("LL-R", delta_rel=0.2)``.

Families (one module each): ``bce`` (full, an, iu, wan, lsan), ``epr``, ``role``, ``large_loss``
(ll-r, ll-ct, ll-cp) and the later methods ``asl``, ``hill_splc`` (hill, splc), ``em`` (em, em-apl),
``curriculum`` and ``iu_smooth`` (iu-smooth: IU + graph smoothness, not IMCL). Every loss is a ``PartialLoss``:
call ``set_epoch(epoch)`` (1-based) at the start of each epoch and ``loss_fn(logits, targets, index=idx)`` per
batch; docs/design.md §2 gives the exact semantics and ``reference`` the LL methods in a few readable lines.
"""

from wsml.losses import asl, bce, curriculum, em, epr, hill_splc, iu_smooth, large_loss, role  # noqa: F401  (register)
from wsml.losses.base import PartialLoss, validate_batch
from wsml.losses.large_loss import LargeLoss
from wsml.losses.registry import available_losses, build_loss, loss_hparams, register_loss, resolve_loss_name

__all__ = [
    "LargeLoss",
    "PartialLoss",
    "available_losses",
    "build_loss",
    "loss_hparams",
    "register_loss",
    "resolve_loss_name",
    "validate_batch",
]
