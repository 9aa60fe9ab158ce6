"""The multi-seed study of the paper's findings: per-seed records of finished runs and one verdict table.

Layout (what ``benchmarks/analysis/study.sh`` trains): ``<root>/<regime>/<group>/<name>-s<seed>/``, a run
folder of ``wsml train``. Regimes: ``scratch`` (small CNN from scratch, long budget), ``scratch-short``
(the 8-epoch budget), ``pretrained`` (ImageNet EfficientNet-Lite0 fine-tuned end to end). Groups:
``main`` (Full / AN / LL-R / LL-Ct / LL-Cp: Table 2 mAP, Fig 1, Fig 4, Table 4), ``table1`` (Naive AN at the
paper's 10 epochs), ``delta`` (LL-Ct vs Δrel, Fig 5) and ``frac`` (fractions of the training images, Fig 6).
Each verdict is a paired comparison over seeds (``wsml.analysis.stats``) with its evidence and its noise;
a verdict whose runs do not exist reads "not run yet". The verdicts read per-run evidence
(``wsml.analysis.study_evidence``): from the run folders, or as stored in the committed results.
"""

from __future__ import annotations

from typing import Any, Callable

from wsml.analysis.stats import combine, describe, fmt_mean_sd, mean_sd, one_seed, paired_compare
from wsml.analysis.study_evidence import select

REGIMES = {"scratch": "from scratch (small CNN, long budget)",
           "pretrained": "pretrained end to end (EfficientNet-Lite0)"}
NAMES = {"an": "Naive AN", "ll-r": "LL-R", "ll-ct": "LL-Ct", "ll-cp": "LL-Cp", "full": "Full label"}
NOT_RUN = {"verdict": "not run yet", "evidence": "–", "noise": "–"}


def _by_seed(recs: list[dict], key: str, **match: Any) -> dict[int, float]:
    return {r["seed"]: float(r[key]) for r in recs if r.get(key) is not None
            and all(r.get(k) == v for k, v in match.items())}


def _compare_rows(recs: list[dict], key: str, a_list: list[str], b: str, unit: str, **match: Any) -> dict:
    """Verdict from paired comparisons of several methods against one (each LL method vs Naive AN)."""
    base = _by_seed(recs, key, method=b, **match)
    cmps = {a: paired_compare(_by_seed(recs, key, method=a, **match), base, NAMES[a], NAMES[b]) for a in a_list}
    cmps = {a: c for a, c in cmps.items() if c["n"]}
    if not cmps:
        return dict(NOT_RUN)
    verdict = combine([c["wording"] for c in cmps.values()])
    noise = "; ".join(f"{NAMES[m]} {fmt_mean_sd(list(_by_seed(recs, key, method=m, **match).values()))}"
                      for m in [b] + list(cmps))
    return {"verdict": verdict, "evidence": "; ".join(describe(c, NAMES[a], NAMES[b], unit) for a, c in cmps.items()),
            "noise": noise}


def verdict_map(recs: list[dict]) -> dict:
    """Table 2 of the paper: LL-R / LL-Ct / LL-Cp beat Naive AN in test mAP (best-val epoch)."""
    return _compare_rows([r for r in recs if r["group"] == "main"], "test_map", ["ll-r", "ll-ct", "ll-cp"], "an",
                         " mAP")


def verdict_pointing(recs: list[dict]) -> dict:
    """Table 4: LL methods point better than Naive AN (Pointing Game %)."""
    return _compare_rows([r for r in recs if r["group"] == "main"], "pointing_game", ["ll-r", "ll-ct", "ll-cp"],
                         "an", " pp")


def verdict_fig1(evs: list[dict]) -> dict:
    """Fig 1: under Naive AN the false negatives' loss rises after the warm-up, then falls towards 0."""
    fn = [ev["memorization"]["peaks"]["fn"] for ev in evs if "fn" in ev.get("memorization", {}).get("peaks", {})]
    if not fn:
        return dict(NOT_RUN)
    rtf = sum(p["rises_then_falls"] for p in fn)
    below = sum(p["final_loss"] < p["start_loss"] for p in fn)
    near0 = sum(p["final_loss"] < 0.25 * p["peak_loss"] for p in fn)
    verdict = one_seed("yes" if near0 == len(fn) else "partly" if rtf == len(fn) else "no" if rtf == 0
                       else "mixed over seeds", len(fn))
    ev = (f"FN loss rises then falls in {rtf}/{len(fn)} seeds; final below its value after epoch 1 in "
          f"{below}/{len(fn)}; final < 25 % of the peak in {near0}/{len(fn)}; "
          f"peak epoch {fmt_mean_sd([p['peak_at'] for p in fn], 1)}")
    noise = ", ".join(f"{k} {fmt_mean_sd([p[key] for p in fn], 3)}" for k, key in
                      (("after epoch 1", "start_loss"), ("peak", "peak_loss"), ("final", "final_loss")))
    return {"verdict": verdict, "evidence": ev, "noise": noise}


def verdict_table1(evs: list[dict]) -> dict:
    """Table 1: TN and observed positives have their highest loss in epoch 1, false negatives later.
    Reported in train mode (loss while the batch trains) and, when logged, in eval mode (epoch-end pass)."""
    parts, verdict = [], None
    for key in ("memorization", "memorization_eval"):
        summ = [ev[key] for ev in evs if "table1" in ev.get(key, {})]
        if not summ:
            continue
        w = {g: [x["table1"][g]["warmup_pct"] for x in summ] for g in ("pos", "tn", "fn")}
        m = {g: mean_sd(v)[0] for g, v in w.items()}
        v = ("yes" if m["tn"] > 50 and m["pos"] > 50 and m["fn"] < 50 else
             "partly" if m["fn"] < min(m["tn"], m["pos"]) else "no")
        verdict = verdict or one_seed(v, len(summ))
        epochs = sorted({x.get("epochs") for x in summ}, key=str)
        parts.append(f"{'eval-mode pass' if key.endswith('eval') else 'during training'} ({len(summ)} seed(s), "
                     f"{'/'.join(str(e) for e in epochs)} epochs): highest loss in epoch 1 for "
                     + ", ".join(f"{g} {fmt_mean_sd(w[g], 1)} %" for g in ("pos", "tn", "fn")) + f" → {v}")
    if not parts:
        return dict(NOT_RUN)
    return {"verdict": verdict, "evidence": "; ".join(parts), "noise": "sd over seeds in each cell"}


def fig4_series(evs: list[dict]) -> tuple[list[dict], str]:
    """The Fig 4 series of the seeds on which every LL method kept its series, so that the verdict's paired
    tests, the perfect-ranker check and the figure's means all rest on the same seeds; and a note naming
    the runs left out (series not kept, or no partner of their seed)."""
    kept = [ev for ev in evs if "fig4" in ev]
    by_method: dict[str, set] = {ev["record"]["method"]: set() for ev in evs}
    for ev in kept:
        by_method[ev["record"]["method"]].add(ev["record"]["seed"])
    seeds = set.intersection(*by_method.values()) if by_method else set()
    lost = [ev["record"]["run"] for ev in evs if "fig4" not in ev]
    alone = [ev["record"]["run"] for ev in kept if ev["record"]["seed"] not in seeds]
    notes = ([f"the Fig 4 series of {', '.join(lost)} were not kept: train them again"] if lost else []) + (
        [f"left out for want of a partner of the same seed: {', '.join(alone)}"] if alone else [])
    return [ev["fig4"] for ev in kept if ev["record"]["seed"] in seeds], "; ".join(notes)


def verdict_fig4(evs: list[dict]) -> dict:
    """Fig 4: LL-Cp (accumulated) has the highest precision of modification at one Δrel."""
    from wsml.analysis.fig4 import fig4_verdict, group_series

    series, note = fig4_series(evs)
    v = fig4_verdict(group_series(series))
    if v["holds"] is None:
        return {"verdict": "series not kept", "evidence": note, "noise": "–"} if note else dict(NOT_RUN)
    texts = [c["text"] for c in v["comparisons"].values()] + ([v["ranker_check"]] if "ranker_check" in v else [])
    return {"verdict": v["holds"], "evidence": "; ".join(texts + ([note] if note else [])),
            "noise": "per-seed mean precision over epochs ≥ 2, paired over seeds"}


def verdict_fig5(recs: list[dict]) -> dict:
    """Fig 5: LL-Ct's mAP has an interior best Δrel (too small memorizes, too large corrects wrongly)."""
    rs = [r for r in recs if r["group"] == "delta" and r["method"] == "ll-ct"]
    values = sorted({float(r["delta_rel"]) for r in rs})
    if len(values) < 3:
        return dict(NOT_RUN)
    per = {v: _by_seed(rs, "test_map", delta_rel=v) for v in values}
    best = max(values, key=lambda v: mean_sd(list(per[v].values()))[0])
    cmps = [paired_compare(per[best], per[v], f"Δrel {best:g}", f"Δrel {v:g}") for v in values if v != best]
    interior = values[0] < best < values[-1]
    ends = [paired_compare(per[best], per[v], "", "") for v in (values[0], values[-1]) if v != best]
    n = min(len(x) for x in per.values())  # one seed: the rule without the tests at the ends
    verdict = one_seed("yes" if interior and (n < 2 or all(" > " in c["wording"] for c in ends)) else
                       "partly" if interior else "no", n)
    ev = (f"best Δrel {best:g} (test mAP by Δrel: " + ", ".join(f"{v:g}: {fmt_mean_sd(list(per[v].values()))}"
                                                                for v in values) + ")")
    noise = "; ".join(describe(c, f"Δrel {best:g}", f"Δrel {v:g}") for c, v in
                      zip(cmps, [v for v in values if v != best]))
    return {"verdict": verdict, "evidence": ev, "noise": noise}


def verdict_fig6(recs: list[dict]) -> dict:
    """Fig 6 in observed labels: LL-Ct with one positive on every image beats full labels on 1/8 of the images
    (a comparable or larger label count); also LL-Ct vs Naive AN at each fraction."""
    rs = [r for r in recs if r["group"] in ("frac", "main")]
    ll = _by_seed(rs, "test_map", method="ll-ct", train_frac=1.0)
    fracs = sorted({float(r["train_frac"]) for r in rs if r["method"] == "full" and r["train_frac"] < 1})
    if not ll or not fracs:
        return dict(NOT_RUN)
    f = fracs[0]
    full = _by_seed(rs, "test_map", method="full", train_frac=f)
    c = paired_compare(ll, full, "LL-Ct", "Full")

    def labels(method: str, frac: float) -> str:
        v = [r["observed_labels"] for r in rs if r["method"] == method and r["train_frac"] == frac and
             r["observed_labels"]]
        st = [r["steps"] for r in rs if r["method"] == method and r["train_frac"] == frac and r["steps"]]
        return f"{v[0] if v else '?'} labels, {st[0] if st else '?'} steps"

    verdict = "yes" if " > " in c["wording"] else "no" if " < " in c["wording"] else c["wording"]
    ev = (f"LL-Ct, all images ({labels('ll-ct', 1.0)}) {fmt_mean_sd(list(ll.values()))} vs Full label, {f:g} of the "
          f"images ({labels('full', f)}) {fmt_mean_sd(list(full.values()))}")
    per_frac = [paired_compare(_by_seed(rs, "test_map", method="ll-ct", train_frac=x),
                               _by_seed(rs, "test_map", method="an", train_frac=x), "LL-Ct", "AN")
                for x in sorted({float(r["train_frac"]) for r in rs})]
    noise = describe(c, "LL-Ct", "Full") + "; LL-Ct − AN per fraction: " + ", ".join(
        f"{p['diff_mean']:+.2f} ({p['wording']})" for p in per_frac if p["n"])
    matched = {r["seed"]: r for r in recs if r["group"] == "frac-steps" and r["method"] == "full"}
    if matched:  # Full label on the same fraction trained for as many optimisation steps as LL-Ct on all images
        cm = paired_compare(ll, {s: r["test_map"] for s, r in matched.items()}, "LL-Ct", "Full")
        ev += (f"; at matched steps, Full label on {f:g} of the images for {next(iter(matched.values()))['steps']} "
               f"steps: {fmt_mean_sd([r['test_map'] for r in matched.values()])}")
        noise += "; matched steps: " + describe(cm, "LL-Ct", "Full")
        verdict += "" if cm["wording"] == c["wording"] else f" at equal epochs, {cm['wording']} at matched steps"
    return {"verdict": verdict, "evidence": ev, "noise": noise}


FINDINGS: list[tuple[str, str]] = [
    ("map", "LL-R / LL-Ct / LL-Cp beat Naive AN in mAP (Table 2)"),
    ("fig1", "Memorization (Fig 1): the false negatives' loss rises, then falls towards 0 under Naive AN"),
    ("table1", "Table 1: TN / observed positives peak in epoch 1, false negatives later"),
    ("fig4", "Fig 4: LL-Cp (accumulated) has the highest precision at one Δrel"),
    ("fig5", "Fig 5: an interior Δrel is best"),
    ("fig6", "Fig 6: weak labels on all images beat full labels on 1/8 of them (in labels)"),
    ("pointing", "Table 4: LL improves the Pointing Game"),
]


def regime_verdicts(evs: list[dict], regime: str) -> dict[str, dict]:
    """Every finding's verdict in one regime from the evidence of its runs (``study_evidence.gather``)."""
    evs = [e for e in evs if e["record"]["regime"] == regime]
    recs = [e["record"] for e in evs]

    fns: dict[str, Callable[[], dict]] = {
        "map": lambda: verdict_map(recs), "fig1": lambda: verdict_fig1(select(evs, "main", "an")),
        "table1": lambda: verdict_table1(select(evs, "table1", "an") or [  # main AN runs at the paper's 10 epochs
            e for e in select(evs, "main", "an") if e["record"]["epochs"] == 10]),
        "fig4": lambda: verdict_fig4(select(evs, "main", "ll-r", "ll-ct", "ll-cp")),
        "fig5": lambda: verdict_fig5(recs), "fig6": lambda: verdict_fig6(recs),
        "pointing": lambda: verdict_pointing(recs)}
    return {k: fn() for k, fn in fns.items()}


def verdict_table(evs: list[dict]) -> str:
    """ONE Markdown table: a row per finding, a column per regime (verdict, evidence, noise)."""
    cols = {reg: regime_verdicts(evs, reg) for reg in REGIMES}
    lines = ["| paper's finding | " + " | ".join(REGIMES.values()) + " |", "|---|" + "---|" * len(REGIMES)]
    for key, text in FINDINGS:
        cells = [f"**{c[key]['verdict']}** — {c[key]['evidence']}; noise: {c[key]['noise']}"
                 if c[key]["verdict"] != "not run yet" else "not run yet" for c in cols.values()]
        lines.append(f"| {text} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
