"""The study's figures per regime, each the mean over seeds with its spread (Fig 1, Fig 4, Fig 5, Fig 6).

Fig 5 puts Δrel on a log axis with the Naive AN level (mean ± sd band) and error bars; Fig 6 puts the number
of observed training labels (not images) on the x axis and gives the optimisation steps in the legend.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from wsml._types import PathLike
from wsml.analysis.study import NAMES, REGIMES, fig4_series
from wsml.analysis.study_evidence import select


def regime_figures(evs: list[dict], regime: str, out_dir: PathLike, cams: PathLike) -> tuple[list[Path], list[str]]:
    """Write fig1/fig4/fig5/fig6_<regime>.png from the evidence of the regime's runs and copy its CAM figure
    ``cams`` (drawn by study.sh's pointing step) when it exists. Returns (files written, figures not redrawn
    with the reason): a figure whose runs lack their stored series keeps its committed file rather than being
    redrawn from fewer seeds than its verdict; Fig 4 is drawn from the seeds its verdict pairs over."""
    from wsml.analysis.fig4 import group_series, plot_groups
    from wsml.analysis.plots import plot_memorization, plot_seed_lines

    out_dir, written, skipped = Path(out_dir), [], []
    name = REGIMES.get(regime, regime)
    evs = [e for e in evs if e["record"]["regime"] == regime]
    rs = [e["record"] for e in evs]

    def lacking(runs: list[dict], key: str) -> list[str]:
        return [e["record"]["run"] for e in runs if key not in e]

    an = select(evs, "main", "an")
    if an and lacking(an, "curve"):
        skipped.append(f"fig1_{regime}.png (no stored curve for {', '.join(lacking(an, 'curve'))})")
    elif an:
        epochs = max(e["record"]["epochs"] for e in an)
        written.append(plot_memorization([e["curve"] for e in an], out_dir / f"fig1_{regime}.png",
                                         title=f"Fig 1 — {name}: memorization under Naive AN, "
                                               f"{epochs} epochs, {len(an)} seed(s)"))
    ll = select(evs, "main", "ll-r", "ll-ct", "ll-cp")
    series, _ = fig4_series(ll)
    if series:
        seeds = sorted({p["seed"] for p in series})
        written.append(plot_groups(group_series(series), out_dir / f"fig4_{regime}.png",
                                   title=f"Fig 4 — {name}\nprecision of modification at one Δrel (mean, min–max; "
                                         f"seed{'s' * (len(seeds) > 1)} {', '.join(map(str, seeds))})"))
    elif ll:
        skipped.append(f"fig4_{regime}.png (no stored series of a seed on which every LL method ran)")
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
    if Path(cams).is_file():
        written.append(Path(shutil.copyfile(cams, out_dir / f"cams_{regime}.png")))
    elif (out_dir / f"cams_{regime}.png").is_file():
        skipped.append(f"cams_{regime}.png (drawn by the pointing step from the seed-0 run folders, not here)")
    return written, skipped
