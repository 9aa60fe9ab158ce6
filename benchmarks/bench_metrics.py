"""Benchmark: vectorised mAP (wsml.metrics) vs a per-class sklearn loop, timed in the same process.

Random scores with ~3 % positives and some ties (a fraction of the scores rounded to 2 decimals). The
sklearn loop runs single-threaded, the vectorised path once on 1 thread and once on all cores; the values
must agree (max |ΔAP| is reported and asserted). Writes benchmarks/results/metrics.md with the command.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_metrics.py
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import average_precision_score

from wsml.metrics import average_precision_per_class, mean_average_precision


def make_data(n: int, c: int, pos_frac: float, tie_frac: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores float32 [n, c] (positives shifted up a little) and labels bool [n, c]."""
    rng = np.random.default_rng(seed)
    labels = rng.random((n, c)) < pos_frac
    scores = rng.random((n, c), dtype=np.float32) + np.float32(0.3) * labels  # stays float32
    tied = rng.random((n, c)) < tie_frac
    scores[tied] = np.round(scores[tied], 2)
    return scores, labels


def tied_entries(scores: np.ndarray, sample: int = 50) -> int:
    """Estimated number of entries whose score equals another score of the same column (from ``sample`` columns)."""
    cols = range(min(sample, scores.shape[1]))
    shared = [np.unique(scores[:, j], return_counts=True)[1] for j in cols]
    return int(np.mean([cnt[cnt > 1].sum() for cnt in shared]) * scores.shape[1])


def sklearn_loop(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The obvious implementation: one sklearn call per class (AP 0 for a class without positives)."""
    ap = np.zeros(scores.shape[1])
    for c in range(scores.shape[1]):
        if labels[:, c].any():
            ap[c] = average_precision_score(labels[:, c], scores[:, c])
    return ap


def timed(fn, *args, repeats: int) -> tuple[float, float, np.ndarray]:
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn(*args)
        times.append(time.perf_counter() - t)
    return min(times), float(np.median(times)), out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--c", type=int, default=1_000)
    ap.add_argument("--pos-frac", type=float, default=0.03)
    ap.add_argument("--tie-frac", type=float, default=0.2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                    help="threads of the parallel vectorised run (the per-class sort runs on blocks of classes)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "metrics.md"))
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")

    scores, labels = make_data(args.n, args.c, args.pos_frac, args.tie_frac, args.seed)
    n_tied = tied_entries(scores)
    load_before = os.getloadavg()
    torch.set_num_threads(1)
    t_skl, t_skl_med, ap_skl = timed(sklearn_loop, scores, labels, repeats=args.repeats)
    t_one, t_one_med, ap_one = timed(average_precision_per_class, scores, labels, repeats=args.repeats)
    torch.set_num_threads(args.threads)
    t_par, t_par_med, ap_par = timed(average_precision_per_class, scores, labels, repeats=args.repeats)
    load_after = os.getloadavg()
    diff = float(max(np.abs(ap_one - ap_skl).max(), np.abs(ap_par - ap_skl).max()))
    assert diff < 1e-6, f"vectorised AP differs from sklearn by {diff}"
    m = mean_average_precision(scores, labels)

    cmd = "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_metrics.py" + (
        " " + " ".join(argv if argv is not None else sys.argv[1:])
    ).rstrip()
    lines = [
        "# Benchmark: vectorised mAP vs per-class sklearn loop",
        "",
        f"Command: `{cmd}`",
        "",
        f"- data: {args.n:,} × {args.c:,} float32 scores, {labels.mean() * 100:.2f} % positives, "
        f"{args.tie_frac:.0%} of scores rounded to 2 decimals (≈{n_tied:,} entries share a score with another "
        f"in their column), seed {args.seed}",
        f"- machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
        f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after",
        f"- numpy {np.__version__}, torch {torch.__version__}, scikit-learn "
        f"{__import__('sklearn').__version__}, Python {platform.python_version()}",
        "",
        f"| implementation | threads | best of {args.repeats} (s) | median (s) | speed-up vs sklearn (best) |",
        "|---|---:|---:|---:|---:|",
        f"| per-class `sklearn.metrics.average_precision_score` loop | 1 | {t_skl:.3f} | {t_skl_med:.3f} | 1.0× |",
        f"| `wsml.metrics.average_precision_per_class` | 1 | {t_one:.3f} | {t_one_med:.3f} | {t_skl / t_one:.1f}× |",
        f"| `wsml.metrics.average_precision_per_class` | {args.threads} | {t_par:.3f} | {t_par_med:.3f} | "
        f"{t_skl / t_par:.1f}× |",
        "",
        "- goal: ≥ 10× faster than the sklearn loop, same values",
        f"- max |AP_wsml − AP_sklearn| over {args.c} classes: {diff:.2e} (asserted < 1e-6); mAP = {m:.4f}",
        "",
        "Where the time goes (vectorised): one value sort per class (numpy `sort`, no argsort) dominates; it runs",
        "on blocks of classes in parallel threads (numpy releases the GIL). The positives are then located with",
        "one batched `torch.searchsorted`. sklearn additionally pays a stable argsort, input checks and Python",
        "overhead per class, and its loop has no parallel form.",
        "",
    ]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
