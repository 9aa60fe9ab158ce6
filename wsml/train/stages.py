"""Stage bookkeeping of the training loop: each stage's set-up, LinearInit's two stages and early stopping.

LinearInit (paper §4: "train 25 epochs with the feature extractor frozen, then fine-tune the best model for 10
epochs"): the run's result is the best *stage-2* epoch on val, as Cole et al. report the best fine-tuning epoch;
stage 1's best is kept apart (``best_stage1.pt``, ``summary["stage1"]``). Stage 1 may use its own optimizer,
learning rate, weight decay and batch size (``train.linear_*``; Cole et al. train the linear phase with Adam at a
fixed lr and batch size). ROLE's label estimates are carried from the best stage-1 model into stage 2, as Cole et
al. pass them on. Early stopping (``train.early_stop_drop``): the authors' code stops when val mAP falls more
than 3 points below the best so far.
"""

from __future__ import annotations

import copy
import inspect
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from wsml.checkpoint import atomic_write, load_checkpoint, load_module_state
from wsml.config import Config
from wsml.distributed import barrier
from wsml.partial_val import val_summary
from wsml.train import builders as B


def stage_config(cfg: Config, stage_name: str) -> Config:
    """The config a stage trains with: LinearInit stage 1 ("linear") applies the ``train.linear_*`` settings.

    ``train.linear_lr`` is the head's lr itself (no ``head_lr_mult``: stage 1 trains the head only, as Cole et
    al.'s linear phase); unset fields keep the run's ``optim`` / ``train.batch_size``.
    """
    t = cfg.train
    if stage_name != "linear":
        return cfg
    out = copy.deepcopy(cfg)
    if t.linear_optim:
        out.optim.name = t.linear_optim
    if t.linear_lr is not None:
        out.optim.lr, out.optim.head_lr_mult = t.linear_lr, 1.0
    if t.linear_weight_decay is not None:
        out.optim.weight_decay = t.linear_weight_decay
    if t.linear_batch_size:
        out.train.batch_size = t.linear_batch_size
    return out


def stage1_best(run_dir: Path) -> Path:
    """The checkpoint stage 2 starts from: ``best_stage1.pt`` once stage 2 has begun (``best.pt`` may then hold a
    stage-2 epoch: a run killed after that write resumes at the boundary), else ``best.pt``."""
    kept = run_dir / "best_stage1.pt"
    return kept if kept.is_file() else run_dir / "best.pt"


def start_finetune(cfg: Config, run_dir: Path, model: torch.nn.Module, loss_fn: torch.nn.Module, dataset: Any,
                   device: torch.device, state: dict, main: bool) -> tuple[torch.nn.Module, int]:
    """LinearInit stage 2's start: the best stage-1 model, and the loss fresh (``train.stage2_loss=restart``, with
    what Cole et al. carry over) or in its best stage-1 state (``continue``). Returns (the loss to train with, the
    stage-1 epoch it starts from)."""
    barrier()
    src = stage1_best(run_dir)
    best = load_checkpoint(src, map_location=device, required=("model", "loss", "epoch"))
    load_module_state(model, best["model"], src, "model")
    if cfg.train.stage2_loss == "restart":
        loss_fn = B.build_loss_fn(cfg, dataset, log=lambda *a: None).to(device)
        carry_over(loss_fn, best["loss"])  # ROLE: the label estimates, as Cole et al.
    else:
        load_module_state(loss_fn, best["loss"], src, "loss")
    begin_stage2(state, run_dir, best, main)
    return loss_fn, best["epoch"]


def begin_stage2(state: dict, run_dir: Path, best: dict, main: bool) -> None:
    """Keep stage 1's best (epoch, val mAP and the score that picked it; ``best_stage1.pt``, written once and
    atomically) and restart the val-best tracking, so that the run's result (best.pt, the summary) is the best
    stage-2 epoch even when a stage-1 epoch scored higher."""
    state["stage1"] = {"best_epoch": int(best["epoch"]), **val_summary(best)}  # val_map is the mAP, as in the summary
    state["best_val_map"], state["best_epoch"] = -math.inf, 0
    if main and not (run_dir / "best_stage1.pt").is_file():
        data = (run_dir / "best.pt").read_bytes()
        atomic_write(run_dir / "best_stage1.pt", lambda f: f.write(data))


def carry_over(loss_fn: torch.nn.Module, stage1_state: dict[str, Any]) -> None:
    """Give a fresh stage-2 loss what Cole et al. pass on from stage 1 (ROLE: the label estimates)."""
    if hasattr(loss_fn, "carry_over"):
        loss_fn.carry_over(stage1_state)


def early_stop(state: dict, stage_name: str, drop: float, patience: int) -> Optional[str]:
    """Why the stage stops after its latest epoch, or None; a stop is recorded in ``state["stopped"]`` so that a
    resume does not train the stage on. Two rules, one per reference, both off at 0:

    * ``drop`` (``train.early_stop_drop``): the val score fell more than ``drop`` points below the stage's best
      (the LL authors' train.py: ``bestmap_val - map_val > 3``);
    * ``patience`` (``train.early_stop_patience``): that many epochs in a row without a better val score (EM+APL's
      authors: 1, stop at the first epoch that does not improve; equal is not better).

    The val score is what selects epochs: val mAP, or PU-AUC when val labels are partial.
    """
    vals = [r.get("val_score", r["val_map"]) for r in state["history"] if r["stage"] == stage_name]
    reason = None
    if drop > 0 and max(vals) - vals[-1] > drop:
        reason = f"val {vals[-1]:.2f} is more than {drop:g} below the stage's best {max(vals):.2f}"
    elif 0 < patience < len(vals) and max(vals[-patience:]) <= max(vals[:-patience]):
        reason = f"no better val score for {patience} epoch(s)"
    if reason:
        state.setdefault("stopped", {})[stage_name] = int(state["epoch"])
    return reason


def stage_done(state: dict, stage_name: str, last_epoch: int) -> bool:
    """Whether a stage needs no more epochs: all of them ran, or it stopped early (also after a resume)."""
    return state["epoch"] >= last_epoch or stage_name in state.get("stopped", {})


@dataclass
class StageParts:
    """What one stage trains and with what: the (DDP-wrapped) network, its eval forward, loaders, optimisation."""

    net: Any
    forward_eval: Callable
    train_loader: Any
    val_loader: Any
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler


def stage_parts(run: Any, stage: Any, val_loader: Any, resume_from: Optional[dict]) -> StageParts:
    """A stage's network (DDP-wrapped under torchrun), loaders, optimizer, lr schedule and gradient scaler, with their
    saved states when resuming inside the stage; ``run`` is the training loop's shared state (wsml.train.engine._Run).
    LinearInit stage 1 trains only the head, on cached backbone features, with its own optimizer, lr and batch size
    (``train.linear_*``); the backbone never runs then."""
    cfg, model, scfg = run.cfg, run.model, stage_config(run.cfg, stage.name)
    model.freeze_backbone(stage.cached)
    if stage.cached:
        from wsml.train.linearinit import HeadOnly, cached_feature_loaders

        train_loader, val_loader = cached_feature_loaders(scfg, model, run.dataset, run.dist, run.device,
                                                          run.run_dir, run.mean_std, run.say)
        net, forward_eval = HeadOnly(model), model.forward_head
        groups = [{"name": "head", "params": list(model.head.parameters()),
                   "lr": scfg.optim.lr * scfg.optim.head_lr_mult}]
    else:
        train_loader = B.build_loader(cfg, run.dataset, "train", run.dist, train=True, mean_std=run.mean_std)
        net, forward_eval = model, model
        groups = model.param_groups(cfg.optim.lr, cfg.optim.head_lr_mult)
    optimizer = B.build_optimizer(scfg, groups + B.loss_param_groups(scfg, run.loss_fn))
    scheduler = B.build_scheduler(scfg, optimizer, stage.last - stage.first + 1)
    scaler = torch.amp.GradScaler("cuda", enabled=run.dtype == torch.float16)
    if resume_from is not None:
        last = run.run_dir / "last.pt"
        load_module_state(optimizer, resume_from["optimizer"], last, "optimizer")
        if scheduler is not None:
            load_module_state(scheduler, resume_from["scheduler"], last, "scheduler")
        load_module_state(scaler, resume_from["scaler"], last, "gradient scaler")
    if run.dist.enabled:
        # stage 1: the frozen backbone's buffers never change, so they need no sync at each forward (torch
        # >= 2.14 names the option forward_sync_buffers and deprecates broadcast_buffers)
        sync = "forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(DDP).parameters \
            else "broadcast_buffers"
        net = DDP(net, device_ids=[run.device.index] if run.device.type == "cuda" else None,
                  **{sync: not stage.cached})
    return StageParts(net, forward_eval, train_loader, val_loader, optimizer, scheduler, scaler)
