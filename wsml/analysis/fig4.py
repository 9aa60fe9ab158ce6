"""Fig 4 by the paper's definition: precision of modification of LL-R / LL-Ct / LL-Cp at one Δrel.

The paper plots, per epoch, the precision of the entries modified in that epoch for LL-R and LL-Ct and the
*accumulated* precision (every entry modified so far) for LL-Cp, all at the same Δrel. Runs of the same method
and Δrel with different seeds form one group: the figure shows its mean with the min–max spread, and the
verdict "LL-Cp has the highest precision" is a paired test over seeds of the per-seed mean precision over
epochs 2.. (epoch 1 is the warm-up, nothing is modified). Beside each method: the precision of a perfect
ranker that modifies as many entries (``mod_oracle_precision``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

from wsml._types import PathLike
from wsml.analysis.stats import combine, describe, paired_compare
from wsml.runs import RunFolder

NAMES = {"ll-r": "LL-R", "ll-ct": "LL-Ct", "ll-cp": "LL-Cp"}


def run_precision(run_dir: PathLike) -> dict:
    """One LL run's Fig 4 series: method, Δrel, seed, epochs, precision % (accumulated for LL-Cp),
    perfect-ranker precision % and the number of entries counted per epoch."""
    r = RunFolder(run_dir)
    if "mod_precision" not in r.columns:
        raise ValueError(f"{run_dir}: metrics.csv has no mod_* columns; train an LL loss with callbacks=[modification]")
    loss = r.config_dict.get("loss", {})
    method = str(loss.get("name", "?")).lower()
    cum = method == "ll-cp"
    pre = "mod_cum_" if cum else "mod_"
    oracle = r.column(pre + "oracle_precision") or [math.nan] * len(r.column("epoch"))
    return {"method": method, "delta_rel": loss.get("delta_rel"), "accumulated": cum,
            "seed": int(r.config_dict.get("train", {}).get("seed", 0)), "epochs": [int(e) for e in r.column("epoch")],
            "precision": [100 * v for v in r.column(pre + "precision")], "oracle": [100 * v for v in oracle],
            "count": r.column(pre + "count"), "base_rate": [100 * v for v in r.column("mod_base_rate")]}


def group_key(p: dict) -> str:
    """The plot label of a run's group: method, Δrel and '(accumulated)' for LL-Cp."""
    name = NAMES.get(p["method"], p["method"])
    return f"{name} Δrel={p['delta_rel']}" + (" (accumulated)" if p["accumulated"] else "")


def group_series(series: Sequence[dict]) -> dict[str, list[dict]]:
    """Fig 4 series (``run_precision``'s dicts) grouped by method and Δrel: the seeds of one group side by side."""
    groups: dict[str, list[dict]] = {}
    for p in series:
        groups.setdefault(group_key(p), []).append(p)
    return groups


def group_runs(run_dirs: Sequence[PathLike]) -> dict[str, list[dict]]:
    """``group_series`` of run folders trained with the modification callback."""
    return group_series([run_precision(d) for d in run_dirs])


def _matrix(runs: list[dict], key: str) -> np.ndarray:
    n = max(len(r[key]) for r in runs)
    return np.array([list(r[key]) + [math.nan] * (n - len(r[key])) for r in runs], dtype=float)


def seed_means(runs: list[dict], first_epoch: int = 2) -> dict[int, float]:
    """Per seed: mean precision % over epochs >= first_epoch (the verdict's per-seed value)."""
    out = {}
    for r in runs:
        v = [p for e, p in zip(r["epochs"], r["precision"]) if e >= first_epoch and not math.isnan(p)]
        if v:
            out[r["seed"]] = float(np.mean(v))
    return out


def fig4_verdict(groups: dict[str, list[dict]]) -> dict:
    """Does LL-Cp (accumulated) have the highest precision at equal Δrel? Paired tests vs LL-R and LL-Ct."""
    out: dict = {"comparisons": {}, "holds": None}
    for cp_key, cp_runs in groups.items():
        if not cp_runs[0]["accumulated"]:
            continue
        d = cp_runs[0]["delta_rel"]
        for key, runs in groups.items():
            if runs[0]["accumulated"] or runs[0]["delta_rel"] != d:
                continue
            c = paired_compare(seed_means(cp_runs), seed_means(runs), "LL-Cp", NAMES.get(runs[0]["method"], "?"))
            if not c["n"]:  # no seed in common: nothing to compare
                continue
            c["text"] = describe(c, cp_key, key, " pp")
            out["comparisons"][f"{cp_key} vs {key}"] = c
        out["ranker_check"] = ranker_check(cp_runs, groups, d)
    if out["comparisons"]:
        out["holds"] = combine([c["wording"] for c in out["comparisons"].values()])
    return out


def _seed_mean(m: np.ndarray) -> np.ndarray:
    """Per-epoch mean over seeds (rows) of the finite values; NaN where no seed has one (epoch 1)."""
    n = (~np.isnan(m)).sum(0)
    return np.where(n > 0, np.nansum(m, 0) / np.maximum(n, 1), np.nan)


def _pp(diffs: np.ndarray) -> str:
    finite = diffs[~np.isnan(diffs)]
    return f"{finite.mean():+.1f} pp" if finite.size else "–"


def ranker_check(cp_runs: list[dict], groups: dict[str, list[dict]], delta_rel: float) -> str:
    """Test the first study's explanation of LL-Cp's lower precision at 8 epochs (it has corrected more entries
    than there are false negatives; not the paper's) against a perfect ranker at LL-Cp's accumulated count: the
    explanation can only account for the epochs where that ranker falls below 100 %. Gives LL-Cp − LL-R/LL-Ct
    before and from that epoch."""
    oracle = _seed_mean(_matrix(cp_runs, "oracle"))
    epochs = max((r["epochs"] for r in cp_runs), key=len)
    below = [e for e, o in zip(epochs, oracle) if o < 99.95]
    if not below:
        return "a perfect ranker at LL-Cp's count stays at 100 % every epoch: the explanation never applies"
    e0, cp = below[0], _matrix(cp_runs, "precision")
    parts = []
    for runs in groups.values():
        if runs[0]["accumulated"] or runs[0]["delta_rel"] != delta_rel:
            continue
        other = _matrix(runs, "precision")
        n = min(cp.shape[1], other.shape[1])
        diff = _seed_mean(cp[:, :n]) - _seed_mean(other[:, :n])
        ep = np.asarray(epochs[:n])
        early, late = diff[(ep >= 2) & (ep < e0)], diff[ep >= e0]
        parts.append(f"vs {NAMES.get(runs[0]['method'], '?')} {_pp(early)} before, {_pp(late)} from it")
    return (f"a perfect ranker at LL-Cp's accumulated count falls below 100 % from epoch {e0} (more corrections "
            f"than false negatives); LL-Cp's precision " + ", ".join(parts))


def matched_count(groups: dict[str, list[dict]]) -> list[dict]:
    """The optional matched-count comparison: for each epoch of LL-Cp (accumulated count n), the epoch of LL-R /
    LL-Ct at the same Δrel and seed whose per-epoch count is closest to n, with both precisions (%)."""
    out = []
    cps = [r for runs in groups.values() for r in runs if r["accumulated"]]
    others = [r for runs in groups.values() for r in runs if not r["accumulated"]]
    for cp in cps:
        for o in (o for o in others if o["delta_rel"] == cp["delta_rel"] and o["seed"] == cp["seed"]):
            pairs = [(i, n) for i, n in enumerate(o["count"]) if n == n and n > 0]
            for e, n, p in zip(cp["epochs"], cp["count"], cp["precision"]):
                if not pairs or not n == n or n <= 0:
                    continue
                j, m = min(pairs, key=lambda t: abs(t[1] - n))
                out.append({"seed": cp["seed"], "method": NAMES.get(o["method"], o["method"]), "ll_cp_epoch": e,
                            "ll_cp_count": int(n), "ll_cp_precision": p, "epoch": o["epochs"][j], "count": int(m),
                            "precision": o["precision"][j]})
    return out


def plot_groups(groups: dict[str, list[dict]], out: PathLike, title: str = "") -> Path:
    """Mean over seeds with the min–max band; a dotted perfect-ranker line of the same colour per group."""
    from wsml.analysis.plots import plot_precision

    series, oracle, base = {}, {}, []
    for key, runs in groups.items():
        x = max((r["epochs"] for r in runs), key=len)
        series[f"{key}, {len(runs)} seed(s)"] = (x, _matrix(runs, "precision"))
        oracle[f"{key}, {len(runs)} seed(s)"] = (x, _seed_mean(_matrix(runs, "oracle")))
        base += [b for r in runs for b in r["base_rate"] if not math.isnan(b)]
    return plot_precision(series, out, float(np.mean(base)) if base else None,
                          title=title or "Fig 4: precision of modification (mean, min–max over seeds)",
                          oracle=oracle)
