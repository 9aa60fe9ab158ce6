"""Helpers of the issue-15 study (benchmarks/analysis/study.sh, benchmarks/analysis/Makefile).

  python benchmarks/analysis/study.py choose-delta runs/study/scratch/delta   # Δrel with the best val mAP
  python benchmarks/analysis/study.py peaks runs/study/scratch/main           # Naive AN: best val epoch / budget
  python benchmarks/analysis/study.py summarize runs/study [--results DIR]    # per-seed files, figures, verdicts
  python benchmarks/analysis/study.py stored runs/study/scratch/main/an-s0  # exit 0: its evidence is stored

``summarize`` stores each run folder's evidence under --results (default benchmarks/analysis/results/study) in
``evidence/<regime>/<group>/<run>.json`` and reads it back for the runs whose folders are not on this machine
(``wsml.analysis.study_evidence``), then writes ``runs.csv`` (one row per finished run: every per-seed number
the means are derived from, with its wall time), ``memorization.json`` (Fig 1 / Table 1 per seed),
``fig*_<regime>.png`` and ``verdicts.md`` (ONE table, a column per regime). study.sh skips a run whose stored
evidence is complete (``stored``), so the study continues piecewise on any machine.
"""

from __future__ import annotations

import argparse
import csv
import json
import shlex
import sys
from pathlib import Path

from wsml.analysis.stats import fmt_mean_sd
from wsml.analysis.study import FINDINGS, NAMES, REGIMES, regime_verdicts, verdict_table
from wsml.analysis.study_evidence import (
    RECORD_FIELDS,
    evidence_file,
    gather,
    load_evidence,
    missing,
    read_evidence,
    run_record,
    store_evidence,
)
from wsml.runs import RunFolder

DEFAULT_DELTA = 2.0
RESULTS = Path("benchmarks/analysis/results/study")


def choose_delta(folder: Path, evidence_dir: Path = RESULTS / "evidence") -> float:
    """The Δrel of the seed-0 LL-Ct run with the best val mAP in ``folder`` (``<root>/<regime>/delta``), run
    folder or stored evidence (DEFAULT_DELTA if none).

    Only seed 0 chooses, so that the sweep's further seeds (Fig 5's noise) cannot change the Δrel of runs that
    already used it."""
    stored = [ev["record"] for ev in read_evidence(evidence_dir) if ev["record"]["regime"] == folder.parent.name
              and ev["record"]["group"] == folder.name]
    here = [run_record(s.parent, folder.parent.name, folder.name) for s in folder.glob("*-s0/summary.json")]
    by_d = {float(r["delta_rel"]): r["val_map"] for r in stored + here if r["seed"] == 0}
    return max(by_d, key=by_d.__getitem__) if by_d else DEFAULT_DELTA


def is_stored(run_dir: Path, evidence_dir: Path = RESULTS / "evidence") -> bool:
    """Is the evidence of the run that would live in ``run_dir`` (``.../<regime>/<group>/<run>``) stored and
    complete? Then study.sh need not train it again on this machine."""
    p = evidence_file(evidence_dir, run_dir.parent.parent.name, run_dir.parent.name, run_dir.name)
    return p.is_file() and not missing(load_evidence(p))


def peaks(folder: Path) -> None:
    """Print each Naive AN run's best val epoch against its budget: the budget covers AN's peak when best < last."""
    for summ in sorted(folder.glob("an-s*/summary.json")):
        run = RunFolder(summ.parent)
        s, epochs = run.summary, run.config.train.epochs
        verdict = "peaked inside the budget" if s["best_epoch"] < epochs else "NOT peaked: raise EPOCHS"
        print(f"{summ.parent.name}: best val epoch {s['best_epoch']} of {epochs} ({verdict}); val mAP "
              f"{s['val_map']:.2f}, test mAP {s.get('test_map', float('nan')):.2f}, wall {s.get('wall_time_s')} s")


def write_runs_csv(recs: list[dict], path: Path, command: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = list(RECORD_FIELDS) + sorted({k for r in recs for k in r} - set(RECORD_FIELDS))
    with path.open("w", newline="") as f:
        f.write(f"# {command}\n")
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(recs)


def mean_table(recs: list[dict]) -> list[str]:
    """Mean ± sd of the main runs' test mAP, Pointing Game, best epoch and wall time per regime and method."""
    lines = ["| regime | method | test mAP | Pointing Game % | best val epoch / epochs | wall time per run (s) |",
             "|---|---|---|---|---|---|"]
    for reg in sorted({r["regime"] for r in recs}):
        for m, name in NAMES.items():
            rs = [r for r in recs if r["regime"] == reg and r["group"] == "main" and r["method"] == m]
            if not rs:
                continue
            col = {k: [r[k] for r in rs if r[k] is not None] for k in ("test_map", "pointing_game", "best_epoch",
                                                                          "wall_time_s")}
            lines.append(f"| {reg} | {name} | {fmt_mean_sd(col['test_map'])} | {fmt_mean_sd(col['pointing_game'])} "
                         f"| {fmt_mean_sd(col['best_epoch'], 1)} / {rs[0]['epochs']} | "
                         f"{fmt_mean_sd(col['wall_time_s'], 0)} |")
    return lines


def short_budget(evs: list[dict]) -> list[str]:
    """The 8-epoch budget beside the long one: its mAP, Fig 4 and Pointing Game verdicts (scratch-short runs)."""
    if not any(e["record"]["regime"] == "scratch-short" for e in evs):
        return []
    v = regime_verdicts(evs, "scratch-short")
    return ["## The short budget: the same small CNN from scratch for 8 epochs (`scratch-short`)", "",
            "| paper's finding | 8 epochs |", "|---|---|"] + \
        [f"| {text} | **{v[k]['verdict']}** — {v[k]['evidence']}; noise: {v[k]['noise']} |"
         for k, text in FINDINGS if k in ("map", "fig4", "pointing")] + [""]


def summarize(root: Path, results: Path, command: str) -> None:
    from wsml.analysis.study_plots import regime_figures

    evs = gather(root, results / "evidence")
    stored = store_evidence(evs, results / "evidence")
    recs = [e["record"] for e in evs]
    write_runs_csv(recs, results / "runs.csv", command)
    mem = {f"{r['regime']}/{r['group']}/{r['run']}" + (" eval" if key.endswith("eval") else ""): e[key]
           for e, r in zip(evs, recs) for key in ("memorization", "memorization_eval") if key in e}
    (results / "memorization.json").write_text(json.dumps({"command": command, "runs": mem}, indent=1))
    figs, kept = [], []
    for reg in sorted({r["regime"] for r in recs}):
        w, k = regime_figures(evs, reg, results, root / reg / "cams.png")
        figs, kept = figs + w, kept + k
    here = sum((root / r["regime"] / r["group"] / r["run"] / "summary.json").is_file() for r in recs)
    text = ["# The paper's findings on the Fashion-MNIST mosaics: verdicts", "",
            f"Made by `{command}` from {len(recs)} finished runs: {here} run folders under `{root}` and "
            f"{len(recs) - here} stored in `evidence/` (per-run evidence; per-seed numbers: `runs.csv`, "
            "`memorization.json`). Each verdict is a paired t-test over training seeds (p < 0.05), otherwise "
            "\"within noise\"; with one seed no test is possible: \"untested (n=1)\", and a verdict drawn "
            "from a rule (Fig 1, Table 1, Fig 5) on one seed says \"one seed: untested\".", "",
            verdict_table(evs), "",
            *short_budget(evs),
            "## Main runs, mean ± sd over seeds", ""] + mean_table(recs) + \
        ["", "Figures: " + ", ".join(f"`{p.name}`" for p in figs)] + \
        ([f"Not redrawn (the committed file stays): {'; '.join(kept)}"] if kept else []) + [""]
    (results / "verdicts.md").write_text("\n".join(text))
    print(f"stored {stored} new or changed evidence files; wrote {results / 'verdicts.md'}, runs.csv, "
          f"memorization.json and {len(figs)} figures ({', '.join(REGIMES)} columns)"
          + (f"; not redrawn: {len(kept)}" if kept else ""))


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="study.py")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("choose-delta").add_argument("folder", type=Path)
    sub.add_parser("peaks").add_argument("folder", type=Path)
    s = sub.add_parser("summarize")
    s.add_argument("root", type=Path)
    s.add_argument("--results", type=Path, default=RESULTS)
    sub.add_parser("stored").add_argument("run_dir", type=Path)
    a = p.parse_args(argv)
    if a.cmd == "choose-delta":
        print(f"{choose_delta(a.folder):g}")
    elif a.cmd == "stored":
        return 0 if is_stored(a.run_dir) else 1
    elif a.cmd == "peaks":
        peaks(a.folder)
    else:
        summarize(a.root, a.results, "python benchmarks/analysis/study.py " + " ".join(shlex.quote(x) for x in argv))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
