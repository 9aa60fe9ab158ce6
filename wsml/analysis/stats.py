"""Seed statistics for the paper's verdicts: mean ± sd over training seeds and a paired test.

A verdict compares two methods (e.g. LL-Ct vs Naive AN) trained with the same seeds. ``paired_compare``
pairs the per-seed values by seed, reports the mean difference, its sd, a two-sided paired t-test p-value
and a wording: "A > B", "A < B" (p < ``alpha``), "within noise" (otherwise) or, with one pair, where no test
is possible, "untested (n=1)". A verdict drawn from a rule on one seed says so too (``one_seed``).
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

ALPHA = 0.05
UNTESTED = "untested (n=1)"


def one_seed(verdict: str, n: int) -> str:
    """A rule's verdict on one seed is labelled untested: the study's verdicts need a spread over seeds."""
    return verdict if n > 1 or verdict == UNTESTED else f"{verdict}, one seed: untested"


def mean_sd(values: Sequence[float]) -> tuple[float, float, int]:
    """(mean, sample sd, n) of the finite values; sd NaN below 2 values, mean NaN for none."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(float(x))], dtype=float)
    if v.size == 0:
        return float("nan"), float("nan"), 0
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else float("nan"), int(v.size)


def fmt_mean_sd(values: Sequence[float], digits: int = 2) -> str:
    """"m ± sd (n=k)", "m (n=1)" or "–"."""
    m, s, n = mean_sd(values)
    if n == 0:
        return "–"
    return f"{m:.{digits}f} ± {s:.{digits}f} (n={n})" if n > 1 else f"{m:.{digits}f} (n=1)"


def paired_compare(a: Mapping[int, float], b: Mapping[int, float], name_a: str = "A", name_b: str = "B",
                   alpha: float = ALPHA) -> dict:
    """Paired comparison of per-seed values ``a[seed]`` vs ``b[seed]`` over the seeds both have.

    Returns diff_mean, diff_sd, n (pairs), p (two-sided paired t-test; NaN when n < 2 or no spread),
    seeds and ``wording``: "A > B" / "A < B" when p < alpha, "within noise" otherwise, "untested (n=1)" or
    "not run yet" (no pair).
    """
    seeds = sorted(set(a) & set(b))
    d = np.asarray([float(a[s]) - float(b[s]) for s in seeds], dtype=float)
    out = {"seeds": seeds, "n": int(d.size), "diff_mean": float(d.mean()) if d.size else float("nan"),
           "diff_sd": float(d.std(ddof=1)) if d.size > 1 else float("nan"), "p": float("nan")}
    if d.size == 0:
        out["wording"] = "not run yet"
        return out
    if d.size == 1:
        out["wording"] = UNTESTED
        return out
    if np.all(d == d[0]):
        out["p"] = 0.0 if d[0] != 0 else 1.0
    else:
        import warnings

        from scipy.stats import ttest_rel

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # nearly constant differences: p is still defined
            out["p"] = float(ttest_rel([a[s] for s in seeds], [b[s] for s in seeds]).pvalue)
    if out["p"] < alpha:
        out["wording"] = f"{name_a} > {name_b}" if out["diff_mean"] > 0 else f"{name_a} < {name_b}"
    else:
        out["wording"] = "within noise"
    return out


def combine(words: Sequence[str]) -> str:
    """One verdict for a claim made of several paired comparisons ("each LL method beats Naive AN", "LL-Cp beats
    LL-R and LL-Ct"): yes when every one holds, partly when some do, no when none does and one goes the other
    way, within noise when none is decided; untested when every comparison had one seed, and a verdict on the
    tested ones that says how many are untested otherwise."""
    tested = [w for w in words if w != UNTESTED]
    if not tested:
        return UNTESTED
    verdict = ("yes" if all(" > " in w for w in tested) else "partly" if any(" > " in w for w in tested)
               else "no" if any(" < " in w for w in tested) else "within noise")
    untested = len(words) - len(tested)
    return f"{verdict} where tested, {untested} of {len(words)} {UNTESTED}" if untested else verdict


def describe(cmp: dict, name_a: str, name_b: str, unit: str = "") -> str:
    """One-line evidence of a paired comparison: difference, its sd, p and the wording."""
    if cmp["n"] == 0:
        return "not run yet"
    sd = "" if math.isnan(cmp["diff_sd"]) else f" ± {cmp['diff_sd']:.2f}"
    p = "" if math.isnan(cmp["p"]) else f", paired t-test p = {cmp['p']:.3g}"
    return (f"{name_a} − {name_b} = {cmp['diff_mean']:+.2f}{sd}{unit} over {cmp['n']} seed(s){p}: "
            f"{cmp['wording']}")
