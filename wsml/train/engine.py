"""The training loop (one process, or torchrun DDP), readable top to bottom.

    train(cfg)  ->  run folder  <run.out>/<run.name>/
        config.yaml          the resolved config (what `wsml train --resume` and `wsml eval` read back)
        metrics.csv          per epoch: stage, train loss, val mAP, modified labels, lr, time (+ callbacks' columns)
        last.pt / best.pt    the last epoch (everything needed to resume) / the best val mAP so far
        predictions_test.npz sigmoid scores of the best checkpoint on the test split, with row ids
        summary.json         best epoch, its val mAP, its test mAP

Schemes (paper §4, appendix A). *End-to-end*: backbone and head trained together, head lr 10× the
backbone's. *LinearInit*: stage 1 ("linear") trains only the head for ``linear_epochs`` on backbone features
extracted once into an on-disk cache (so no augmentation there: the flips happen in image space); stage 2
("finetune") starts from the best stage-1 model and fine-tunes everything for ``epochs``. The run's result is
the best stage-2 epoch (stage 1's best stays in summary["stage1"] and best_stage1.pt); stage 1 may have its own
optimizer, lr and batch size (``train.linear_*``) — see wsml/train/stages.py, also for early stopping
(``train.early_stop_drop``, ``train.early_stop_patience``).

Epochs are numbered over the whole run (1..linear_epochs+epochs). The loss sees ``set_epoch(t)`` with t
restarting at 1 in stage 2 (``train.stage2_loss=restart``: a fresh loss, as the reference code's separate
fine-tuning run) or continuing (``continue``: the best stage-1 loss state, epoch count going on).

Determinism: every epoch's randomness (shuffle order, flips, dropout) is seeded from (seed, epoch, rank), and
last.pt also holds the RNG states, so a resumed run reproduces an uninterrupted one exactly on CPU.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch

from wsml._types import PathLike
from wsml.checkpoint import (
    epoch_seed,
    load_checkpoint,
    load_module_state,
    rng_state,
    save_checkpoint,
    seed_everything,
    set_rng_state,
    write_csv,
    write_json,
)
from wsml.config import Config
from wsml.distributed import (
    DistInfo,
    all_reduce_mean,
    all_reduce_sum,
    average_gradients,
    barrier,
    broadcast_object,
    cleanup,
    init_distributed,
)
from wsml.evaluation import predict_split, save_predictions, scores_on_main, split_group_map, too_large
from wsml.partial_val import (
    describe,
    final_line,
    final_test_chunked,
    final_test_scores,
    score_val,
    score_val_blocked,
    test_summary,
    val_summary,
)
from wsml.progress import run_folder_line
from wsml.train import builders as B
from wsml.train.callbacks import CallbackList, TrainContext, build_callbacks
from wsml.train.epoch_end import feed_train_scores, wants_train_scores
from wsml.train.run_dir import LAST_KEYS, check_resume, new_run_dir, saved_epoch, start_files
from wsml.train.stages import StageParts, early_stop, stage_done, stage_parts, start_finetune


@dataclass
class Stage:
    name: str  # "end-to-end", "linear" (LinearInit stage 1) or "finetune" (LinearInit stage 2)
    first: int  # first epoch of the stage (1-based, counted over the run)
    last: int  # last epoch of the stage
    cached: bool = False  # train the head on cached backbone features


def plan_stages(cfg: Config) -> list[Stage]:
    if cfg.train.scheme == "linearinit":  # train.epochs=0: the head on cached features only (CPU own-data default)
        e1 = cfg.train.linear_epochs
        return [Stage("linear", 1, e1, cached=True)] + (
            [Stage("finetune", e1 + 1, e1 + cfg.train.epochs)] if cfg.train.epochs else [])
    return [Stage("end-to-end", 1, cfg.train.epochs)]


def train(cfg: Config, *, resume: Optional[PathLike] = None, callbacks: Sequence = ()) -> dict:
    """Train as ``cfg`` says (or continue the run folder ``resume``); return the summary (also summary.json)."""
    dist_info = init_distributed(cfg.train.device)
    try:
        summary = _train(cfg, dist_info, resume, list(callbacks))
        barrier()  # every rank done (rank 0 writes last) before any leaves the group; not on errors: no hang
        return summary
    finally:
        if dist_info.enabled:
            cleanup()


def _train(cfg: Config, dist_info: DistInfo, resume, extra_callbacks: list) -> dict:
    started = time.time()
    main = dist_info.is_main
    say = partial(print, flush=True) if main and not cfg.run.quiet else (lambda *a, **k: None)
    device = B.resolve_device(cfg.train.device, dist_info)
    B.configure_determinism(cfg.train.deterministic, device)
    stages = plan_stages(cfg)
    total = stages[-1].last
    ckpt = None
    if resume is not None:  # the same run, or refuse before anything is loaded or written
        ckpt = load_checkpoint(Path(resume) / "last.pt", required=LAST_KEYS)
        check_resume(cfg, ckpt, resume, total)

    # 1. Data, model, loss, callbacks (same seed on every rank: the replicas start identical).
    seed_everything(cfg.train.seed)
    dataset = B.load_index(cfg.data, dist_info)
    info = B.model_info(cfg, dataset)
    model = B.build_model(cfg, info=info).to(device)
    loss_fn = B.build_loss_fn(cfg, dataset, log=say).to(device)
    val_loader = B.build_loader(cfg, dataset, "val", dist_info, train=False, mean_std=model.default_mean_std)
    cbs = CallbackList(build_callbacks(cfg.callbacks) + extra_callbacks)

    # 2. The run folder; config.yaml is written once every check passed (a resume: once its states are loaded).
    run_dir, config_written = _run_folder(cfg, resume, main, fresh=ckpt is None, say=say)
    run = _Run(cfg, dist_info, device, B.amp_dtype(cfg.train.amp, device), dataset, model, loss_fn, info, run_dir, say)
    ctx = TrainContext(cfg, model, loss_fn, dataset, run_dir, device, dist_info.rank, dist_info.world_size)
    state, pending_rng = _resume_state(run, ckpt)
    started -= state.get("elapsed_s", 0.0)  # a resumed run's wall time counts the time before the interruption
    ctx.epoch = state["epoch"]  # the epochs already trained: 0, or where a resume continues
    cbs.on_train_start(ctx)

    try:
        for stage in stages:
            if stage_done(state, stage.name, stage.last):
                continue  # finished (or stopped early) before the resume
            mid_stage = state["epoch"] >= stage.first  # resuming inside this stage
            if pending_rng is not None and not mid_stage:  # resuming at a stage boundary
                set_rng_state(pending_rng)
                pending_rng = None
            ctx.stage = stage.name

            # 3. Stage set-up: LinearInit stage 2 starts from the best stage-1 model; then what trains, on what.
            if stage.name == "finetune" and not mid_stage:
                run.loss_fn, best_epoch = start_finetune(cfg, run_dir, model, run.loss_fn, dataset, device, state, main)
                ctx.loss_fn = run.loss_fn
                say(f"LinearInit stage 2: fine-tuning everything from the best stage-1 epoch {best_epoch}")
            parts = stage_parts(run, stage, val_loader, ckpt if mid_stage else None)
            if mid_stage:
                set_rng_state(pending_rng)
                pending_rng = None
            if not config_written:
                config_written = start_files(cfg, run_dir)

            # 4. The epochs of this stage: train, then score val.
            for epoch in range(max(stage.first, state["epoch"] + 1), stage.last + 1):
                t0 = time.time()
                ctx.epoch = epoch
                seed_everything(epoch_seed(cfg.train.seed, epoch, dist_info.rank))
                loss_epoch = epoch - stage.first + 1 if cfg.train.stage2_loss == "restart" else epoch
                run.loss_fn.set_epoch(loss_epoch)
                B.start_epoch(parts.train_loader, epoch, cfg.train.seed, dist_info.rank)
                cbs.on_epoch_start(ctx, epoch)
                lr = parts.optimizer.param_groups[0]["lr"]
                train_loss, modified = train_one_epoch(parts.net, parts.train_loader, run.loss_fn, parts.optimizer,
                                                       parts.scaler, cfg, device, run.dtype, cbs, ctx,
                                                       desc=f"epoch {epoch}/{total}")
                if parts.scheduler is not None:
                    parts.scheduler.step()
                val = _validate(run, parts, stage, loss_epoch)  # mAP, or PU-AUC when val labels are partial
                row = {"epoch": epoch, "stage": stage.name, "train_loss": all_reduce_mean(train_loss, device),
                       "val_map": val["map"], "val_score": val["select"], "val_criterion": val["criterion"],
                       "num_modified": modified, "lr": lr, "time_s": round(time.time() - t0, 3)}
                row.update(cbs.on_epoch_end(ctx, epoch))
                improved = _record_epoch(state, row, epoch, val["select"])
                state["elapsed_s"] = round(time.time() - started, 2)
                stop = early_stop(state, stage.name, cfg.train.early_stop_drop, cfg.train.early_stop_patience)

                # 5. Files (rank 0): best.pt when val mAP improved, then last.pt and metrics.csv.
                if main:
                    _save_epoch(run, parts, state, stage.name, epoch, val, improved)
                barrier()
                say(f"epoch {epoch:>3}/{total} {stage.name:<10} loss {row['train_loss']:.4f}  {describe(val)}"
                    f"  modified {modified:>6}  lr {lr:.2e}  {row['time_s']:6.1f}s{'  *best' if improved else ''}")
                if stop:
                    say(f"early stop: {stop}")
                    break
    except KeyboardInterrupt:
        if main:
            _report_interrupt(run_dir, during="training")
        raise
    if not config_written:  # a resume with every epoch done: only the final evaluation is left
        start_files(cfg, run_dir)

    # 6. The final test pass: the best checkpoint (selected on val) on the test split; summary.json.
    return _finish(run, state, total, started)


@dataclass
class _Run:
    """What the loop's helpers share: the settings, the data set, the model and its loss, where files go."""

    cfg: Config
    dist: DistInfo
    device: torch.device
    dtype: Optional[torch.dtype]  # autocast dtype (train.amp), None for fp32
    dataset: Any  # wsml.data.DatasetIndex
    model: Any  # wsml.models.MultiLabelModel
    loss_fn: Any  # wsml.losses.PartialLoss (replaced by a fresh one at LinearInit stage 2 with stage2_loss=restart)
    info: dict  # the model's build information, kept in every checkpoint
    run_dir: Path
    say: Callable

    @property
    def mean_std(self) -> Optional[tuple]:
        return self.model.default_mean_std


def _run_folder(cfg: Config, resume: Optional[PathLike], main: bool, fresh: bool, say: Callable) -> tuple[Path, bool]:
    """(the run folder, whether this process is done with config.yaml): a new folder (named on rank 0), or the
    resumed one; rank 0 writes config.yaml now for a fresh run, after loading the states for a resume."""
    run_dir = Path(resume) if resume is not None else Path(broadcast_object(str(new_run_dir(cfg)) if main else None))
    config_written = not main
    if main and fresh:
        config_written = start_files(cfg, run_dir)
    requested = cfg.run.name or f"{Path(cfg.data.path).name}-{cfg.loss.name.lower()}-{cfg.train.scheme}"
    say(run_folder_line(run_dir, run_dir.name if resume is not None else requested))
    return run_dir, config_written


def _resume_state(run: _Run, ckpt: Optional[dict]) -> tuple[dict, Optional[dict]]:
    """(the loop's state, the RNG states to restore where the resumed epoch starts): fresh, or from last.pt, whose
    model and loss states are loaded here."""
    if ckpt is None:
        return {"epoch": 0, "best_val_map": -math.inf, "best_epoch": 0, "history": []}, None
    load_module_state(run.model, ckpt["model"], run.run_dir / "last.pt", "model")
    load_module_state(run.loss_fn, ckpt["loss"], run.run_dir / "last.pt", "loss")
    run.say(f"resuming {run.run_dir} after epoch {ckpt['state']['epoch']}")
    return ckpt["state"], ckpt["rng"]


def _record_epoch(state: dict, row: dict, epoch: int, score: float) -> bool:
    """Add the epoch's metrics row to the state; whether its val ``score`` is the best so far (then it becomes so)."""
    state["history"].append(row)
    state["epoch"] = epoch
    improved = score > state["best_val_map"]
    if improved:
        state["best_val_map"], state["best_epoch"] = score, epoch
    return improved


def _validate(run: _Run, parts: StageParts, stage: Stage, loss_epoch: int) -> dict:
    """The epoch's val result (``score_val``: mAP, or PU-AUC when val labels are partial); first, for EM+APL and
    Curriculum labelling, the eval-mode training scores their loss labels from."""
    run.model.eval()
    if wants_train_scores(run.loss_fn, loss_epoch):
        scoring = parts.train_loader if stage.cached else B.build_loader(run.cfg, run.dataset, "train", run.dist,
                                                                         train=False, mean_std=run.mean_std)
        feed_train_scores(run.loss_fn, parts.forward_eval, scoring, run.dataset["train"], run.device)
    if too_large(len(run.dataset["val"]), run.dataset.num_classes):  # scores to disk, rank 0 scores them blocked
        return scores_on_main(parts.forward_eval, parts.val_loader, run.device, run.run_dir, "val",
                              run.dataset.num_classes, run.dist, lambda f: score_val_blocked(run.dataset, f))
    scores, rows = predict_split(parts.forward_eval, parts.val_loader, run.device)
    return score_val(run.dataset, scores, rows)


def _save_epoch(run: _Run, parts: StageParts, state: dict, stage_name: str, epoch: int, val: dict,
                improved: bool) -> None:
    """Rank 0's files after an epoch: best.pt when the val score improved, then last.pt (all a resume needs: the
    model, loss, optimizer, scheduler, scaler and RNG states) and metrics.csv."""
    model, loss_fn, cfg = run.model, run.loss_fn, run.cfg
    if improved:
        save_checkpoint({"model": model.state_dict(), "loss": loss_fn.state_dict(), "epoch": epoch,
                         "stage": stage_name, "val_map": val["select"], "val_map_value": val["map"],
                         "val_criterion": val["criterion"], "config": cfg.to_dict(),
                         "model_info": run.info}, run.run_dir / "best.pt")
    save_checkpoint({"model": model.state_dict(), "loss": loss_fn.state_dict(),
                     "optimizer": parts.optimizer.state_dict(),
                     "scheduler": parts.scheduler.state_dict() if parts.scheduler is not None else None,
                     "scaler": parts.scaler.state_dict(), "rng": rng_state(), "state": state,
                     "stage": stage_name, "epoch": epoch, "config": cfg.to_dict(), "model_info": run.info},
                    run.run_dir / "last.pt")
    write_csv(run.run_dir / "metrics.csv", state["history"])


def _report_interrupt(run_dir: Path, during: str) -> None:
    """Ctrl-C: say what is on disk (read back, not assumed) and how to continue."""
    done = saved_epoch(run_dir)
    if done == 0:
        print(f"\ninterrupted during {during}: no completed epoch is saved in {run_dir}; nothing to resume",
              file=sys.stderr)
        return
    finish = (f"; training is complete, so `wsml eval {run_dir}` gives the test mAP" if during != "training" else "")
    print(f"\ninterrupted during {during}: {run_dir / 'last.pt'} holds epoch {done}{finish}; continue with\n"
          f"  wsml train --resume {run_dir}", file=sys.stderr)


def _finish(run: _Run, state: dict, total: int, started: float) -> dict:
    """The final test pass and summary.json (rank 0); a Ctrl-C here says that training itself is complete."""
    try:
        summary = _test_pass(run, total)
        summary.update({k: state[k] for k in ("stage1", "stopped") if k in state})  # LinearInit stage 1; early stops
    except KeyboardInterrupt:
        if run.dist.is_main:
            _report_interrupt(run.run_dir, during="the final test evaluation")
        raise
    summary["wall_time_s"] = round(time.time() - started, 2)
    if run.dist.is_main:
        write_json(run.run_dir / "summary.json", summary)
    run.say(final_line(summary, "test" in run.dataset.splits))
    return summary


def _test_pass(run: _Run, total: int) -> dict:
    """Test mAP of the best checkpoint (selected on val), its predictions; the summary without its wall time."""
    cfg, dataset, model, run_dir, device = run.cfg, run.dataset, run.model, run.run_dir, run.device
    barrier()
    best = load_checkpoint(run_dir / "best.pt", map_location=device, required=("model", "epoch", "stage", "val_map"))
    load_module_state(model, best["model"], run_dir / "best.pt", "model")
    model.freeze_backbone(False)
    model.eval()
    summary = {"run_dir": str(run_dir), "dataset": dataset.name, "loss": cfg.loss.name, "scheme": cfg.train.scheme,
               "backbone": cfg.model.backbone, "epochs": total, "best_epoch": best["epoch"],
               "best_stage": best["stage"], "val_map": best["val_map"], "world_size": run.dist.world_size,
               **val_summary(best)}
    if cfg.loss.delta_rel == "auto" and hasattr(run.loss_fn, "delta_rel"):
        summary["delta_rel"] = run.loss_fn.delta_rel  # the value loss.delta_rel=auto chose, for report & analyses
    if "test" in dataset.splits:  # a user's own data may come without a test split: no test_map then
        test_loader = B.build_loader(cfg, dataset, "test", run.dist, train=False, mean_std=run.mean_std,
                                     on_bad_image="skip")  # a bad test image never throws the run away
        if too_large(len(dataset["test"]), dataset.num_classes):  # predictions_test.chunks/, metrics blocked
            final_test_chunked(model, test_loader, device, summary, run_dir, dataset, run.dist)
            return summary
        scores, rows = final_test_scores(model, test_loader, device, summary, run_dir)
        if rows is not None:
            summary.update(test_summary(dataset, scores, rows))  # mAP under the policy the test labels call for
            groups = split_group_map(dataset, "test", scores, rows)  # OpenImages: mAP per class group (Table 3)
            if groups is not None:
                summary["test_group_map"] = groups
            if run.dist.is_main:
                save_predictions(run_dir / "predictions_test.npz", scores, rows, dataset.class_names)
    return summary


def train_one_epoch(net, loader, loss_fn, optimizer, scaler, cfg: Config, device: torch.device,
                    dtype: Optional[torch.dtype], cbs: CallbackList, ctx: TrainContext, desc: str = "") -> tuple:
    """One pass over the training loader; returns (mean loss of this process, labels modified by the loss)."""
    from wsml.progress import progress

    net.train()
    own = getattr(loss_fn, "own_optimizer", None)  # ROLE's estimates: their own Adam (Cole et al.)
    total, count = torch.zeros((), dtype=torch.float64, device=device), 0
    for batch in progress(loader, desc, enabled=not cfg.run.quiet and ctx.rank == 0):
        if batch is None:
            continue
        x = batch["input"].to(device, non_blocking=True)
        targets = batch["observed"].to(device, non_blocking=True)
        rows = torch.as_tensor(batch["index"], dtype=torch.long).to(device, non_blocking=True)  # data set row ids
        with B.autocast(device, dtype):
            logits = net(x)
        loss = loss_fn(logits.float(), targets, index=rows)
        optimizer.zero_grad(set_to_none=True)
        if own is not None:
            own.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        average_gradients([p for p in loss_fn.parameters() if p.requires_grad])  # ROLE estimates: not DDP's
        if cfg.optim.grad_clip > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]],
                                           cfg.optim.grad_clip)
        scaler.step(optimizer)
        if own is not None:
            scaler.step(own)
        scaler.update()
        total += loss.detach() * len(x)  # summed on the device: no host sync per step
        count += len(x)
        cbs.on_batch_end(ctx, batch, logits.detach(), loss_fn)
    modified = int(getattr(loss_fn, "num_modified_epoch", 0) or 0)  # this rank's share (LL losses; else 0)
    return float(total) / max(count, 1), all_reduce_sum(modified, device)
