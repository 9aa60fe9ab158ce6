"""Summarise the paper-scale runs of run_paper.sh beside the paper's numbers (Tables 2 and 3).

Reads ``<runs>/<dataset>/<scheme>/<method>/s<seed>/summary.json`` and writes one Markdown file: per data set and
scheme, mean ± std test mAP over seeds next to the paper's value, Δ vs Naive AN, the AN→Full gap closed, and for
OpenImages the group mAP G1–G5 (classes grouped by the number of training images with a known label).

    .venv/bin/python benchmarks/paper/summarize.py runs/paper --out benchmarks/results/paper.md
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from wsml.bench import report as R
from wsml.runs import RunFolder

# Paper Table 2 (mAP; VOC, COCO, NUS-WIDE, CUB) and Table 3 (OpenImages V3, All Gs + G1..G5).
PAPER = {
    "end-to-end": {"full": (90.2, 78.0, 54.5, 32.9), "an": (85.1, 64.1, 42.0, 19.1), "wan": (86.5, 64.8, 46.3, 20.3),
                   "lsan": (86.7, 66.9, 44.9, 17.9), "epr": (85.5, 63.3, 46.0, 20.0), "role": (87.9, 66.3, 43.1, 15.0),
                   "ll-r": (89.2, 71.0, 47.4, 19.5), "ll-ct": (89.0, 70.5, 48.0, 20.4),
                   "ll-cp": (88.4, 70.7, 48.3, 20.1)},
    "linearinit": {"full": (91.1, 77.2, 54.9, 34.0), "an": (86.9, 68.7, 47.6, 20.9), "wan": (87.1, 68.0, 47.5, 21.1),
                   "lsan": (86.5, 69.2, 50.5, 16.6), "epr": (84.9, 66.8, 48.1, 21.2), "role": (88.2, 69.0, 51.0, 16.8),
                   "ll-r": (89.4, 71.9, 49.1, 21.5), "ll-ct": (89.3, 71.6, 49.6, 21.8),
                   "ll-cp": (88.3, 71.0, 49.4, 21.4)},
}
DATASETS = ("voc", "coco", "nus", "cub")
OPENIMAGES = {"iu": (69.5, 70.3, 74.8, 79.2, 85.5, 75.9), "curriculum": (70.4, 71.3, 76.2, 80.5, 86.8, 77.1),
              "imcl": (71.0, 72.6, 77.6, 81.8, 87.3, 78.1), "an": (77.1, 78.7, 81.5, 84.1, 88.8, 82.0),
              "wan": (71.8, 72.8, 76.3, 79.7, 84.7, 77.0), "lsan": (68.4, 69.3, 73.7, 77.9, 85.6, 75.0),
              "ll-r": (77.4, 79.1, 82.0, 84.5, 89.5, 82.5), "ll-ct": (77.7, 79.3, 82.1, 84.7, 89.4, 82.6),
              "ll-cp": (77.6, 79.1, 81.9, 84.6, 89.4, 82.5)}
# "imcl" is the paper's number only: wsml does not implement IMCL, so that row never gets a wsml value.
ORDER = ["full", "an", "iu", "wan", "lsan", "epr", "role", "curriculum", "imcl", "ll-r", "ll-ct", "ll-cp"]


def collect(folder: Path, group_map: bool) -> list[dict]:
    runs = []
    for s in sorted(folder.glob("*/s*/summary.json")):
        run = RunFolder(s.parent)
        d = run.summary
        rec = {"method": s.parent.parent.name, "seed": int(s.parent.name[1:].split("-")[0]),
               "test_map": d["test_map"], "val_map": d["val_map"], "best_epoch": d["best_epoch"],
               "wall_time_s": d.get("wall_time_s"), "run_dir": str(s.parent)}
        if group_map:
            gm = R.run_group_map(str(s.parent), str(run.data_path), 5)
            gm.pop("groups")
            rec["group_map"] = gm
        runs.append(rec)
    return runs


def section(title: str, runs: list[dict], paper: dict) -> list[str]:
    methods = [m for m in ORDER if any(r["method"] == m for r in runs)]
    table = R.summarise(runs, methods)
    comp = {c["method"]: c for c in R.compare(runs, table, "an", "full", methods)}
    lines = [f"### {title}", "", "| method | paper | ours (mean ± std) | runs | Δ vs AN | gap closed |",
             "|---|---|---|---|---|---|"]
    for row in table:
        c = comp.get(row["method"])
        delta = f"{c['delta']:+.1f}" if c else "–"
        gap = "–" if not c or c["gap_closed"] != c["gap_closed"] else f"{100 * c['gap_closed']:.0f} %"
        lines.append(f"| {row['method']} | {paper.get(row['method'], '–')} | {row['test_map_mean']:.1f} ± "
                     f"{row['test_map_std']:.1f} | {row['runs']} | {delta} | {gap} |")
    return lines + [""]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", help="the OUT folder of run_paper.sh (runs/paper)")
    p.add_argument("--out", default="benchmarks/results/paper.md")
    args = p.parse_args(argv)
    root = Path(args.runs)
    lines = ["# Paper-scale results beside the paper (Tables 2, 3)", "",
             f"Command: `.venv/bin/python benchmarks/paper/summarize.py {' '.join(argv or sys.argv[1:])}`",
             "", "std over seeds (ddof=1); Δ vs AN = mean − mean(Naive AN); gap closed = Δ / (Full − AN).", ""]
    for scheme in ("end-to-end", "linearinit"):
        for i, ds in enumerate(DATASETS):
            runs = collect(root / ds / scheme, group_map=False)
            if runs:
                paper = {m: v[i] for m, v in PAPER[scheme].items()}
                lines += section(f"{ds.upper()} — {scheme}", runs, paper)
    oi = collect(root / "openimages" / "end-to-end", group_map=True)
    if oi:
        lines += section("OpenImages V3 — All Gs", oi, {m: v[5] for m, v in OPENIMAGES.items()})
        lines += ["| method | " + " | ".join(f"G{g} (paper / ours)" for g in range(1, 6)) + " |", "|---" * 6 + "|"]
        for m in ORDER:
            rs = [r for r in oi if r["method"] == m]
            if rs:
                cells = [f"{OPENIMAGES.get(m, ('–',) * 6)[g - 1]} / "
                         f"{sum(r['group_map'][f'G{g}'] for r in rs) / len(rs):.1f}" for g in range(1, 6)]
                lines.append(f"| {m} | " + " | ".join(cells) + " |")
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
