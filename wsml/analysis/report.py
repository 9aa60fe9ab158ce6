"""``wsml report``: one Markdown or HTML page with the metrics, curves and analyses of some run folders.

Each section appears only when its inputs exist: the metrics table and training curves (every run),
memorization (``mem_*`` columns / memorization_*.{csv,npz}), precision of modification (``mod_*``
columns), qualitative modifications (modifications.npz + the prepared data set), the Pointing Game
(``analysis/pointing_game.json``, written by ``wsml analyze pointing``) and sweeps (folders with
``sweep.json``, written by ``wsml analyze sweep``).
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from wsml._types import PathLike
from wsml.analysis import memorization as mem
from wsml.analysis.document import Document
from wsml.analysis.plots import plot_memorization, plot_precision, plot_sweep, plot_training_curves
from wsml.analysis.sweeps import SWEEP_FILE
from wsml.registry import normalise
from wsml.runs import RunFolder, read_json

CRITERIA = {"map": "mAP", "pu-auc": "PU-AUC"}  # metrics.csv / summary.json val_criterion -> the name shown


def _number(value: Any) -> float:
    return math.nan if value is None or isinstance(value, str) else float(value)


def best_epoch(run: RunFolder) -> tuple[Optional[int], float, str, float]:
    """(epoch, val score, its criterion, test mAP) of the epoch training kept: ``summary.json``'s best epoch, picked by
    val mAP or, with partial val labels, by PU-AUC (the ``val_map`` column's maximum is then not what picked it, and
    for LinearInit it may be a stage-1 epoch). Without ``summary.json`` (training, interrupted): the best so far by
    the same rule, among the epochs of the last stage."""
    results = run.summary if run.file("summary.json").is_file() else {}
    test = _number(results.get("test_map"))
    if results.get("best_epoch") is not None:
        val = results.get("val_score", results.get("val_map"))
        return int(results["best_epoch"]), _number(val), results.get("val_criterion", "map"), test
    cols = run.columns
    vcol = "val_score" if "val_score" in cols else "val_map" if "val_map" in cols else None
    if vcol is None:
        return None, math.nan, "map", test
    val = np.asarray(run.column(vcol), dtype=float)
    if "stage" in cols:  # the best epoch is chosen within the last stage (LinearInit: fine-tuning)
        val[np.asarray(cols["stage"]) != cols["stage"][-1]] = math.nan
    if np.isnan(val).all():
        return None, math.nan, "map", test
    i = int(np.nanargmax(val))
    epochs = run.column("epoch") or list(range(1, len(val) + 1))
    criterion = str(cols["val_criterion"][i]) if "val_criterion" in cols else "map"
    if math.isnan(test) and "test_map" in cols:  # older runs scored test every epoch
        test = float(run.column("test_map")[i])
    return int(epochs[i]), float(val[i]), criterion, test


def _curve_columns(runs: Sequence[RunFolder]) -> list[str]:
    cols: list[str] = []
    for r in runs:
        for c in r.columns:
            lc = c.lower()
            if c not in cols and not lc.startswith(("mem_", "mod_")) and ("loss" in lc or "map" in lc):
                cols.append(c)
    return cols[:4]


def _metrics_section(doc: Document, runs: list[RunFolder], assets: Path) -> None:
    doc.heading("Runs")
    rows = []
    for r in runs:
        ep, val, criterion, test = best_epoch(r)
        dr = r.delta_rel  # only for losses that have a Δrel
        score = "–" if math.isnan(val) else f"{val:.2f} ({CRITERIA.get(criterion, criterion)})"
        rows.append([r.path.name, r.loss_name, "–" if dr is None else str(dr), len(r.metrics), ep, score, test])
    doc.table(["run", "loss", "Δrel", "epochs", "best epoch", "val score (picked by)", "test mAP (best val epoch)"],
              rows)
    _outputs_section(doc, runs)
    cols = _curve_columns(runs)
    if cols:
        png = plot_training_curves({r.label: r.columns for r in runs}, assets / "training_curves.png", cols)
        doc.image(png, "Training curves")


def _outputs_section(doc: Document, runs: list[RunFolder]) -> None:
    """What ``wsml eval`` and ``wsml find-missing`` wrote into the run folders, when they did."""
    rows = []
    for r in runs:
        ev = r.path / "eval_test.json"
        fm = r.path / "find_missing.json"
        if not ev.is_file() and not fm.is_file():
            continue
        e = read_json(ev) if ev.is_file() else {}
        f = read_json(fm) if fm.is_file() else {}
        rows.append([r.path.name, e.get("map"), e.get("macro_f1"), e.get("policy", "–"),
                     f.get("pairs", "–"), f.get("what", "–"), f.get("out", "–")])
    if rows:
        doc.heading("Evaluation and find-missing")
        doc.table(["run", "test mAP (wsml eval)", "macro F1", "mAP policy", "find-missing pairs", "kind", "file"],
                  rows)


def _memorization_section(doc: Document, runs: list[RunFolder], assets: Path) -> None:
    have = [(r, curve) for r, curve in ((r, mem.group_curve(r.path)) for r in runs) if curve is not None]
    if not have:
        return
    doc.heading("Memorization (Fig 1, Table 1)")
    doc.para("Mean BCE loss against the assume-negative target of observed positives (pos), unobserved true "
             "negatives (tn) and unobserved true positives = false negatives under AN (fn). The paper's finding: "
             "tn falls from the start, fn rises first, peaks in the middle of training, then falls (memorization).")
    for i, (r, curve) in enumerate(have):
        png = plot_memorization(curve, assets / f"memorization_{i}.png", title=f"Memorization — {r.label}")
        doc.image(png, f"Group losses of {r.label}")
        summary = mem.memorization_summary(r.path)  # Fig 1's peaks and Table 1, as `wsml analyze memorization`
        doc.para("The plotted curve after the warm-up epoch: the loss just after epoch 1, its peak (epoch and "
                 "value), how much it rose before the peak and fell after it, and the final loss.")
        doc.table(["group", "start loss", "peak at (epoch)", "peak loss", "rise", "fall", "final loss",
                   "rises then falls"],
                  [[g, p["start_loss"], p["peak_at"], p["peak_loss"], p["rise"], p["fall"], p["final_loss"],
                    p["rises_then_falls"]] for g, p in summary["peaks"].items()])
        if "table1" in summary:
            doc.para(f"Table 1 for {r.label}: % of entries whose highest per-epoch loss is in epoch 1 (warm-up) "
                     "or later (regular phase).")
            doc.table(["group", "entries", "warm-up %", "regular %", "median epoch of highest loss"],
                      [[g, d["entries"], d["warmup_pct"], d["regular_pct"], d["median_peak_epoch"]]
                       for g, d in summary["table1"].items()])


def _modification_section(doc: Document, runs: list[RunFolder], assets: Path) -> None:
    have = [r for r in runs if "mod_precision" in r.columns]
    if not have:
        return
    doc.heading("Precision of modification (Fig 4)")
    doc.para("Among the unobserved entries an LL method modified (rejected or corrected), the % that are truly "
             "positive; per epoch for LL-R/LL-Ct, accumulated over epochs for LL-Cp (as in the paper). Base rate: "
             "the % of unobserved entries that are truly positive (what a random choice would get).")
    series, oracle, bases, rows = {}, {}, [], []
    for r in have:
        cum = normalise(r.loss_name) == "ll-cp"
        col = "mod_cum_precision" if cum else "mod_precision"
        prec = [100 * v for v in r.column(col)]
        series[r.label + (" (accumulated)" if cum else "")] = (r.column("epoch"), prec)
        oracle_col = r.column("mod_cum_oracle_precision" if cum else "mod_oracle_precision")
        if oracle_col is not None:  # the perfect ranker's precision at the same count (dotted)
            oracle[r.label + (" (accumulated)" if cum else "")] = (r.column("epoch"), [100 * v for v in oracle_col])
        base = np.asarray(r.column("mod_base_rate"), dtype=float)
        bases += list(base[~np.isnan(base)])
        for e, p, n in zip(r.column("epoch"), prec, r.column("mod_cum_count" if cum else "mod_count")):
            if not math.isnan(n) and n > 0:
                rows.append([r.path.name, int(e), int(n), p])
    base_rate = 100 * float(np.mean(bases)) if bases else None
    png = plot_precision(series, assets / "precision.png", base_rate, oracle=oracle)
    doc.image(png, "Precision of modification per epoch")
    doc.table(["run", "epoch", "modified", "precision %"], rows)
    if base_rate is not None:
        doc.para(f"Base rate of missing positives among unobserved entries: {base_rate:.2f}%.")


def _qualitative_section(doc: Document, runs: list[RunFolder], assets: Path) -> None:
    from wsml.analysis.modification import LOG_FILE
    from wsml.analysis.qualitative import make_qualitative

    made = []
    for i, r in enumerate(runs):
        if not (r.path / LOG_FILE).exists():
            continue
        try:
            png = make_qualitative(r.path, assets / f"qualitative_{i}.png")
        except (FileNotFoundError, ValueError) as e:
            made.append((None, f"{r.label}: no qualitative figure ({e})"))
            continue
        if png is not None:
            made.append((png, f"Modified labels of training images — {r.label} (✓ truly positive, ✗ not)"))
    if made:
        doc.heading("Qualitative label modification (Fig 3)")
        for png, caption in made:
            if png is None:
                doc.para(caption)
            else:
                doc.image(png, caption)


def _pointing_section(doc: Document, runs: list[RunFolder]) -> None:
    have = [(r, r.analysis_file("pointing_game.json")) for r in runs if r.analysis_file("pointing_game.json").exists()]
    if not have:
        return
    doc.heading("Pointing Game (Table 4)")
    doc.para("For each (test image, class present in the ground truth, with a box), a hit when the maximum of the "
             "class's CAM upsampled to the image lies inside a box of that class; score = per-class hit rate "
             "averaged over classes (%). Random = a uniformly random point.")
    rows = []
    for r, p in have:
        res = read_json(p)
        rows.append([r.label, res["score"], res.get("random_score"), res.get("pairs"), res.get("split", "test")])
    doc.table(["run", "pointing game %", "random point %", "pairs", "split"], rows)
    for r, _ in have:
        png = r.analysis_file("cam_overlays.png")
        if png.exists():
            doc.image(png, f"CAMs of {r.label} (★ = CAM maximum, green = GT boxes)")


def _sweep_section(doc: Document, sweep_dirs: list[Path], assets: Path) -> None:
    for i, d in enumerate(sweep_dirs):
        sw = json.loads((d / SWEEP_FILE).read_text())
        doc.heading(f"Sweep of {sw['param']} ({d.name})")
        if sw.get("command"):
            doc.para(f"Command: {sw['command']}")
        png = plot_sweep(sw["values"], sw["series"], assets / f"sweep_{i}.png", xlabel=sw.get("xlabel", sw["param"]),
                         ylabel=sw.get("ylabel", "test mAP"))
        doc.image(png, f"{sw.get('ylabel', 'test mAP')} vs {sw['param']}")
        doc.table([sw["param"]] + list(sw["series"]),
                  [[str(v)] + [s[j] for s in sw["series"].values()] for j, v in enumerate(sw["values"])])


def build_report(paths: Sequence[PathLike], out: PathLike, title: str = "wsml report") -> Path:
    """Write the report of run folders (and sweep folders) ``paths`` to ``out`` (.md or .html)."""
    if not paths:
        raise ValueError("report: give at least one run folder")
    runs, sweeps = [], []
    for p in map(Path, paths):
        if (p / SWEEP_FILE).exists():
            sweeps.append(p)
        else:
            run = RunFolder(p)
            _ = run.columns  # read now: a folder without metrics.csv is an error naming it, not an empty section
            runs.append(run)
    doc = Document(title)
    with tempfile.TemporaryDirectory() as tmp:
        assets = Path(tmp)
        if runs:
            _metrics_section(doc, runs, assets)
            _memorization_section(doc, runs, assets)
            _modification_section(doc, runs, assets)
            _qualitative_section(doc, runs, assets)
            _pointing_section(doc, runs)
        _sweep_section(doc, sweeps, assets)
        return doc.write(out)
