"""Tables for ``wsml bench``: per-method mean ± std, LL-vs-Naive-AN comparisons, group mAP (paper Tables 2, 3),
written as ``<name>.md``, ``.json`` and ``.csv`` by :func:`write_results`.

Statistics (stated in every table header so a reader never has to guess):

* ``std`` is the sample standard deviation over seeds (``ddof=1``; none, shown "–", for a single run).
* A method *beats* the reference (Naive AN) when ``Δ = mean(method) − mean(AN) > 2 · s_pooled`` with
  ``s_pooled = sqrt((std(method)² + std(AN)²) / 2)``; no verdict (None) when either has a single run.
  The per-seed paired differences (same seed = same initialisation and batch order) are reported beside it
  as ``mean ± std`` for a second view.
* *Gap closed* is ``(mean(method) − mean(AN)) / (mean(Full) − mean(AN))``: the share of the AN→Full gap
  the method recovers (the paper: about 80 % on VOC, 50 % on COCO).
"""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from wsml.analysis.stats import mean_sd


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    """(mean, sample sd) by the one convention of wsml.analysis.stats.mean_sd: sd NaN (shown "–") for one run."""
    return mean_sd(values)[:2]


def summarise(runs: list[dict], methods: Sequence[str]) -> list[dict]:
    """One row per method (in ``methods`` order) over its finished runs: test/val mAP, epoch, time."""
    rows = []
    for m in methods:
        rs = [r for r in runs if r["method"] == m]
        if not rs:
            continue
        test_mean, test_std = _mean_std([r["test_map"] for r in rs])
        val_mean, val_std = _mean_std([r["val_map"] for r in rs])
        row = {"method": m, "runs": len(rs), "test_map_mean": test_mean, "test_map_std": test_std,
               "val_map_mean": val_mean, "val_map_std": val_std,
               "best_epoch_mean": float(np.mean([r["best_epoch"] for r in rs])),
               "wall_s_mean": float(np.mean([r.get("wall_time_s", math.nan) for r in rs])),
               "seeds": sorted(r["seed"] for r in rs)}
        groups = list(rs[0].get("group_map", {}))
        for g in groups:
            row[f"test_{g}_mean"], row[f"test_{g}_std"] = _mean_std([r["group_map"][g] for r in rs])
        rows.append(row)
    return rows


def compare(runs: list[dict], table: list[dict], reference: str, upper: Optional[str],
            methods: Sequence[str]) -> list[dict]:
    """Each of ``methods`` against ``reference`` (Naive AN): Δ, pooled std, beats by > 2 std, paired Δ, gap closed."""
    by = {r["method"]: r for r in table}
    if reference not in by:
        return []
    ref = by[reference]
    ref_seed = {r["seed"]: r["test_map"] for r in runs if r["method"] == reference}
    full = by.get(upper) if upper else None
    out = []
    for m in methods:
        if m not in by or m == reference:
            continue
        row = by[m]
        delta = row["test_map_mean"] - ref["test_map_mean"]
        pooled = math.sqrt((row["test_map_std"] ** 2 + ref["test_map_std"] ** 2) / 2)
        paired = [r["test_map"] - ref_seed[r["seed"]] for r in runs if r["method"] == m and r["seed"] in ref_seed]
        pm, ps = _mean_std(paired)
        gap = math.nan
        if full is not None and abs(full["test_map_mean"] - ref["test_map_mean"]) > 1e-9:
            gap = delta / (full["test_map_mean"] - ref["test_map_mean"])
        single = row["runs"] < 2 or ref["runs"] < 2  # no std from one run: no verdict
        out.append({"method": m, "delta": delta, "pooled_std": math.nan if single else pooled,
                    "delta_over_pooled_std": math.nan if single or pooled == 0 else delta / pooled,
                    "beats_an_2std": None if single else bool(delta > 2 * pooled),
                    "paired_delta_mean": pm, "paired_delta_std": ps,
                    "paired_n": len(paired), "gap_closed": gap})
    return out


def known_counts(data_path: str) -> np.ndarray:
    """Per class, the number of training images whose label is known (observed positive or negative)."""
    from wsml.data import DatasetIndex
    from wsml.labels import SparseLabels

    obs = DatasetIndex.load(data_path)["train"].train_targets()
    if isinstance(obs, SparseLabels):
        return np.asarray(obs.known_per_class())
    return (np.asarray(obs) != 0).sum(0)


def run_group_map(run_dir: str, data_path: str, num_groups: int, counts: Optional[np.ndarray] = None) -> dict:
    """Group mAP (G1 = classes with the fewest known training labels ... G<n>, and "all") of a run's test
    predictions, classes grouped by ``counts`` (default: :func:`known_counts` of ``data_path``), paper Table 3."""
    from wsml.data import DatasetIndex
    from wsml.metrics import class_groups, group_mean_average_precision

    pred = np.load(Path(run_dir) / "predictions_test.npz", allow_pickle=False)
    test = DatasetIndex.load(data_path)["test"]
    labels, mask = test.eval_targets()
    rows = pred["rows"]
    counts = known_counts(data_path) if counts is None else counts
    out = group_mean_average_precision(pred["scores"], labels[rows], counts, num_groups=num_groups,
                                       mask=None if mask is None else mask[rows])
    out["groups"] = [[int(c) for c in g] for g in class_groups(counts, num_groups)]
    return out


def add_group_maps(spec: dict, runs: list[dict]) -> str:
    """Add ``groups`` and ``group_map`` (:func:`run_group_map`) to every run record; return the table's note.

    The groups come from the partial-label data set of the reference method, the same for every method.
    """
    from wsml.config import load_config

    ng = int(spec["group_map"].get("num_groups", 5))
    ref_over = spec["overrides"] + spec["methods"].get(spec["reference"], [])
    counts = known_counts(load_config(spec["config"], ref_over).data.path)
    for r in runs:
        path = load_config(spec["config"], r["overrides"]).data.path
        gm = run_group_map(r["run_dir"], path, ng, counts)
        r["groups"] = gm.pop("groups")
        r["group_map"] = gm
    return (f"Classes sorted by the number of training images whose label is known (observed positive "
            f"or negative) in the {spec['reference']} data set, ascending, split into {ng} groups "
            f"(G1 = fewest): " + "; ".join(f"G{i + 1} = classes {g} (known counts {[int(counts[c]) for c in g]})"
                                           for i, g in enumerate(runs[0]["groups"])) + ".")


# ------------------------------------------------------------------------------------------ rendering


def _rel(path: str) -> str:
    """``path`` relative to the working directory when it is below it (reports stay machine-independent)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _verdict(beats: Optional[bool]) -> str:
    return "n/a (1 run)" if beats is None else ("yes" if beats else "no")


def _pct(x: float) -> str:
    return "–" if math.isnan(x) else f"{100 * x:.0f} %"


def _f(x: float, nd: int = 2) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{nd}f}"


def _pm(mean: float, std: float, nd: int = 2, sign: str = "") -> str:
    """"mean ± std", or the mean alone when there is no std (a single run)."""
    m = f"{mean:{sign}.{nd}f}" if sign and not math.isnan(mean) else _f(mean, nd)
    return m if std is None or math.isnan(std) else f"{m} ± {_f(std, nd)}"


def markdown(results: dict) -> str:
    """The Markdown report: header (command, spec), hyper-parameter search, result and comparison tables."""
    spec, lines = results["spec"], []
    lines += [f"# {spec.get('title') or spec['name']}", "", f"Command: `{results['command']}`", "",
              f"Spec: `{spec['path']}` — base config `{_rel(spec['config'])}`; seeds {spec['seeds']}; "
              f"{results['finished']} runs (trained now or reused from earlier invocations); table written "
              f"{results['date']} ({results['machine']}).", ""]
    if spec.get("notes"):
        lines += [spec["notes"].strip(), ""]
    if results.get("search"):
        lines += ["## Hyper-parameter search (val mAP only; test never looked at)", "",
                  "| method | candidate | seeds | val mAP | chosen |", "|---|---|---|---|---|"]
        for s in results["search"]:
            lines.append(f"| {s['method']} | `{' '.join(s['overrides'])}` | {s['seeds']} | {_f(s['val_map'])} "
                         f"| {'**yes**' if s['chosen'] else ''} |")
        lines.append("")
    lines += ["## Results (model selected by best val mAP; test mAP of that checkpoint)", "",
              "std = sample standard deviation over seeds (ddof=1).", "",
              "| method | test mAP (mean ± std) | runs | val-selected epoch (mean) | val mAP (mean) | s / run |",
              "|---|---|---|---|---|---|"]
    for r in results["table"]:
        lines.append(f"| {r['method']} | {_pm(r['test_map_mean'], r['test_map_std'])} | {r['runs']} | "
                     f"{_f(r['best_epoch_mean'], 1)} | {_f(r['val_map_mean'])} | {_f(r['wall_s_mean'], 0)} |")
    lines.append("")
    if results.get("comparison"):
        ref = spec["reference"]
        lines += [f"## Against {ref} (the reference)", "",
                  f"Δ = mean(method) − mean({ref}); s_pooled = sqrt((std_method² + std_{ref}²)/2); "
                  f"**beats** = Δ > 2·s_pooled. Paired = per-seed differences (same seed), mean ± std. "
                  f"Gap closed = Δ / (mean({spec.get('upper') or 'full'}) − mean({ref})).", "",
                  "| method | Δ test mAP | s_pooled | Δ / s_pooled | beats by > 2 std | paired Δ | gap closed |",
                  "|---|---|---|---|---|---|---|"]
        for c in results["comparison"]:
            lines.append(f"| {c['method']} | {c['delta']:+.2f} | {_f(c['pooled_std'])} | "
                         f"{_f(c['delta_over_pooled_std'], 1)} | {_verdict(c['beats_an_2std'])} | "
                         f"{_pm(c['paired_delta_mean'], c['paired_delta_std'], sign='+')} (n={c['paired_n']}) | "
                         f"{_pct(c['gap_closed'])} |")
        lines.append("")
    gkeys = [k[5:-5] for k in (results["table"][0] if results["table"] else {}) if k.startswith("test_G")
             and k.endswith("_mean")]
    if gkeys:
        lines += ["## Group mAP on test (paper Table 3 style)", "",
                  results.get("group_note", ""), "",
                  "| method | " + " | ".join(gkeys) + " | All Gs |", "|---" * (len(gkeys) + 2) + "|"]
        for r in results["table"]:
            cells = [_pm(r[f"test_{g}_mean"], r[f"test_{g}_std"]) for g in gkeys]
            lines.append(f"| {r['method']} | " + " | ".join(cells) + f" | {_f(r['test_all_mean'])} |")
        lines.append("")
    lines += ["## Runs", "", "| method | seed | test mAP | val mAP | best epoch | s | run folder |",
              "|---|---|---|---|---|---|---|"]
    for r in sorted(results["runs"], key=lambda r: (r["method"], r["seed"])):
        lines.append(f"| {r['method']} | {r['seed']} | {_f(r['test_map'])} | {_f(r['val_map'])} | "
                     f"{r['best_epoch']} | {_f(r.get('wall_time_s', math.nan), 0)} | `{r['run_dir']}` |")
    return "\n".join(lines) + "\n"


def csv_rows(results: dict) -> list[dict]:
    """The result table joined with the comparison columns, one row per method (for the CSV file)."""
    comp = {c["method"]: c for c in results.get("comparison", [])}
    out = []
    for r in results["table"]:
        row = {k: v for k, v in r.items() if k != "seeds"}
        row["seeds"] = " ".join(str(s) for s in r["seeds"])
        for k in ("delta", "pooled_std", "beats_an_2std", "paired_delta_mean", "paired_delta_std", "gap_closed"):
            row[k] = comp.get(r["method"], {}).get(k, "")
        out.append(row)
    return out


def write_results(results: dict, out_dir: str | Path, command: str) -> list[Path]:
    """``<out_dir>/<name>.md``, ``.json`` and ``.csv``; the Markdown starts with the exact command."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    spec = dict(results["spec"], config=_rel(results["spec"]["config"]))  # no machine-specific paths
    results = dict(results, spec=spec, command=command, date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                   machine=f"{platform.machine()}, {os.cpu_count()} CPU(s), load average "
                           f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    name = results["spec"]["name"]
    paths = [out_dir / f"{name}.md", out_dir / f"{name}.json", out_dir / f"{name}.csv"]
    paths[0].write_text(markdown(results))
    paths[1].write_text(json.dumps(results, indent=1, default=str) + "\n")
    rows = csv_rows(results)
    with open(paths[2], "w", newline="") as f:
        if rows:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    return paths
