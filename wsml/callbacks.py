"""Hooks into the training loop, so analyses can log per-epoch numbers without editing wsml.engine.

A callback is any object with some of these methods (all optional)::

    on_train_start(ctx)                          once, before the first epoch (also after a resume)
    on_epoch_start(ctx, epoch)                   epoch: 1-based, counted over the whole run
    on_batch_end(ctx, batch, logits, loss_fn)    after each training step; batch is the loader's dict
                                                 ("input", "observed", "index" and "full" when known),
                                                 logits are detached; loss_fn.last_modified holds the
                                                 (rows, classes) the LL losses modified in this batch
    on_epoch_end(ctx, epoch) -> dict             extra columns for metrics.csv (name -> number)

``ctx`` is the :class:`TrainContext` of the run. In config files callbacks are named
(``callbacks: [memorization, modification]``): a name registered with :func:`register_callback`, or
``package.module:ClassName``. The latter names code that is imported and run, so a config is as trusted as a
script; ``wsml train --resume`` therefore never imports ``module:Class`` callbacks from a run folder's config
unless the command line names them again (``callbacks=[...]``). Under torchrun every process runs the
callbacks on its own share of the batches; only rank 0's returned metrics are written.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

HOOKS = ("on_train_start", "on_epoch_start", "on_batch_end", "on_epoch_end")
_REGISTRY: dict[str, Any] = {}
# names that live in modules imported only when asked for: name -> "module:attribute"
_LAZY: dict[str, str] = {
    "memorization": "wsml.analysis.memorization:MemorizationCallback",  # paper Fig 1 / Table 1
    "memorization_eval": "wsml.analysis.memorization:MemorizationEvalCallback",  # Table 1, eval-mode pass
    "modification": "wsml.analysis.modification:ModificationCallback",  # paper Fig 3 / Fig 4
}


@dataclass
class TrainContext:
    """What a callback may look at: the config, the model, the loss, the data and where the run writes."""

    cfg: Any
    model: Any
    loss_fn: Any
    index: Any  # wsml.data.DatasetIndex
    run_dir: Optional[Path]
    device: Any
    rank: int = 0
    world_size: int = 1
    stage: str = "end-to-end"  # "end-to-end", "linear" (LinearInit stage 1) or "finetune" (stage 2)
    epoch: int = 0
    state: dict = field(default_factory=dict)  # free space for callbacks


class Callback:
    """Base class with no-op hooks (subclassing it is optional)."""

    def on_train_start(self, ctx: TrainContext) -> None:
        pass

    def on_epoch_start(self, ctx: TrainContext, epoch: int) -> None:
        pass

    def on_batch_end(self, ctx: TrainContext, batch: dict, logits: Any, loss_fn: Any) -> None:
        pass

    def on_epoch_end(self, ctx: TrainContext, epoch: int) -> Optional[dict]:
        return None


def register_callback(name: str, target: Optional[str] = None) -> Callable:
    """Register a callback class (decorator) or, with ``target="module:Class"``, a lazily imported one."""
    key = name.lower()
    if target is not None:
        _LAZY[key] = target
        return lambda cls: cls

    def deco(cls):
        _REGISTRY[key] = cls
        return cls

    return deco


def available_callbacks() -> list[str]:
    return sorted(set(_REGISTRY) | set(_LAZY))


def _import(target: str, name: str) -> Any:
    module, _, attr = target.partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"callback {name!r}: cannot import {target!r} ({e})") from None


def build_callbacks(names: list) -> list:
    """Instantiate callbacks from config names (registry names or ``module:Class``)."""
    out = []
    for name in names:
        key = str(name).lower()
        if key in _REGISTRY:
            cls = _REGISTRY[key]
        elif key in _LAZY:
            cls = _import(_LAZY[key], name)
        elif ":" in str(name):
            cls = _import(str(name), name)
        else:
            raise ValueError(f"unknown callback {name!r}; available: {', '.join(available_callbacks()) or 'none'}"
                             " (or give package.module:ClassName)")
        obj = cls() if isinstance(cls, type) else cls
        if not any(callable(getattr(obj, hook, None)) for hook in HOOKS):
            raise ValueError(f"callback {name!r}: {type(obj).__name__} has none of the callback methods "
                             f"({', '.join(HOOKS)})")
        out.append(obj)
    return out


class CallbackList:
    """Calls the hook on every callback that has it; merges the epoch-end metrics."""

    def __init__(self, callbacks: list):
        self.callbacks = list(callbacks)

    def _call(self, hook: str, *args) -> list:
        return [getattr(cb, hook)(*args) for cb in self.callbacks if hasattr(cb, hook)]

    def on_train_start(self, ctx: TrainContext) -> None:
        self._call("on_train_start", ctx)

    def on_epoch_start(self, ctx: TrainContext, epoch: int) -> None:
        self._call("on_epoch_start", ctx, epoch)

    def on_batch_end(self, ctx: TrainContext, batch: dict, logits: Any, loss_fn: Any) -> None:
        if self.callbacks:
            self._call("on_batch_end", ctx, batch, logits, loss_fn)

    def on_epoch_end(self, ctx: TrainContext, epoch: int) -> dict:
        merged: dict = {}
        for extra in self._call("on_epoch_end", ctx, epoch):
            merged.update(extra or {})
        return merged
