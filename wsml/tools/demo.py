"""``make demo``: Naive AN vs LL-R / LL-Ct on the embedded Fashion-MNIST mosaics, on a CPU, in minutes.

Prepares the mosaics once (offline, from Debian's dataset-fashion-mnist), then runs ``wsml train
configs/fashion/<method>.yaml`` for each method as separate processes, all at once, each with its share
of the CPU threads (one small CNN per core scales better than one run on two threads), and prints a table
of the test mAP of each run's best-val checkpoint. Run folders go to ``runs/demo/<method>``; the table is also written
to ``runs/demo/results.md``.

    python -m wsml.tools.demo [--methods an ll-r ll-ct] [--out runs/demo] [extra key=value overrides]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "fashion"  # wsml/tools/demo.py -> repo root
NAMES = {"an": "Naive AN", "ll-r": "LL-R", "ll-ct": "LL-Ct", "ll-cp": "LL-Cp", "wan": "WAN", "lsan": "LSAN",
         "epr": "EPR", "role": "ROLE", "iu": "Naive IU", "full": "Full labels"}


def _pump(proc: subprocess.Popen, tag: str, lock: threading.Lock) -> None:
    for line in proc.stdout:
        with lock:
            print(f"[{tag:>5}] {line}", end="", flush=True)


def run_methods(methods: list[str], out: Path, overrides: list[str], parallel: int) -> dict[str, float]:
    """Train every method (``parallel`` processes at a time); return the wall time of each run."""
    threads = max(1, (os.cpu_count() or 1) // parallel)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    lock, pending, running, times = threading.Lock(), list(methods), {}, {}
    while pending or running:
        while pending and len(running) < parallel:
            m = pending.pop(0)
            cmd = [sys.executable, "-m", "wsml.cli", "train", str(CONFIGS / f"{m}.yaml"), f"run.out={out}",
                   f"run.name={m}", "run.overwrite=true", *overrides]
            print("$ wsml train " + " ".join(cmd[4:]), flush=True)
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                    bufsize=1)
            t = threading.Thread(target=_pump, args=(proc, m, lock), daemon=True)
            t.start()
            running[m] = (proc, t, time.time())
        time.sleep(0.2)
        for m, (proc, t, t0) in list(running.items()):
            if proc.poll() is not None:
                t.join()
                del running[m]
                times[m] = time.time() - t0
                if proc.returncode != 0:
                    for p, _, _ in running.values():
                        p.terminate()
                    raise SystemExit(f"demo: `wsml train` for {m} failed (exit code {proc.returncode})")
    return times


def results_table(methods: list[str], out: Path, times: dict[str, float]) -> str:
    """A Markdown table of the runs' summaries (test mAP of the best-val checkpoint)."""
    rows = ["| method | test mAP | val mAP | best epoch | Δ test vs Naive AN | train time |",
            "|---|---:|---:|---:|---:|---:|"]
    from wsml.runs import RunFolder

    summaries = {m: RunFolder(out / m).summary for m in methods}
    base = summaries.get("an", {}).get("test_map")
    for m in methods:
        s = summaries[m]
        delta = "" if base is None or m == "an" else f"{s['test_map'] - base:+.2f}"
        rows.append(f"| {NAMES.get(m, m)} | {s['test_map']:.2f} | {s['val_map']:.2f} | {s['best_epoch']}/{s['epochs']}"
                    f" | {delta} | {times.get(m, s['wall_time_s']):.0f} s |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--methods", nargs="+", default=["an", "ll-r", "ll-ct"], choices=sorted(NAMES))
    ap.add_argument("--out", default="runs/demo", help="parent folder of the run folders (default runs/demo)")
    ap.add_argument("--parallel", type=int, default=0, help="runs at a time (default: all; the CPU threads are "
                    "shared out between them)")
    ap.add_argument("overrides", nargs="*", metavar="key=value", help="extra config overrides for every run")
    args = ap.parse_args(argv)
    started = time.time()
    from wsml.config import load_config
    from wsml.train.builders import load_index

    cfg = load_config(CONFIGS / "base.yaml", args.overrides)
    print(f"== data: {cfg.data.path} (Fashion-MNIST mosaics, prepared once)", flush=True)
    index = load_index(cfg.data)
    st = index.meta.get("stats", {})
    if "train" in st:
        print(f"   train {st['train']['rows']} / val {st['val']['rows']} / test {st['test']['rows']} images, "
              f"{st['train'].get('mean_positives', float('nan')):.2f} positives per image, 1 observed", flush=True)
    out = Path(args.out)
    parallel = args.parallel or len(args.methods)  # one small CNN per core scales better than 2 threads per run
    print(f"== training {', '.join(NAMES[m] for m in args.methods)} ({parallel} at a time)", flush=True)
    times = run_methods(args.methods, out, args.overrides, parallel)
    table = results_table(args.methods, out, times)
    total = time.time() - started
    text = (f"Fashion-MNIST mosaics, small CNN, single positive label per training image; test mAP of the "
            f"best-val epoch.\n\n{table}\n\ntotal wall time {total:.0f} s (data preparation included)\n")
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(text)
    print("\n" + text, flush=True)
    print(f"run folders: {', '.join(str(out / m) for m in args.methods)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
