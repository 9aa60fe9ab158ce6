"""Out-of-fold (OOF) scores: every training image scored by a model that never trained on it.

A model's score on its own training images is biased towards the labels it was given (Naive AN memorises
the false negatives, paper §3); LL-R resists that, but cross-fitting removes the bias altogether. The
training rows are split into K folds (a seeded permutation); for each fold f a model is trained with the
run's own config (same loss, e.g. LL-R) on the other K-1 folds, selected on the run's val split as usual,
and scores fold f, which the engine treats as its test split. Cost: K trainings on (K-1)/K of the data.

Files: ``<run>/oof/fold<f>/`` are ordinary run folders (config, metrics, summary); ``<run>/oof/scores.npz``
holds ``scores`` [N_train, C], ``fold_of`` [N_train], ``fold_thresholds`` [K, C] (each fold model's per-class
val-F1 thresholds) and the settings, and is reused when the settings match.
The per-fold prepared data copies are deleted after use.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Optional, Union

import numpy as np

from wsml._types import PathLike
from wsml.runs import RunFolder


def fold_assignment(n: int, folds: int, seed: int = 0) -> np.ndarray:
    """int64 [n]: the fold (0..folds-1) of each row, from ``RandomState(seed).permutation(n)`` dealt in turn."""
    if folds < 2:
        raise ValueError(f"out-of-fold scoring needs at least 2 folds, got {folds}")
    if n < folds:
        raise ValueError(f"cannot split {n} training rows into {folds} folds")
    out = np.empty(n, dtype=np.int64)
    out[np.random.RandomState(seed).permutation(n)] = np.arange(n) % folds
    return out


def _cached(path: Path, settings: dict) -> Optional[tuple[np.ndarray, np.ndarray]]:
    if not path.is_file():
        return None
    data = np.load(path)
    if not all(k in data.files for k in (*settings, "fold_thresholds", "fold_of")):
        return None
    if not all(str(data[k]) == str(v) for k, v in settings.items()):
        return None
    return data["scores"], data["fold_thresholds"][data["fold_of"]]


def out_of_fold(run_dir: Union[PathLike, RunFolder], folds: int = 3, epochs: Optional[int] = None, seed: int = 0,
                device: Optional[str] = None, quiet: bool = True, reuse: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(scores, thresholds), both [N_train, C]: float32 sigmoid scores of the run's training rows, each from the
    fold model that held it out, and, per row, the per-class val-F1 thresholds (wsml.tools.thresholds) of that fold
    model (fold models differ in calibration).

    ``epochs``: training epochs per fold (default: the run's ``train.epochs``); ``device``: override
    ``train.device``; ``reuse``: return ``<run>/oof/scores.npz`` when it was made with the same settings.
    """
    from wsml.config import validate
    from wsml.data.index import DatasetIndex
    from wsml.tools.thresholds import ensure_thresholds
    from wsml.train.engine import train

    run = RunFolder.of(run_dir)
    run_dir = run.path
    cfg = run.config
    epochs = int(epochs or cfg.train.epochs)
    if epochs < 1:
        raise ValueError(f"out-of-fold epochs must be >= 1, got {epochs}")
    index = run.dataset
    train_split = index["train"]
    n = len(train_split)
    fold_of = fold_assignment(n, folds, seed)
    settings = {"folds": folds, "epochs": epochs, "seed": seed, "num_rows": n, "data_path": cfg.data.path}
    out_dir = run_dir / "oof"
    if reuse:
        hit = _cached(out_dir / "scores.npz", settings)
        if hit is not None:
            return hit
    scores = np.full((n, index.num_classes), np.nan, dtype=np.float32)
    fold_thr = np.zeros((folds, index.num_classes))
    for f in range(folds):
        held, rest = np.nonzero(fold_of == f)[0], np.nonzero(fold_of != f)[0]
        data_dir = out_dir / f"fold{f}-data"
        splits = {"train": train_split.take(rest), "val": index["val"], "test": train_split.take(held)}
        DatasetIndex(f"{index.name}-fold{f}", list(index.class_names), splits, root=index.root, kind=index.kind,
                     meta={**index.meta, "oof": {"fold": f, "folds": folds, "seed": seed}}).save(data_dir)
        fcfg = copy.deepcopy(cfg)
        fcfg.data.path, fcfg.data.dataset = str(data_dir), ""
        fcfg.train.epochs = epochs
        fcfg.run.out, fcfg.run.name, fcfg.run.overwrite, fcfg.run.quiet = str(out_dir), f"fold{f}", True, quiet
        fcfg.train.feature_cache = ""
        if device is not None:
            fcfg.train.device = device
        validate(fcfg)
        if not quiet:
            print(f"out-of-fold: fold {f + 1}/{folds}: training on {len(rest)} rows, scoring {len(held)}", flush=True)
        train(fcfg)
        fold = RunFolder(out_dir / f"fold{f}")
        fold_thr[f] = ensure_thresholds(fold, device or "auto")["thresholds"]
        fold_scores, fold_rows = fold.predictions("test")  # the fold model's scores of the rows it never saw
        scores[held[fold_rows]] = fold_scores
        for big in ("last.pt", "best.pt", "features"):  # keep the fold's config, metrics and summary only
            p = out_dir / f"fold{f}" / big
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
        shutil.rmtree(data_dir, ignore_errors=True)
    if np.isnan(scores).any():
        raise ValueError(f"{run_dir}: {int(np.isnan(scores).any(1).sum())} training rows got no out-of-fold score "
                         f"(images that failed to load?)")
    np.savez(out_dir / "scores.npz", scores=scores, fold_of=fold_of, fold_thresholds=fold_thr,
             **{k: np.asarray(v) for k, v in settings.items()})
    return scores, fold_thr[fold_of]
