"""Name -> loss registry (timm-style): ``register_loss`` decorator, ``build_loss`` and ``available_losses``.

Names are case-insensitive and ``_`` is read as ``-`` (the one normalisation of :mod:`wsml.registry`), so
``"LL-R"``, ``"ll_r"`` and ``"ll-r"`` are the same loss. Hyper-parameters are checked against the loss
constructor's signature, so a typo such as ``build_loss("ll-r", delta=0.2)`` fails with a message listing the
valid names instead of being ignored.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from wsml.registry import Registry, normalise

if TYPE_CHECKING:
    from wsml.losses.base import PartialLoss

LOSSES = Registry("loss")  # canonical name -> PartialLoss subclass

T = TypeVar("T", bound=type)

# names that once meant something else: a clear error instead of silently running a different method
_RETIRED = {"imcl": "loss 'imcl' was removed: wsml does not implement IMCL (Huynh & Elhamifar 2020); what it used to "
                    "run under that name is 'iu-smooth' (Naive IU + graph smoothness), which is not IMCL"}


def register_loss(name: str, aliases: tuple[str, ...] = ()) -> Callable[[T], T]:
    """Class decorator registering a ``PartialLoss`` subclass under ``name`` (and ``aliases``)."""

    def deco(cls: T) -> T:
        LOSSES.register(normalise(name), cls, aliases=aliases)
        cls.loss_name = normalise(name)
        return cls

    return deco


def available_losses() -> list[str]:
    """Canonical names of all registered losses, sorted."""
    return LOSSES.available()


def resolve_loss_name(name: str) -> str:
    """Canonical name for ``name`` or an alias; ValueError listing the valid names when unknown."""
    if isinstance(name, str) and normalise(name) in _RETIRED:
        raise ValueError(_RETIRED[normalise(name)])
    return LOSSES.resolve(name)


def loss_hparams(name: str) -> dict[str, Any]:
    """The hyper-parameters of loss ``name`` with their defaults (``inspect.Parameter.empty`` = required)."""
    cls = LOSSES.get(resolve_loss_name(name))
    params = inspect.signature(cls.__init__).parameters
    return {p.name: p.default for p in params.values() if p.name != "self" and p.kind is p.KEYWORD_ONLY}


def build_loss(name: str, **hparams: Any) -> PartialLoss:
    """Build the loss ``name`` (see ``available_losses()``) with keyword hyper-parameters.

    Example: ``build_loss("LL-R", delta_rel=0.2)``. Unknown names, unknown hyper-parameters and missing
    required ones raise ValueError naming them and the valid choices; invalid values are rejected by the
    loss constructor, also with ValueError.
    """
    canonical = resolve_loss_name(name)
    valid = loss_hparams(canonical)
    unknown = sorted(set(hparams) - set(valid))
    if unknown:
        raise ValueError(
            f"unknown hyper-parameter(s) {', '.join(unknown)} for loss {canonical!r}; "
            f"valid: {', '.join(valid) if valid else '(none)'}"
        )
    missing = sorted(k for k, v in valid.items() if v is inspect.Parameter.empty and k not in hparams)
    if missing:
        raise ValueError(f"loss {canonical!r} needs hyper-parameter(s): {', '.join(missing)}")
    return LOSSES.get(canonical)(**hparams)
