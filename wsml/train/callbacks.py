"""Hooks into the training loop, so analyses can log per-epoch numbers without editing wsml.train.engine.

A callback is any object with some of these methods (all optional)::

    on_train_start(ctx)                          once, before the first epoch; after a resume ctx.epoch is
                                                 the last epoch done, so a callback can reload its own state
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

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from wsml.registry import Registry, import_target

HOOKS = ("on_train_start", "on_epoch_start", "on_batch_end", "on_epoch_end")
CALLBACKS = Registry("callback", hint=" (or give package.module:ClassName)")
# names that live in modules imported only when asked for
CALLBACKS.register("memorization", lazy="wsml.analysis.memorization:MemorizationCallback")  # paper Fig 1 / Table 1
CALLBACKS.register("memorization_eval", lazy="wsml.analysis.memorization:MemorizationEvalCallback")  # Table 1, eval
CALLBACKS.register("modification", lazy="wsml.analysis.modification:ModificationCallback")  # paper Fig 3 / Fig 4


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
    epoch: int = 0  # the current epoch; in on_train_start the epochs already trained (a resume continues after)
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
    return CALLBACKS.register(name, lazy=target)


def available_callbacks() -> list[str]:
    return CALLBACKS.available()


def build_callbacks(names: list) -> list:
    """Instantiate callbacks from config names (registry names or ``module:Class``)."""
    out = []
    for name in names:
        if str(name) in CALLBACKS or ":" not in str(name):
            cls = CALLBACKS.get(str(name))
        else:
            cls = import_target(str(name), f"callback {name!r}")
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
