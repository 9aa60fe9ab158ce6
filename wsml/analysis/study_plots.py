"""The study's figures per regime, each the mean over seeds with its spread (Fig 1, Fig 4, Fig 5, Fig 6).

Fig 5 puts Δrel on a log axis with the Naive AN level (mean ± sd band) and error bars; Fig 6 puts the number
of observed training labels (not images) on the x axis and gives the optimisation steps in the legend.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from wsml._types import PathLike
from wsml.analysis.study import NAMES, REGIMES


def _dirs(root: Path, recs: list[dict], regime: str, group: str, methods: tuple) -> list[Path]:
    return [root / regime / group / r["run"] for r in recs
            if r["regime"] == regime and r["group"] == group and r["method"] in methods]


def regime_figures(root: PathLike, regime: str, recs: list[dict], out_dir: PathLike) -> list[Path]:
    """Write fig1/fig4/fig5/fig6_<regime>.png for whatever runs exist and copy the regime's CAM figure
    (cams_<regime>.png); returns the files written."""
    from wsml.analysis.fig4 import group_runs, plot_groups
    from wsml.analysis.memorization import load_curve
    from wsml.analysis.plots import plot_memorization, plot_seed_lines

    root, out_dir, written = Path(root), Path(out_dir), []
    name = REGIMES.get(regime, regime)
    rs = [r for r in recs if r["regime"] == regime]
    curves = [c for c in (load_curve(d) for d in _dirs(root, rs, regime, "main", ("an",))) if c is not None]
    if curves:
        epochs = max(r["epochs"] for r in rs if r["group"] == "main" and r["method"] == "an")
        written.append(plot_memorization(curves, out_dir / f"fig1_{regime}.png",
                                         title=f"Fig 1 — {name}: memorization under Naive AN, "
                                               f"{epochs} epochs, {len(curves)} seed(s)"))
    groups = group_runs(_dirs(root, rs, regime, "main", ("ll-r", "ll-ct", "ll-cp")), skip_missing=True)
    if groups:
        written.append(plot_groups(groups, out_dir / f"fig4_{regime}.png",
                                   title=f"Fig 4 — {name}\nprecision of modification at one Δrel "
                                         "(mean, min–max over seeds)"))
    delta = [r for r in rs if r["group"] == "delta" and r["method"] == "ll-ct" and r["test_map"] is not None]
    if delta:
        by_x: dict[float, list[float]] = {}
        for r in delta:
            by_x.setdefault(float(r["delta_rel"]), []).append(r["test_map"])
        an = [r["test_map"] for r in rs if r["group"] == "main" and r["method"] == "an" and r["test_map"] is not None]
        written.append(plot_seed_lines({"LL-Ct": by_x}, out_dir / f"fig5_{regime}.png", "Δrel (% per epoch, log)",
                                       f"Fig 5 — {name}\nLL-Ct test mAP vs Δrel (mean ± sd over seeds)", xlog=True,
                                       levels={"Naive AN": an} if an else None))
    frac = [r for r in rs if r["group"] in ("frac", "frac-steps", "main") and r["method"] in ("an", "ll-ct", "full")
            and r["observed_labels"] and r["test_map"] is not None]
    if {r["group"] for r in frac} >= {"frac"}:
        series: dict[str, dict[float, list[float]]] = {}
        steps: dict[str, set] = {}
        for r in frac:
            label = NAMES[r["method"]] + (", more epochs: matched steps" if r["group"] == "frac-steps" else "")
            series.setdefault(label, {}).setdefault(float(r["observed_labels"]), []).append(r["test_map"])
            steps.setdefault(label, set()).add(r["steps"])
        notes = {k: f"{min(v)}–{max(v)} steps" if min(v) != max(v) else f"{min(v)} steps" for k, v in steps.items()}
        written.append(plot_seed_lines(series, out_dir / f"fig6_{regime}.png", "observed training labels (log)",
                                       f"Fig 6 — {name}\ntest mAP vs number of observed training labels (mean ± sd)",
                                       xlog=True, notes=notes))
    cams = root / regime / "cams.png"  # drawn by study.sh's pointing step (wsml analyze cams)
    if cams.is_file():
        written.append(Path(shutil.copyfile(cams, out_dir / f"cams_{regime}.png")))
    return written
