"""Memorization in WSML (paper §3.2, Fig 1 and Table 1).

Under the assume-negative (AN) target every unobserved label is a negative, so the unobserved entries are
a mix of true negatives and *false negatives* (unobserved true positives). The paper observes that the
model first fits the clean entries (observed positives, true negatives) and only later memorizes the
false negatives: their loss rises, peaks in the middle of training, then falls.

``MemorizationCallback`` measures this during training from the logits the engine computes anyway, using
the training split's full labels (batch key ``"full"``). Entry groups:

* ``pos`` — observed positives (POS);
* ``tn``  — unobserved entries whose ground truth is negative (true negatives under AN);
* ``fn``  — unobserved entries whose ground truth is positive (false negatives under AN).

Observed negatives (NEG) belong to no group. The per-entry loss is BCE on the logit against the AN
target (1 for POS, 0 otherwise), whatever loss the run trains with.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from wsml.analysis._common import batch_full, run_dir_of, safe_ratio, to_numpy
from wsml.labels import POS, UNOBS

GROUPS = ("pos", "tn", "fn")
GROUP_NONE = -1
CURVE_FILE = "memorization_curve.csv"
ENTRIES_FILE = "memorization_entries.npz"


def entry_groups(observed: Any, full: Any) -> np.ndarray:
    """Group code per entry: 0 = pos, 1 = tn, 2 = fn (see module doc), -1 = none (observed negative)."""
    obs, fl = to_numpy(observed), to_numpy(full)
    if obs.shape != fl.shape:
        raise ValueError(f"entry_groups: observed {obs.shape} and full {fl.shape} labels differ in shape")
    g = np.full(obs.shape, GROUP_NONE, dtype=np.int8)
    g[obs == POS] = 0
    g[(obs == UNOBS) & (fl == 0)] = 1
    g[(obs == UNOBS) & (fl == 1)] = 2
    return g


def an_entry_loss(logits: torch.Tensor, observed: Any) -> np.ndarray:
    """Per-entry BCE [B, C] of the logits against the AN target (1 for observed positives, else 0)."""
    z = logits.detach().float()
    target = torch.as_tensor(to_numpy(observed) == POS, dtype=torch.float32, device=z.device)
    if target.shape != z.shape:
        raise ValueError(f"an_entry_loss: logits {tuple(z.shape)} and labels {tuple(target.shape)} differ in shape")
    return F.binary_cross_entropy_with_logits(z, target, reduction="none").cpu().numpy()


def group_loss_sums(loss: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sum of the per-entry loss and number of entries of each group (arrays of len(GROUPS))."""
    sums = np.array([float(loss[groups == k].sum()) for k in range(len(GROUPS))])
    counts = np.array([int((groups == k).sum()) for k in range(len(GROUPS))])
    return sums, counts


class MemorizationCallback:
    """Log per epoch the mean AN loss of observed positives, true negatives and false negatives.

    Adds ``mem_loss_pos``, ``mem_loss_tn``, ``mem_loss_fn`` to the run's metrics. In the run folder it
    writes ``memorization_curve.csv`` (the same means over ``bins_per_epoch`` consecutive parts of each
    epoch, for a finer Fig 1 curve) and ``memorization_entries.npz`` (per training entry: group code and
    the epoch of its highest per-epoch loss, for Table 1; plus the per-epoch loss history when it has at
    most ``max_history`` values).
    """

    name = "memorization"
    prefix = "mem_loss_"  # metrics columns
    curve_file = CURVE_FILE
    entries_file = ENTRIES_FILE

    def __init__(self, bins_per_epoch: int = 4, track_entries: bool = True, max_history: int = 5_000_000):
        if bins_per_epoch < 1:
            raise ValueError(f"memorization: bins_per_epoch must be >= 1, got {bins_per_epoch}")
        self.bins_per_epoch = int(bins_per_epoch)
        self.track_entries = bool(track_entries)
        self.max_history = int(max_history)
        self._reset()

    def _reset(self) -> None:
        self.run_dir: Optional[Path] = None
        self.epoch = 0
        self._batches: list[tuple[np.ndarray, np.ndarray]] = []
        self._groups = np.zeros((0, 0), dtype=np.int8)
        self._epoch_loss = np.zeros((0, 0), dtype=np.float32)
        self._peak_loss = np.zeros((0, 0), dtype=np.float32)
        self._peak_epoch = np.zeros((0, 0), dtype=np.int16)
        self._history: list[np.ndarray] = []
        self._history_off = False  # once too large, never restarted (it would miss the first epochs)
        self._rows = 0  # 1 + the largest row id seen (arrays grow by doubling; files keep this many rows)

    def on_train_start(self, ctx: Any) -> None:
        self._reset()
        self.run_dir = run_dir_of(ctx)
        if self.track_entries and self.run_dir is not None and getattr(ctx, "epoch", 0) > 0:
            self._restore(int(ctx.epoch))

    def _restore(self, done: int) -> None:
        """A resume continues Table 1 from the entries file of the epochs already trained; a file that cannot
        continue them (missing, from another epoch, without the peaks' losses) refuses the resume."""
        path = self.run_dir / self.entries_file
        why = "is missing"
        if path.is_file():
            with np.load(path, allow_pickle=False) as z:
                saved = {k: z[k] for k in z.files}
            why = (f"ends at epoch {int(saved['last_epoch'])}, not {done}" if int(saved["last_epoch"]) != done else
                   "has no peak_loss (written by an older wsml)" if "peak_loss" not in saved else "")
        if why:
            raise ValueError(f"{path} {why}: the {self.name} callback cannot continue Table 1 after epoch {done}; "
                             f"train the run again instead of resuming it, or drop the callback")
        n, c = saved["groups"].shape
        self._grow(n, c)
        self._rows = n
        self._groups[:n] = saved["groups"]
        self._peak_epoch[:n] = saved["peak_epoch"]
        self._peak_loss[:n] = saved["peak_loss"]
        self._history = list(saved["history"]) if "history" in saved else []
        self._history_off = "history" not in saved

    def on_epoch_start(self, ctx: Any, epoch: int) -> None:
        self.epoch = int(epoch)
        self._batches = []
        if self.track_entries and self._epoch_loss.size:
            self._epoch_loss[:] = np.nan

    def on_batch_end(self, ctx: Any, batch: dict, logits: torch.Tensor, loss_fn: Any = None) -> None:
        full = batch_full(batch, "memorization")
        if full is None:
            return  # no ground truth for these rows (or a loader without it): nothing to measure
        observed = to_numpy(batch["observed"])
        groups = entry_groups(observed, full)
        loss = an_entry_loss(logits, observed)
        self._batches.append(group_loss_sums(loss, groups))
        if self.track_entries:
            self._store_entries(to_numpy(batch["index"]).astype(np.int64), groups, loss)

    def _store_entries(self, rows: np.ndarray, groups: np.ndarray, loss: np.ndarray) -> None:
        n_needed, c = int(rows.max()) + 1, loss.shape[1]
        self._rows = max(self._rows, n_needed)
        if n_needed > self._groups.shape[0] or self._groups.shape[1] != c:
            self._grow(max(n_needed, 2 * self._groups.shape[0]), c)
        self._groups[rows] = groups
        self._epoch_loss[rows] = loss

    def _grow(self, n: int, c: int) -> None:
        def grown(a: np.ndarray, fill: float, dtype) -> np.ndarray:
            out = np.full((n, c), fill, dtype=dtype)
            if a.size:
                out[: a.shape[0], : a.shape[1]] = a
            return out

        self._groups = grown(self._groups, GROUP_NONE, np.int8)
        self._epoch_loss = grown(self._epoch_loss, np.nan, np.float32)
        self._peak_loss = grown(self._peak_loss, -np.inf, np.float32)
        self._peak_epoch = grown(self._peak_epoch, 0, np.int16)
        self._history = [grown(h, np.nan, np.float16) for h in self._history]

    def on_epoch_end(self, ctx: Any, epoch: int) -> dict:
        if not self._batches:
            return {}
        sums = np.stack([s for s, _ in self._batches])
        counts = np.stack([c for _, c in self._batches])
        tot_s, tot_c = sums.sum(0), counts.sum(0)
        out = {f"{self.prefix}{g}": safe_ratio(tot_s[k], tot_c[k]) for k, g in enumerate(GROUPS)}
        if self.run_dir is not None:
            self._write_curve(int(epoch), sums, counts)
        if self.track_entries and self._epoch_loss.size:
            self._update_entries(int(epoch))
        return out

    def _write_curve(self, epoch: int, sums: np.ndarray, counts: np.ndarray) -> None:
        path = self.run_dir / self.curve_file
        parts = np.array_split(np.arange(len(sums)), min(self.bins_per_epoch, len(sums)))
        new = not path.exists() or epoch <= 1
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w" if new else "a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(["epoch", "position"] + [f"loss_{g}" for g in GROUPS])
            for i, part in enumerate(parts):
                s, c = sums[part].sum(0), counts[part].sum(0)
                pos = epoch - 1 + (i + 1) / len(parts)
                w.writerow([epoch, f"{pos:.4f}"] + [f"{safe_ratio(s[k], c[k]):.6g}" for k in range(len(GROUPS))])

    def _update_entries(self, epoch: int) -> None:
        seen = ~np.isnan(self._epoch_loss)
        higher = seen & (self._epoch_loss > self._peak_loss)
        self._peak_loss[higher] = self._epoch_loss[higher]
        self._peak_epoch[higher] = epoch
        if not self._history_off and self._epoch_loss.size * (len(self._history) + 1) <= self.max_history:
            self._history.append(self._epoch_loss.astype(np.float16))
        else:
            self._history, self._history_off = [], True  # too large to keep: the peaks alone still give Table 1
        if self.run_dir is not None:
            n = self._rows
            extra = {"history": np.stack([h[:n] for h in self._history])} if self._history else {}
            np.savez_compressed(self.run_dir / self.entries_file, groups=self._groups[:n],
                                peak_epoch=self._peak_epoch[:n], peak_loss=self._peak_loss[:n],
                                last_epoch=np.int64(epoch), **extra)


class MemorizationEvalCallback(MemorizationCallback):
    """The same measures from an extra eval-mode pass over the training split at each epoch's end.

    ``memorization`` measures each entry's loss while its batch trains (train mode, model still changing
    within the epoch); this one re-scores every training image with the epoch's final weights in eval mode
    (no augmentation, BatchNorm running statistics), as a loss "at the end of epoch t" reads in Table 1.
    Columns ``mem_eval_loss_*``; files ``memorization_eval_curve.csv`` / ``memorization_eval_entries.npz``.
    Costs one forward pass over the training split per epoch.
    """

    name = "memorization_eval"
    prefix = "mem_eval_loss_"
    curve_file = "memorization_eval_curve.csv"
    entries_file = "memorization_eval_entries.npz"

    def on_batch_end(self, ctx: Any, batch: dict, logits: torch.Tensor, loss_fn: Any = None) -> None:
        pass  # measured at the epoch's end instead

    def on_epoch_end(self, ctx: Any, epoch: int) -> dict:
        from wsml.distributed import DistInfo
        from wsml.train.builders import build_loader

        model = getattr(ctx.model, "module", ctx.model)
        if getattr(ctx, "rank", 0) != 0 or ctx.index is None or "train" not in ctx.index.splits:
            return {}
        loader = build_loader(ctx.cfg, ctx.index, "train", DistInfo(), train=False,
                              mean_std=getattr(model, "default_mean_std", None))
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                for batch in loader:
                    logits = model(batch["input"].to(ctx.device))
                    super().on_batch_end(ctx, batch, logits, None)
        finally:
            model.train(was_training)
        return super().on_epoch_end(ctx, epoch)


def highest_loss_distribution(groups: np.ndarray, peak_epoch: np.ndarray, warmup_epochs: int = 1) -> dict:
    """Table 1: per group, the % of entries whose highest loss occurred in the warm-up (epoch <= warmup_epochs)
    or in the regular phase, and the median epoch of the highest loss. Entries never seen (peak epoch 0) are
    left out."""
    groups, peak_epoch = np.asarray(groups), np.asarray(peak_epoch)
    if groups.shape != peak_epoch.shape:
        raise ValueError(f"highest_loss_distribution: groups {groups.shape} vs peak_epoch {peak_epoch.shape}")
    out = {}
    for k, g in enumerate(GROUPS):
        pe = peak_epoch[(groups == k) & (peak_epoch > 0)]
        n = int(pe.size)
        warm = int((pe <= warmup_epochs).sum())
        out[g] = {"entries": n, "warmup_pct": 100 * safe_ratio(warm, n), "regular_pct": 100 * safe_ratio(n - warm, n),
                  "median_peak_epoch": float(np.median(pe)) if n else float("nan")}
    return out


def loss_peaks(positions: Sequence[float], curves: dict[str, Sequence[float]], warmup: float = 1.0,
               tol: float = 0.05) -> dict:
    """Does each group's loss rise, peak and fall after the warm-up (the memorization signature of Fig 1)?

    ``positions`` are training-time points (epochs; a sub-epoch bin ending at 2.25 is a quarter into epoch 3),
    ``curves[g]`` the mean loss there. The first epoch (positions <= ``warmup``) is the warm-up, where every
    loss falls from its value at initialisation. Over the regular phase (positions > ``warmup``) this returns
    per group: ``peak_at`` / ``peak_loss`` (its maximum), ``start_loss`` (first regular point), ``rise`` (peak
    minus the lowest point before it), ``fall`` (peak minus the final loss), ``final_loss``, and
    ``rises_then_falls``: both rise and fall exceed ``tol`` × peak.
    """
    pos = np.asarray(positions, dtype=float)
    out = {}
    for g, values in curves.items():
        v = np.asarray(values, dtype=float)
        if v.shape != pos.shape:
            raise ValueError(f"loss_peaks: curve {g!r} has {v.size} points, positions {pos.size}")
        ok = ~np.isnan(v) & (pos > warmup)
        if not ok.any():
            continue
        vr, pr = v[ok], pos[ok]
        j = int(np.argmax(vr))
        rise, fall = float(vr[j] - vr[: j + 1].min()), float(vr[j] - vr[-1])
        out[g] = {"start_loss": float(vr[0]), "peak_at": float(pr[j]), "peak_loss": float(vr[j]), "rise": rise,
                  "fall": fall, "final_loss": float(vr[-1]),
                  "rises_then_falls": bool(rise > tol * vr[j] and fall > tol * vr[j])}
    return out


def load_entries(run_dir: str | Path, name: str = ENTRIES_FILE) -> Optional[dict]:
    """The arrays of ``memorization_entries.npz`` (or ``name``) in a run folder, or None when it has none."""
    p = Path(run_dir) / name
    if not p.exists():
        return None
    with np.load(p, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def load_curve(run_dir: str | Path, name: str = CURVE_FILE) -> Optional[dict]:
    """``memorization_curve.csv`` (or ``name``) of a run folder as {'position': [...], 'pos': [...], 'tn': [...],
    'fn': [...]}, or None when it has none."""
    p = Path(run_dir) / name
    if not p.exists():
        return None
    with p.open() as f:
        rows = list(csv.DictReader(f))
    out = {"position": [float(r["position"]) for r in rows]}
    for g in GROUPS:
        out[g] = [float(r[f"loss_{g}"]) for r in rows]
    return out


def epoch_curves(run_dir: str | Path, prefix: str = "mem_loss_") -> Optional[dict]:
    """Per-epoch group means from the run's metrics.csv: {'position': epochs, 'pos': [...], ...} or None."""
    from wsml.runs import RunFolder

    run = RunFolder(run_dir)
    if not run.file("metrics.csv").exists():
        return None
    m = run.columns
    if f"{prefix}fn" not in m:
        return None
    return {"position": m["epoch"], **{g: m[f"{prefix}{g}"] for g in GROUPS}}


def group_curve(run_dir: str | Path, eval_mode: bool = False) -> Optional[dict]:
    """The finest group-loss curve a run logged: the quarter-epoch file, else the per-epoch means; None if none."""
    cb = MemorizationEvalCallback if eval_mode else MemorizationCallback
    return load_curve(run_dir, cb.curve_file) or epoch_curves(run_dir, cb.prefix)


def memorization_summary(run_dir: str | Path, eval_mode: bool = False) -> dict:
    """Peaks of the group losses after the warm-up (Fig 1) and the highest-loss distribution (Table 1) of a run
    folder trained with the memorization callback (``eval_mode``: memorization_eval's).

    The peaks use the finest curve logged (quarter-epoch bins), as the paper's Fig 1 follows the loss per
    iteration: fine-tuned from ImageNet, the false negatives' loss can rise and peak within epochs 1-2, which
    per-epoch means flatten. Without that file, the per-epoch means of metrics.csv.
    """
    cb = MemorizationEvalCallback if eval_mode else MemorizationCallback
    curve = group_curve(run_dir, eval_mode)
    if curve is None:
        raise FileNotFoundError(f"{run_dir}: metrics.csv has no {cb.prefix}* columns; train with "
                                f"callbacks=[{cb.name}]")
    out = {"peaks": loss_peaks(curve["position"], {g: curve[g] for g in GROUPS})}
    entries = load_entries(run_dir, cb.entries_file)
    if entries is not None:
        out["table1"] = highest_loss_distribution(entries["groups"], entries["peak_epoch"])
        out["epochs"] = int(entries["last_epoch"])
    return out
