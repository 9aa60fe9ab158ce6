"""Start (or resume) a review from a finished run: what ``wsml review RUN --val / --missing`` shows.

``--val`` draws N images among the labels CSV's training rows (rows without a split or with ``split=train``),
stratified by observed class: each image counts for its rarest observed class (images without a positive
form their own stratum), every stratum gets its share of N (at least one image when N allows), and within
a stratum images come in the order of ``RandomState(seed).permutation`` - so the draw is reproducible. The
run's best checkpoint scores the drawn images; classes whose score reaches the val threshold are pre-filled.

``--missing`` ranks the unobserved training pairs with :func:`wsml.tools.find_missing.find_missing`.

A review already saved in ``RUN/review`` is resumed as it is (its images and pairs are not drawn again).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from wsml._types import PathLike
from wsml.tools.review.export import known_labels, read_table
from wsml.tools.review.state import REVIEW_DIR, MissingReview, Source, ValReview, read_json


def run_source(run_dir: PathLike, device: str = "auto") -> Source:
    """The labels CSV, image root, classes and val thresholds of a run trained on ``wsml prepare csv`` data."""
    from wsml.runs import RunFolder
    from wsml.tools.thresholds import ensure_thresholds

    run = RunFolder(run_dir)
    index = run.dataset
    src = index.meta.get("source", {})
    if src.get("format") != "csv" or not src.get("csv"):
        raise ValueError(f"{run_dir}: wsml review works on runs trained on a labels CSV (`wsml prepare csv`); "
                         f"this run's data set {index.name!r} was not")
    if not Path(src["csv"]).is_file():
        raise FileNotFoundError(f"{src['csv']}: the labels CSV of {run_dir} is not there any more")
    thr = ensure_thresholds(run, device)
    return Source(csv=src["csv"], image_root=index.root, class_names=list(index.class_names),
                  thresholds=[float(t) for t in thr["thresholds"]], model=run.path.name)


def allocate(sizes: list, n: int) -> list:
    """Split ``n`` over strata of ``sizes`` in proportion (largest remainders), at least 1 each when n allows."""
    total = sum(sizes)
    n = min(n, total)
    exact = [n * s / total for s in sizes] if total else [0.0] * len(sizes)
    floor = 1 if n >= len(sizes) else 0
    q = [min(s, max(floor, int(e))) for s, e in zip(sizes, exact)]
    while sum(q) > n:  # the floors of small strata pushed it over: take from the most over-served
        j = max((i for i in range(len(q)) if q[i] > floor), key=lambda i: q[i] - exact[i])
        q[j] -= 1
    while sum(q) < n:
        j = max((i for i in range(len(q)) if q[i] < sizes[i]), key=lambda i: exact[i] - q[i])
        q[j] += 1
    return q


def draw_val(table, n: int, seed: int = 0) -> list:
    """Row ids of ``table`` (training rows only) for a val review, stratified by rarest observed class."""
    cand = [i for i, s in enumerate(table.split) if s in (None, "train")]
    if not cand:
        raise ValueError("the labels CSV has no training rows to draw val images from")
    count: dict = {}
    for i in cand:
        for c in table.pos[i]:
            count[c] = count.get(c, 0) + 1
    strata: dict = {}
    for j in np.random.RandomState(seed).permutation(len(cand)):
        i = cand[j]
        key = min(table.pos[i], key=lambda c: (count[c], c)) if table.pos[i] else ""
        strata.setdefault(key, []).append(int(i))
    keys = sorted(strata)
    quota = allocate([len(strata[k]) for k in keys], n)
    chosen = {i for k, q in zip(keys, quota) for i in strata[k][:q]}
    position = {int(cand[j]): p for p, j in enumerate(np.random.RandomState(seed).permutation(len(cand)))}
    return sorted(chosen, key=position.get)


def _check_saved(meta_path: Path, saved: Path, decisions: str, redo: str, **asked: Optional[int]) -> None:
    """A saved review resumes as it is: settings given again must equal the saved ones (None = not given)."""
    meta = read_json(meta_path)
    if any(v is not None and v != meta.get(key) for key, v in asked.items()):
        held = ", ".join(f"{key}={meta.get(key)}" for key in asked)
        want = ", ".join(f"{key}={v}" for key, v in asked.items())
        raise ValueError(f"{saved} holds a review of {held}; delete it (and {decisions}) to {redo} with {want}")


def start_val(run_dir: PathLike, n: Optional[int] = None, seed: Optional[int] = None, device: str = "auto",
              scorer=None) -> ValReview:
    """Resume ``RUN/review``'s val review, or draw ``n`` images (default 200, ``seed`` default 0), score them
    and save a new one. Asking a saved review for another ``n`` or ``seed`` is an error.

    ``scorer(paths) -> [N, C]`` replaces the run's model (tests, benchmarks with cached scores).
    """
    folder = Path(run_dir) / REVIEW_DIR
    if (folder / "val.json").is_file():
        _check_saved(folder / "val.json", folder / "val.json", "val-decisions.json", "draw", n=n, seed=seed)
        return ValReview.load(folder)
    n, seed = 200 if n is None else n, 0 if seed is None else seed
    if n < 1:
        raise ValueError(f"--n must be >= 1, got {n}")
    source = run_source(run_dir, device)
    table = read_table(source.csv)
    rows = draw_val(table, n, seed)
    paths = [table.paths[i] for i in rows]
    if scorer is None:
        from wsml.runs import RunFolder
        from wsml.tools.prediction_files import run_image_scores

        def scorer(p):
            return run_image_scores(RunFolder(run_dir), [Path(source.image_root) / x for x in p],
                                    source.class_names, device)

    scores = np.asarray(scorer(paths), dtype=np.float64)
    items = [{"image": p, "observed": table.pos[i], "negatives": table.neg[i],
              "scores": [round(float(s), 6) for s in scores[r]]} for r, (p, i) in enumerate(zip(paths, rows))]
    return ValReview.create(folder, source, items, n=n, seed=seed)


def start_missing(run_dir: PathLike, k: Optional[int] = None, folds: Optional[int] = None,
                  oof_epochs: Optional[int] = None, device: str = "auto") -> MissingReview:
    """Resume ``RUN/review``'s missing-label review, or rank the pairs with find-missing (``k`` best, default
    every flagged pair; ``folds``: out-of-fold scores) and save a new one. Asking a saved review for another
    ``k`` or ``folds`` is an error."""
    from wsml.tools.find_missing import find_missing

    folder = Path(run_dir) / REVIEW_DIR
    if (folder / "missing.csv").is_file():
        _check_saved(folder / "missing.json", folder / "missing.csv", "missing-decisions.json", "rank anew", k=k,
                     folds=folds)
        return MissingReview.load(folder)
    folds = folds or 0
    source = run_source(run_dir, device)
    pairs = find_missing(run_dir, k=k, folds=folds, oof_epochs=oof_epochs, device=device, quiet=True)
    return MissingReview.create(folder, source, pairs, known_labels(source.csv), k=k, folds=folds)
