"""``wsml predict`` over folders of many small images: wall time and peak RSS, to show that memory stays flat
as the number of images grows (issue 17: the output is streamed, one batch of 256 images at a time).

Writes N random 8×8 RGB PNG files per size (reused when present) and runs
``wsml predict RUN FOLDER --top-k 3 --out preds.csv`` in a child process for each size; ``--tree`` picks the
checkout whose ``wsml`` runs (to compare with an older one).

  OMP_NUM_THREADS=1 nice -n 10 python benchmarks/scale_predict.py --run RUN_DIR --sizes 1000 10000 30000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def make_folder(folder: Path, n: int) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    have = len(list(folder.glob("*.png")))
    rng = np.random.default_rng(0)
    for i in range(have, n):
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(folder / f"{i:06d}.png")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="a finished image run folder")
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    p.add_argument("--work", default="/tmp/wsml_scale_predict", help="where the image folders are written")
    p.add_argument("--tree", default=str(Path(__file__).resolve().parents[1]), help="checkout to run wsml from")
    a = p.parse_args()
    for n in a.sizes:
        folder = Path(a.work) / f"images_{n}"
        make_folder(folder, n)
        out = Path(a.work) / f"preds_{n}.csv"
        t0 = time.perf_counter()
        child = subprocess.Popen([sys.executable, "-m", "wsml.cli", "predict", a.run, str(folder), "--top-k", "3",
                                  "--out", str(out)], stdout=subprocess.DEVNULL, cwd=a.tree,
                                 env=dict(os.environ, PYTHONPATH=a.tree))
        _, status, usage = os.wait4(child.pid, 0)  # this child's own peak RSS
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode:
            raise SystemExit(f"wsml predict failed with exit code {child.returncode}")
        print(json.dumps({"images": n, "tree": a.tree, "wall_s": round(time.perf_counter() - t0, 1),
                          "peak_rss_mib": round(usage.ru_maxrss / 1024),
                          "output_rows": sum(1 for _ in open(out)) - 1}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
