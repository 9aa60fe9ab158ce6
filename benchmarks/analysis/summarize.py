"""Key numbers of the analysis benchmark as Markdown (benchmarks/analysis/results/summary.md).

Usage: python benchmarks/analysis/summarize.py runs/analysis > benchmarks/analysis/results/summary.md
(run_all.sh's `analyze` step does this after training and analysing the runs).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np

from wsml.analysis.memorization import memorization_summary
from wsml.analysis.stats import fmt_mean_sd
from wsml.runs import RunFolder

METHODS = {"an": "Naive AN", "ll-r": "LL-R", "ll-ct": "LL-Ct", "ll-cp": "LL-Cp"}
NAMES = {**METHODS, "ll-cp-d1": "LL-Cp (Δrel 1)"}


def seeds(out: Path, m: str) -> list[Path]:
    return [p for p in (out / m, out / f"{m}-s1", out / f"{m}-s2") if (p / "summary.json").exists()]


def methods_table(out: Path) -> list[str]:
    lines = ["## Test mAP and Pointing Game (Table 4), mean ± sd over training seeds", "",
             "| method | seeds | test mAP | Pointing Game % | random point % |", "|---|---|---|---|---|"]
    for m, name in METHODS.items():
        runs = seeds(out, m)
        maps = [RunFolder(r).summary["test_map"] for r in runs]
        pg = [json.loads(p.read_text()) for p in (r / "analysis" / "pointing_game.json" for r in runs) if p.exists()]
        lines.append(f"| {name} | {len(runs)} | {fmt_mean_sd(maps)} | {fmt_mean_sd([p['score'] for p in pg])} | "
                     f"{fmt_mean_sd([p['random_score'] for p in pg])} |")
    return lines + [""]


def precision_table(out: Path) -> list[str]:
    lines = ["## Precision of modification (Fig 4), %, mean over seeds; LL-Cp accumulated", ""]
    rows, base = {}, []
    for m in ("ll-r", "ll-ct", "ll-cp", "ll-cp-d1"):
        per_seed = []
        for r in seeds(out, m):
            run = RunFolder(r)
            col = "mod_cum_precision" if m.startswith("ll-cp") else "mod_precision"
            per_seed.append([100 * v for v in run.column(col)])
            base += [100 * b for b in run.column("mod_base_rate") if not math.isnan(b)]
        if per_seed:
            a = np.asarray(per_seed, dtype=float)
            n = (~np.isnan(a)).sum(0)
            rows[NAMES[m]] = np.where(n > 0, np.nansum(a, 0) / np.maximum(n, 1), np.nan)
    if not rows:
        return []
    n_ep = max(len(v) for v in rows.values())
    lines += ["| method | " + " | ".join(f"ep {e}" for e in range(1, n_ep + 1)) + " |",
              "|---|" + "---|" * n_ep]
    for name, v in rows.items():
        lines.append(f"| {name} | " + " | ".join("–" if math.isnan(x) else f"{x:.1f}" for x in v) + " |")
    lines += ["", f"Base rate (truly positive among unobserved training entries): {np.mean(base):.2f}%", ""]
    return lines


def memorization_tables(out: Path) -> list[str]:
    lines = ["## Memorization under Naive AN (Fig 1, Table 1)", ""]
    for name in ("mem-an", "mem-an-1k", "an", "ll-ct"):
        if not (out / name / "metrics.csv").exists():
            continue
        s = memorization_summary(out / name)
        lines += [f"### {name} ({s.get('epochs', '?')} epochs)", "",
                  "| group | loss after epoch 1 | peak epoch | peak loss | final loss | rises then falls | "
                  "highest loss in epoch 1 (%) | median epoch of highest loss |", "|---|---|---|---|---|---|---|---|"]
        for g, p in s["peaks"].items():
            t = s.get("table1", {}).get(g, {})
            lines.append(f"| {g} | {p['start_loss']:.4f} | {p['peak_at']:.0f} | {p['peak_loss']:.4f} | "
                         f"{p['final_loss']:.4f} | {'yes' if p['rises_then_falls'] else 'no'} | "
                         f"{t.get('warmup_pct', math.nan):.1f} | {t.get('median_peak_epoch', math.nan):.0f} |")
        lines.append("")
    return lines


def sweep_table(out: Path, folder: str, title: str) -> list[str]:
    p = out / folder / "sweep.json"
    if not p.exists():
        return []
    sw = json.loads(p.read_text())
    lines = [f"## {title}", "", f"Command: `{sw['command']}`", "",
             "| " + sw["param"] + " | " + " | ".join(f"{m} test mAP (best epoch)" for m in sw["runs"]) + " |",
             "|---|" + "---|" * len(sw["runs"])]
    for j, v in enumerate(sw["values"]):
        cells = [f"{r[j]['test_map']:.2f} ({r[j]['best_epoch']})" for r in sw["runs"].values()]
        lines.append(f"| {v} | " + " | ".join(cells) + " |")
    return lines + [""]


def main(out: str) -> None:
    o = Path(out)
    print("# Analysis benchmark: key numbers\n")
    print("Made by `bash benchmarks/analysis/run_all.sh` (this file: `python benchmarks/analysis/summarize.py "
          f"{out}`). Data: Fashion-MNIST mosaics, configs/fashion (small CNN, 8 epochs), single-positive labels.\n")
    for block in (methods_table(o), precision_table(o), memorization_tables(o),
                  sweep_table(o, "sweep-delta", "LL-Ct vs Δrel (Fig 5)"),
                  sweep_table(o, "sweep-frac", "Fraction of training images (Fig 6)")):
        print("\n".join(block))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/analysis")
