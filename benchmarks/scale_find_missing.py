"""find-missing's streaming ranking at 1 M × 5000: wall time and peak RSS of ``--k`` and threshold modes (issue 17).

The ranking exactly as ``wsml find-missing`` runs it (``wsml.tools.find_missing._chunk_ranked`` per chunk of 4096
training rows, ``wsml.tools.ranking.TopPairs``), on synthetic sigmoid scores generated chunk by chunk (what
``ScoreChunks.row_chunks`` hands over; reading chunk files back is measured by ``scale_eval.py``) and sparse
observed labels (2 positives + 3 negatives per row). Each mode runs in a fresh child process; its peak RSS is
reported. A dense N × C float32 score matrix alone would be 20 GB.

  OMP_NUM_THREADS=1 nice -n 10 python benchmarks/scale_find_missing.py --rows 1000000 --classes 5000
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np


def run(rows: int, classes: int, k, chunk: int = 4096) -> dict:
    from wsml.labels import SparseLabels, as_observed
    from wsml.tools.find_missing import _chunk_ranked
    from wsml.tools.ranking import TopPairs

    rng = np.random.default_rng(0)
    cols = rng.integers(0, classes, size=(rows, 5))  # 5 class ids per row (a repeated one: the later value wins)
    obs = SparseLabels.from_coo(np.repeat(np.arange(rows), 5), cols.ravel(), np.tile([1, 1, -1, -1, -1], rows),
                                (rows, classes))
    thr = np.full(classes, 0.9995)  # flags ~0.05 % of the entries: ~2.5 M pairs at 1 M × 5000
    t0 = time.perf_counter()
    top = TopPairs(k)
    for r0 in range(0, rows, chunk):
        r = np.arange(r0, min(rows, r0 + chunk))
        scores = rng.random((len(r), classes), dtype=np.float32)
        _chunk_ranked("model", r, as_observed(obs, r), thr, scores, None, None, None, top)
    out = top.result()
    return {"k": k, "pairs": len(out), "rank_s": round(time.perf_counter() - t0, 1),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "best_score": float(out.score[0]) if len(out) else None}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--classes", type=int, default=5000)
    p.add_argument("--k", type=int, default=10_000)
    p.add_argument("--child", choices=["k", "threshold"], help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        print(json.dumps(run(a.rows, a.classes, a.k if a.child == "k" else None)))
        return 0
    for mode in ("k", "threshold"):
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, __file__, "--rows", str(a.rows), "--classes", str(a.classes),
                              "--k", str(a.k), "--child", mode], check=True, capture_output=True, text=True)
        res = json.loads(out.stdout)
        print(json.dumps({"mode": mode, "rows": a.rows, "classes": a.classes, **res,
                          "process_wall_s": round(time.perf_counter() - t0, 1)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
