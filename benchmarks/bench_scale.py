"""Scale benchmark (issue 17): a synthetic own-data set of N rows x C classes with 64-dim feature rows, run through
the CLI step by step — ``prepare csv``, one epoch of LL-R on the ``linear`` backbone, ``eval``, ``find-missing
--k 10000`` — each step a fresh child process whose wall time and peak RSS are reported.

Each training row lists 2 positives and 3 negatives (``labels`` and ``negatives`` columns), the setting of the
issue's measurement; 12.5 % of the rows are test rows whose 2 positives are their complete label set; val is
20 % of the training rows (partial labels, as ``prepare csv`` draws it without a val split); features are the
sum of the positives' class prototypes plus noise, so the model is cheap and the label machinery dominates.
A step that fails or runs past ``--timeout`` is reported in the table (with the last line of its error) instead
of stopping the benchmark; the steps that need its output are skipped.

    nice -n 10 env OMP_NUM_THREADS=2 python benchmarks/bench_scale.py --rows 100000 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
STEPS = ("prepare", "train", "eval", "find-missing")
NEEDS = {"train": "prepare", "eval": "train", "find-missing": "train"}
TEST_SHARE = 0.125  # OpenImages: 125 k test images for 1 M training images
_MEASURE = """import json, resource, subprocess, sys, time
out, limit, cmd = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
t = time.time()
p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(out + ".err", "w"))
killed = ""
while p.poll() is None:
    try:
        rss = next(int(l.split()[1]) * 1024 for l in open(f"/proc/{p.pid}/status") if l.startswith("VmRSS"))
    except (OSError, StopIteration):
        rss = 0
    if rss > limit:
        p.kill()
        killed = f"killed: RSS above the --max-rss limit of {limit / 2**30:.1f} GiB"
    time.sleep(0.2)
err = [l for l in open(out + ".err").read().splitlines() if l.strip()]
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
json.dump({"rc": p.returncode, "wall": time.time() - t, "rss": rss, "err": killed or (err[-1] if err else "")},
          open(out, "w"))
"""


def make_data(folder: Path, rows: int, classes: int, dim: int, seed: int = 0) -> None:
    """labels.csv (path,labels,negatives) and features.npy [rows, dim] float32, written in blocks."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    proto = rng.standard_normal((classes, dim)).astype(np.float32)
    names = [f"c{c:05d}" for c in range(classes)]
    feats = np.lib.format.open_memmap(folder / "features.npy", mode="w+", dtype=np.float32, shape=(rows, dim))
    with open(folder / "labels.csv", "w") as f:
        f.write("path,labels,negatives,split\n")
        for start in range(0, rows, 100_000):
            n = min(100_000, rows - start)
            # 5 distinct classes per row (2 positives, then 3 negatives): a uniform base class plus distinct offsets
            offsets = np.cumsum(rng.integers(1, max(2, min(40, classes // 5)), (n, 5)), axis=1) - 1
            pick = (rng.integers(0, classes, (n, 1)) + offsets) % classes
            feats[start:start + n] = proto[pick[:, 0]] + proto[pick[:, 1]] + \
                0.5 * rng.standard_normal((n, dim)).astype(np.float32)
            test = rng.random(n) < TEST_SHARE  # test rows: their 2 positives are the complete label set
            f.write("".join(f"img/{start + i}.jpg,{names[a]};{names[b]},,test\n" if test[i] else
                            f"img/{start + i}.jpg,{names[a]};{names[b]},{names[c]};{names[d]};{names[e]},train\n"
                            for i, (a, b, c, d, e) in enumerate(pick.tolist())))
    feats.flush()
    del feats


def measure(cmd: list[str], timeout: float, max_rss: float, env: dict) -> dict:
    """Run ``cmd`` in a fresh measuring child: rc, wall seconds, peak RSS bytes of the command, last error line.
    The command is killed when its RSS passes ``max_rss`` bytes (the machine is shared)."""
    out = Path(env["BENCH_TMP"]) / "measure.json"
    out.unlink(missing_ok=True)
    t = time.time()
    try:
        subprocess.run([sys.executable, "-c", _MEASURE, str(out), str(max_rss), *cmd], env=env, timeout=timeout,
                       check=False)
    except subprocess.TimeoutExpired:
        return {"rc": "timeout", "wall": time.time() - t, "rss": None, "err": f"no result after {timeout:.0f} s"}
    return json.loads(out.read_text()) if out.is_file() else {"rc": "?", "wall": time.time() - t, "rss": None,
                                                                "err": "the measuring child wrote nothing"}


def steps(work: Path, k: int) -> dict[str, list[str]]:
    cli = [sys.executable, "-m", "wsml.cli"]
    run = work / "runs" / "scale"
    return {
        "prepare": cli + ["prepare", "csv", "--root", str(work / "raw"), "--out", str(work / "prepared"),
                          "features=features.npy"],
        "train": cli + ["train", str(work / "config.yaml")],
        "eval": cli + ["eval", str(run)],
        "find-missing": cli + ["find-missing", str(run), "--k", str(k), "--out", str(work / "missing.csv")],
    }


CONFIG = """data: {{path: {path}, num_workers: 0}}
model: {{backbone: linear, pretrained: false}}
loss: {{name: ll-r, delta_rel: 0.2}}
optim: {{name: adam, lr: 1.0e-3}}
train: {{scheme: end-to-end, epochs: 1, batch_size: 288, device: cpu}}
run: {{out: {out}, name: scale, overwrite: true, quiet: true}}
"""


def bench(rows: int, classes: int, dim: int, work: Path, wanted: list[str], timeout: float, max_rss: float,
          k: int) -> list[dict]:
    work.mkdir(parents=True, exist_ok=True)
    t = time.time()
    make_data(work / "raw", rows, classes, dim)
    results = [{"rows": rows, "step": "(generate data, not timed as a CLI step)", "rc": 0, "wall": time.time() - t,
                "rss": None, "err": ""}]
    (work / "config.yaml").write_text(CONFIG.format(path=work / "prepared", out=work / "runs"))
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "BENCH_TMP": str(work)}
    failed: set[str] = set()
    for name, cmd in steps(work, k).items():
        if name not in wanted:
            continue
        if NEEDS.get(name) in failed:
            results.append({"rows": rows, "step": name, "rc": "skipped", "wall": None, "rss": None,
                            "err": f"{NEEDS[name]} failed"})
            failed.add(name)
            continue
        r = measure(cmd, timeout, max_rss, env)
        print(f"{rows} rows, {name}: {r}", file=sys.stderr, flush=True)
        results.append({"rows": rows, "step": name, **r, "cmd": " ".join(shlex.quote(c) for c in cmd[2:])})
        if r["rc"] != 0:
            failed.add(name)
    return results


def table(results: list[dict]) -> list[str]:
    lines = ["| rows | step | wall (s) | peak RSS (GiB) | status |", "|---:|---|---:|---:|---|"]
    for r in results:
        wall = "" if r["wall"] is None else f"{r['wall']:.1f}"
        rss = "" if r["rss"] is None else f"{r['rss'] / 2**30:.2f}"
        rc = r["rc"]
        rc = f"signal {-rc}" if isinstance(rc, int) and rc < 0 else rc
        status = "ok" if rc == 0 else f"{rc}: {r['err'][:160]}".replace("|", "/")
        lines.append(f"| {r['rows']:,} | {r['step']} | {wall} | {rss} | {status} |")
    return lines


def _ram() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument("--classes", type=int, default=5000)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated subset of {','.join(STEPS)}")
    p.add_argument("--k", type=int, default=10_000, help="find-missing --k")
    p.add_argument("--timeout", type=float, default=3600, help="seconds per step before it is reported as timed out")
    p.add_argument("--max-rss", type=float, default=round(_ram() / 2**30 / 2, 1),
                   help="GiB: a step whose RSS passes this is killed and reported (default: half the machine's RAM)")
    p.add_argument("--work", default="/tmp/wsml-bench-scale", help="scratch folder (data, prepared folder, run)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "scale.md"))
    a = p.parse_args(argv)
    wanted = [s.strip() for s in a.steps.split(",") if s.strip()]
    unknown = sorted(set(wanted) - set(STEPS))
    if unknown:
        p.error(f"unknown step(s) {unknown}; steps are {list(STEPS)}")
    results = []
    for n in a.rows:
        results += bench(n, a.classes, a.dim, Path(a.work) / f"n{n}", wanted, a.timeout, a.max_rss * 2**30, a.k)
    threads = os.environ.get("OMP_NUM_THREADS", "unset")
    lines = ["python benchmarks/bench_scale.py " + " ".join(shlex.quote(x) for x in (argv or sys.argv[1:])), "",
             f"Synthetic own data: {a.classes} classes, {a.dim}-dim feature rows, 2 positives + 3 negatives per "
             f"row; each step a fresh `wsml` child process (peak RSS = ru_maxrss of that child); "
             f"OMP_NUM_THREADS={threads}, {os.cpu_count()} CPUs visible.", "", *table(results), "",
             "Commands (ROWS = the scratch folder of each size):", ""]
    first = str(Path(a.work) / f"n{a.rows[0]}")
    lines += [f"- {r['step']}: `{r['cmd'].replace(first, 'ROWS')}`" for r in results
              if "cmd" in r and r["rows"] == a.rows[0]]
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
