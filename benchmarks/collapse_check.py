"""How much of the test label matrix a finished benchmark run predicts positive (score >= 0.5).

The paper says methods that use only observed labels (Naive IU, Curriculum labelling, IMCL) collapse to
predicting every label positive when only single positives are observed. This reads the test predictions
of benchmark runs and prints, per method, the share of test entries with score >= 0.5 and the mean score,
next to the true share of positive entries.

    .venv/bin/python benchmarks/collapse_check.py runs/bench/fashion iu curriculum iu-smooth an ll-r
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from wsml.runs import RunFolder


def main(argv: list[str]) -> int:
    grid, methods = Path(argv[0]), argv[1:]
    print("| method | runs | test entries predicted positive (score ≥ 0.5) | mean score | true positive share |")
    print("|---|---:|---:|---:|---:|")
    for m in methods:
        runs = sorted(p for p in (grid / m).iterdir() if (p / "predictions_test.npz").is_file())
        shares, means, truth = [], [], []
        for run in runs:
            folder = RunFolder(run)
            scores = folder.predictions("test")[0]
            shares.append((scores >= 0.5).mean())
            means.append(scores.mean())
            index = folder.dataset
            truth.append(index["test"].full.mean())
        print(f"| {m} | {len(runs)} | {np.mean(shares) * 100:.1f} % | {np.mean(means):.3f} | "
              f"{np.mean(truth) * 100:.1f} % |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
