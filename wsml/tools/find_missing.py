"""Find the labels your annotators missed: unobserved (image, class) pairs of the training set that are
likely positive, ranked (``wsml find-missing RUN_DIR``: :mod:`wsml.cli.tools`).

The large-loss view (paper §3): under Naive AN every unobserved entry is a "negative" with loss
softplus(z) = -log(1 - σ(z)), monotone in the model's score, and the entries with the largest such loss are
mostly false negatives - the labels the annotators missed. So the ranking score of an UNOBS pair is a
sigmoid score (larger = larger assumed-negative loss = more likely missing), from one of the sources:

* ``model``: the run's best checkpoint scoring its own training images. Meaningful for LL-R / LL-Ct /
  LL-Cp runs, which stop fitting these large losses; a Naive AN model memorises them (scores pushed to 0).
* ``oof``: out-of-fold scores (:mod:`wsml.tools.oof`, ``folds >= 2``): each image scored by a model trained
  without it. Costs K trainings; the most reliable ranking.
* ``ll-cp``: pairs that LL-Cp corrected permanently during training (only for LL-Cp runs).

The ranking score is ``model``, or with out-of-fold scores the mean of ``model`` and ``oof`` (the best
ranking in benchmarks/results/find_missing.md; ``rank_by`` chooses). A pair is *flagged* by ``model`` when
the model's score reaches the class's val threshold (:mod:`wsml.tools.thresholds`, per-class F1 on val), by
``oof`` when the OOF score reaches the val threshold of the fold model that produced it, and by ``ll-cp``
when it was corrected. Without ``k`` the
output lists every flagged pair; with ``k`` the k best-ranked unobserved pairs, flagged or not. Equal scores
are ordered by training row id, then class id (deterministic). A run whose loss is not an LL method gets a
warning (its in-sample scores are memorised). Observed
negatives are never candidates. The output CSV has ``rank,row,image,class,score,model_score,oof_score,
an_loss,threshold,sources`` (``row``: the training split's row id; ``an_loss`` = -log(1 - score)).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Optional, Union

import numpy as np

from wsml._types import PathLike
from wsml.labels import UNOBS, SparseLabels, as_observed
from wsml.runs import RunFolder
from wsml.tools.ranking import RANK_BY

LL_LOSSES = ("ll-r", "ll-ct", "ll-cp")  # losses that stop fitting large assumed-negative losses
OOF_MAX_ENTRIES = 2**28  # N x C above which --folds is refused (its scores are dense: 12 bytes per entry)
COLUMNS = ("rank", "row", "image", "class", "score", "model_score", "oof_score", "an_loss", "threshold", "sources")


def train_scores(run: Union[RunFolder, PathLike], device: str = "auto") -> np.ndarray:
    """float32 [N_train, C]: sigmoid scores of the run's best checkpoint on its training rows (no augmentation);
    rows that could not be scored (skipped images) are nan."""
    from wsml.evaluation import run_split_scores

    run = RunFolder.of(run)
    scores, rows = run_split_scores(run, "train", device)
    index = run.dataset
    out = np.full((len(index["train"]), index.num_classes), np.nan, dtype=np.float32)
    out[rows] = scores
    return out


def llcp_corrections(run: Union[RunFolder, PathLike]) -> tuple[np.ndarray, np.ndarray]:
    """(rows, classes) that LL-Cp corrected permanently up to the run's last epoch; empty for other losses."""
    from wsml.train.builders import build_loss_fn

    run = RunFolder.of(run)
    empty = np.empty(0, dtype=np.int64)
    which = "last" if run.last_pt.is_file() else "best"
    loss_fn = build_loss_fn(run.config, run.dataset, log=lambda *a: None)
    if not hasattr(loss_fn, "corrections") or not run.file(f"{which}.pt").is_file():
        return empty, empty
    loss_fn.load_state_dict(run.checkpoint(which)["loss"])
    rows, classes = loss_fn.corrections()
    return rows.cpu().numpy().astype(np.int64), classes.cpu().numpy().astype(np.int64)


def _rank_by(rank_by: str, have_model: bool, have_oof: bool) -> str:
    """The score to rank by ("model", "oof" or "mean"), checked against the scores there are."""
    if rank_by not in RANK_BY:
        raise ValueError(f"rank_by must be one of {', '.join(RANK_BY)}, got {rank_by!r}")
    if not have_model and not have_oof:
        raise ValueError("find-missing needs the model's scores or out-of-fold scores")
    if rank_by == "auto":
        rank_by = "mean" if (have_oof and have_model) else ("oof" if have_oof else "model")
    if (rank_by in ("oof", "mean") and not have_oof) or (rank_by in ("model", "mean") and not have_model):
        what = "out-of-fold scores (--folds >= 2)" if not have_oof else "model scores"
        raise ValueError(f"rank_by={rank_by!r} needs {what}")
    return rank_by


def _chunk_ranked(rank_by: str, rows, obs, thr, model, oof, oof_thr, corrected, top):
    """:func:`wsml.tools.ranking.rank_chunk` with the ranking score of ``rank_by``, added to ``top`` (a TopPairs)."""
    from wsml.tools.ranking import rank_chunk

    score = {"model": model, "oof": oof}.get(rank_by)
    if score is None:
        score = 0.5 * (model + oof)
    top.add(rank_chunk(rows, obs, thr, score, model, oof, oof_thr, corrected, top.k, top.floor))


def rank_missing(observed: np.ndarray, thresholds: np.ndarray, model: Optional[np.ndarray] = None,
                 oof: Optional[np.ndarray] = None, corrected: Optional[np.ndarray] = None, rank_by: str = "auto",
                 k: Optional[int] = None, oof_thresholds: Optional[np.ndarray] = None, chunk_rows: int = 4096,
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list]:
    """Rank the UNOBS entries of ``observed`` [N, C]; returns (rows, classes, scores, sources) best first.

    ``model`` / ``oof``: score matrices [N, C] (either may be None); ``corrected``: bool [N, C] (LL-Cp).
    ``thresholds`` [C] flag ``model`` scores, ``oof_thresholds`` ([C] or [N, C]; default ``thresholds``) flag
    ``oof`` scores. ``rank_by``: "model", "oof", "mean" (of both) or "auto" (mean when both are given:
    the best ranking in benchmarks/results/find_missing.md; else the one given). Streams ``chunk_rows`` rows at
    a time (:mod:`wsml.tools.ranking`): the same result as ranking the whole matrix at once.
    """
    from wsml.tools.ranking import TopPairs

    rank_by = _rank_by(rank_by, model is not None, oof is not None)
    if k is not None and k < 1:
        raise ValueError(f"--k must be >= 1, got {k}")
    thr = np.asarray(thresholds, dtype=np.float64)
    othr = None if oof_thresholds is None else np.asarray(oof_thresholds, dtype=np.float64)
    top = TopPairs(k)
    for r0 in range(0, len(observed), chunk_rows):
        sl = slice(r0, r0 + chunk_rows)
        _chunk_ranked(rank_by, np.arange(len(observed))[sl], observed[sl], thr,
                      *(None if a is None else a[sl] for a in (model, oof)),
                      othr[sl] if othr is not None and othr.ndim == 2 else othr,
                      None if corrected is None else corrected[sl], top)
    r = top.result()
    return r.rows, r.classes, r.score, r.sources()


def _rank_streaming(run: RunFolder, thr: np.ndarray, k: Optional[int], rank_by: str, device: str,
                    oof: Optional[np.ndarray], oof_thr: Optional[np.ndarray]):
    """The run's best checkpoint scores its training rows into chunk files (each torchrun process its shard),
    every chunk is ranked as it is read back, and the processes' best pairs are merged: never N × C in memory."""
    import shutil
    import tempfile

    from wsml.distributed import barrier, broadcast_object, init_distributed
    from wsml.metrics_blocked import ScoreChunks, score_to_chunks
    from wsml.tools.ranking import TopPairs, merge_ranks
    from wsml.train.builders import resolve_device

    info = init_distributed(device)
    dev = resolve_device(device, info)
    model = run.model(dev)
    obs = run.dataset["train"].train_targets()
    rows_c, cls_c = llcp_corrections(run)
    corrected = SparseLabels.from_coo(rows_c, cls_c, np.ones(len(rows_c), np.int8), obs.shape) if len(rows_c) else None
    loader = run.loader("train", model, info)  # this process's shard
    tmp = Path(broadcast_object(tempfile.mkdtemp(prefix=".scores_train_", dir=run.path) if info.is_main else None))
    try:
        score_to_chunks(model, loader, dev, tmp, run.dataset.num_classes, info.rank)
        top = TopPairs(k)
        if any(tmp.glob(f"r{info.rank:03d}_*.scores.npy")):
            for rows, scores in ScoreChunks(tmp, rank=info.rank).row_chunks():
                _chunk_ranked(rank_by, rows, as_observed(obs, rows), thr, scores, None if oof is None else oof[rows],
                              oof_thr[rows] if oof_thr is not None and oof_thr.ndim == 2 else oof_thr,
                              None if corrected is None else corrected[rows] != UNOBS, top)
        return merge_ranks(top.result(), k)
    finally:
        barrier()
        if info.is_main:
            shutil.rmtree(tmp, ignore_errors=True)


def find_missing(run_dir: PathLike, *, k: Optional[int] = None, folds: int = 0, oof_epochs: Optional[int] = None,
                 oof_seed: int = 0, rank_by: str = "auto", device: str = "auto", quiet: bool = True) -> list[dict]:
    """Ranked likely-missing labels of a finished run's training set (one dict per pair, keys ``COLUMNS``).

    ``folds >= 2`` adds out-of-fold scores (K extra trainings of ``oof_epochs`` epochs; cached in the run).
    Memory: one chunk of training rows plus the ranked pairs (under torchrun every process scores its shard).
    """
    import os
    import sys

    from wsml.losses import resolve_loss_name
    from wsml.tools.thresholds import ensure_thresholds

    run = RunFolder(run_dir)
    cfg = run.config
    if folds == 1 or folds < 0:
        raise ValueError(f"--folds must be 0 (no out-of-fold scores) or >= 2, got {folds}")
    if folds >= 2 and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError("--folds trains fold models one after the other: run it in one process, not under torchrun")
    if k is not None and k < 1:
        raise ValueError(f"--k must be >= 1, got {k}")
    rank_by = _rank_by(rank_by, True, folds >= 2)
    if resolve_loss_name(cfg.loss.name) not in LL_LOSSES and folds < 2:
        print(f"warning: {run_dir} was trained with loss {cfg.loss.name!r}, not an LL method: such a model "
              f"memorises its training labels (unobserved = absent), so its own scores rank missing labels poorly; "
              f"use an LL-R run or add --folds 3", file=sys.stderr)
    index = run.dataset
    train = index["train"]
    entries = len(train) * index.num_classes
    if folds >= 2 and entries > OOF_MAX_ENTRIES:
        raise ValueError(f"--folds keeps the out-of-fold scores and thresholds as N x C matrices ({len(train)} x "
                         f"{index.num_classes}: {entries * 12 / 2**30:.1f} GiB); at this size rank by the model's "
                         "own scores (no --folds), which stream")
    thr = ensure_thresholds(run, device)
    oof = oof_thr = None
    if folds >= 2:
        from wsml.tools.oof import out_of_fold

        oof, oof_thr = out_of_fold(run, folds=folds, epochs=oof_epochs, seed=oof_seed,
                                   device=None if device == "auto" else device, quiet=quiet)
        oof_thr = np.asarray(oof_thr, dtype=np.float64)
    r = _rank_streaming(run, np.asarray(thr["thresholds"], dtype=np.float64), k, rank_by, device, oof, oof_thr)
    names, sources = index.class_names, r.sources()
    out = []
    for i, (row, c) in enumerate(zip(r.rows, r.classes)):
        image = train.samples[row] if train.samples is not None else f"train[{row}]"
        out.append({"rank": i + 1, "row": int(row), "image": image, "class": names[c], "score": float(r.score[i]),
                    "model_score": float(r.model[i]), "oof_score": None if oof is None else float(r.oof[i]),
                    "an_loss": float(-np.log1p(-min(float(r.score[i]), 1 - 1e-7))),
                    "threshold": float(thr["thresholds"][c]), "sources": sources[i]})
    return out


def write_missing(path: PathLike, rows: list[dict]) -> Path:
    """Write :func:`find_missing`'s result as CSV (columns ``COLUMNS``)."""
    path = Path(path)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        for r in rows:
            w.writerow([r["rank"], r["row"], r["image"], r["class"], f"{r['score']:.6f}", f"{r['model_score']:.6f}",
                        "" if r["oof_score"] is None else f"{r['oof_score']:.6f}", f"{r['an_loss']:.6f}",
                        f"{r['threshold']:.6f}", r["sources"]])
    return path


def record_run(args, rows: list[dict]) -> None:
    """``find_missing.json`` in the run folder: what was written where (``wsml report`` shows it)."""
    from wsml.checkpoint import write_json

    write_json(Path(args.run_dir) / "find_missing.json", {
        "out": str(Path(args.out).resolve()), "pairs": len(rows), "k": args.k, "folds": args.folds,
        "rank_by": args.rank_by, "what": "ranked pairs" if args.k is not None else "flagged pairs",
        "top": [{k: r[k] for k in ("rank", "image", "class", "score", "sources")} for r in rows[:10]]})
