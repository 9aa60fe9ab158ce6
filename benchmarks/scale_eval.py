"""Blocked evaluation at OpenImages' test-set size: wall time and peak RSS (issue 17).

Writes synthetic sigmoid scores N × C (float32, in row chunks, as ``wsml eval`` does) and sparse observed labels
(``--known`` annotated classes per row, half positive), then evaluates mAP, masked mAP (partial-labels policy)
and group mAP with :mod:`wsml.metrics_blocked` in a fresh child process, whose peak RSS is reported. Checks the
AP of ``--check`` random classes against the dense :func:`wsml.metrics.average_precision_per_class` (equal bit
for bit; each class's AP depends on that class only, so a subset of classes is a complete check of those).

  OMP_NUM_THREADS=1 nice -n 10 python benchmarks/scale_eval.py --rows 125000 --classes 5000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make(folder: Path, rows: int, classes: int, known: int, seed: int = 0) -> None:
    from wsml.labels import SparseLabels
    from wsml.metrics_blocked import ScoreChunkWriter

    rng = np.random.default_rng(seed)
    writer = ScoreChunkWriter(folder / "scores", classes)
    for r0 in range(0, rows, 4096):
        n = min(4096, rows - r0)
        s = rng.random((n, classes), dtype=np.float32)
        writer.append(np.round(s * 1000) / 1000, np.arange(r0, r0 + n))  # rounded: many tied scores
    writer.close()
    cols = rng.integers(0, classes, size=(rows, known))
    vals = np.where(rng.random((rows, known)) < 0.5, 1, -1)
    SparseLabels.from_coo(np.repeat(np.arange(rows), known), cols.ravel(), vals.ravel(),
                          (rows, classes)).save(folder / "observed.npz")


def evaluate(folder: Path, check: int) -> dict:
    from wsml.labels import SparseLabels
    from wsml.metrics import average_precision_per_class, group_map_from_ap
    from wsml.metrics_blocked import (
        ClassTargets,
        ScoreChunks,
        ap_per_class_blocked,
        map_blocked,
        partial_labels_map_blocked,
    )

    t0 = time.perf_counter()
    scores = ScoreChunks(folder / "scores")
    obs = SparseLabels.load(folder / "observed.npz")
    targets = ClassTargets.observed(obs, scores.rows)
    ap = ap_per_class_blocked(scores, targets)
    keep = targets.any_counted()
    out = {"map": map_blocked(ap, keep), "masked_map": partial_labels_map_blocked(ap, targets).value,
           "group_map": group_map_from_ap(ap, keep, obs.known_per_class())}
    out["eval_s"] = round(time.perf_counter() - t0, 1)
    out["peak_rss_mib_eval"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    cls = np.sort(np.random.default_rng(1).choice(scores.num_classes, check, replace=False))
    S = np.stack([scores.class_block(c, c + 1)[0] for c in cls], axis=1)
    dense = np.zeros((len(scores.rows), check), np.int8)  # the checked classes of the sparse labels, densified
    row_of = np.repeat(np.arange(len(obs)), np.diff(obs.indptr))
    hit = np.isin(obs.indices, cls)
    dense[row_of[hit], np.searchsorted(cls, obs.indices[hit])] = obs.values[hit]
    ref = average_precision_per_class(S, dense == 1, dense != 0)
    out["checked_classes"] = int(check)
    out["identical_to_dense"] = bool((ref == ap[cls]).all())
    return out


def compare_small() -> None:
    """Dense ``score_split`` + group mAP against writing chunks + ``score_split_blocked`` on small splits (what
    ``wsml eval`` did before and does now): wall time, and the two results compared for identity."""
    from wsml.data import DatasetIndex, Split
    from wsml.evaluation import split_group_map
    from wsml.metrics_blocked import ScoreChunks, ScoreChunkWriter, score_split_blocked
    from wsml.partial_val import score_split

    rng = np.random.default_rng(0)
    for n, c in ((37, 6), (5000, 20), (20000, 1000)):
        S = rng.random((n, c), dtype=np.float32)
        full = (rng.random((n, c)) < 0.1).astype(np.uint8)
        index = DatasetIndex("t", [str(i) for i in range(c)], {"test": Split(full=full)}, kind="features",
                             meta={"known_per_class": list(range(c))})
        rows = np.arange(n)
        t0 = time.perf_counter()
        for _ in range(3):
            dense = {**score_split(index, "test", S, rows), "group_map": split_group_map(index, "test", S, rows)}
        t_dense = (time.perf_counter() - t0) / 3
        t0 = time.perf_counter()
        for _ in range(3):
            with tempfile.TemporaryDirectory() as tmp:
                w = ScoreChunkWriter(tmp, c)
                for i in range(0, n, 256):
                    w.append(S[i:i + 256], rows[i:i + 256])
                w.close()
                blocked = score_split_blocked(index, "test", ScoreChunks(tmp))
        t_blocked = (time.perf_counter() - t0) / 3
        print(json.dumps({"rows": n, "classes": c, "dense_ms": round(t_dense * 1000, 1),
                          "chunks_and_blocked_ms": round(t_blocked * 1000, 1),
                          "identical": str(dense) == str(blocked)}))


def cli(rows: int, classes: int, known: int, work: Path) -> dict:
    """``wsml eval`` end to end on a feature data set whose test split is ``rows`` × ``classes`` with sparse
    observed labels: a linear run trained with a small test split, whose data set then gets the large one."""
    from wsml.config import load_config
    from wsml.data import DatasetIndex, Split
    from wsml.labels import SparseLabels
    from wsml.train.engine import train

    rng = np.random.default_rng(0)

    def split(n: int) -> Split:
        cols = rng.integers(0, classes, size=(n, known))
        vals = np.where(rng.random((n, known)) < 0.5, 1, -1)
        obs = SparseLabels.from_coo(np.repeat(np.arange(n), known), cols.ravel(), vals.ravel(), (n, classes))
        return Split(observed=obs, features=rng.normal(size=(n, 64)).astype(np.float32))

    data = work / "data"
    splits = {"train": split(2000), "val": split(500), "test": split(500)}
    meta = {"known_per_class": np.bincount(splits["train"].observed.indices, minlength=classes).tolist()}
    DatasetIndex("scale", [f"c{i}" for i in range(classes)], splits, kind="features", meta=meta).save(data)
    train(load_config(None, [f"data.path={data}", "model.backbone=linear", "model.pretrained=false",
                             "train.epochs=1", "train.device=cpu", f"run.out={work}", "run.name=run",
                             "run.quiet=true"]))
    splits["test"] = split(rows)  # the large test split, evaluated by `wsml eval` only
    DatasetIndex("scale", [f"c{i}" for i in range(classes)], splits, kind="features", meta=meta).save(data)
    t0 = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "wsml.cli", "eval", str(work / "run"), "--device", "cpu"],
                             stdout=subprocess.PIPE, text=True)
    out = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)  # this child's own peak RSS
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"wsml eval failed:\n{out}")
    return {"rows": rows, "classes": classes, "wsml_eval_wall_s": round(time.perf_counter() - t0, 1),
            "wsml_eval_peak_rss_mib": round(usage.ru_maxrss / 1024), "stdout": out.strip().splitlines()[:3]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=125_000)
    p.add_argument("--classes", type=int, default=5000)
    p.add_argument("--known", type=int, default=8, help="annotated classes per row (half positive)")
    p.add_argument("--check", type=int, default=200, help="classes compared with the dense computation")
    p.add_argument("--small", action="store_true", help="compare with the dense evaluation on small splits")
    p.add_argument("--cli", action="store_true", help="`wsml eval` end to end (scoring + evaluation)")
    p.add_argument("--eval-only", metavar="DIR", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.small:
        compare_small()
        return 0
    if a.cli:
        with tempfile.TemporaryDirectory() as d:
            print(json.dumps(cli(a.rows, a.classes, a.known, Path(d))))
        return 0
    if a.eval_only:
        print(json.dumps(evaluate(Path(a.eval_only), a.check)))
        return 0
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        make(Path(d), a.rows, a.classes, a.known)
        made = time.perf_counter() - t0
        t0 = time.perf_counter()
        child = subprocess.run([sys.executable, __file__, "--eval-only", d, "--check", str(a.check)],
                               check=True, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        res = json.loads(child.stdout)
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps({"rows": a.rows, "classes": a.classes, "write_scores_s": round(made, 1),
                      "eval_process_wall_s": round(wall, 1), "eval_process_peak_rss_mib": round(peak), **res}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
