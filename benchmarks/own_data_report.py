"""Render ``benchmarks/results/own_data.md`` from the JSON files of ``own_data.py`` (val, and delta when present).

Usage: ``python benchmarks/own_data_report.py benchmarks/results/own_data_val.json [own_data_delta.json] OUT.md``
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _f(v, nd: int = 2) -> str:
    return "–" if v is None else f"{v:.{nd}f}"


def _pick(p) -> str:
    return "–" if p is None else f"{p['epoch']} ({_f(p['test_map'])})"


def val_tables(data: dict) -> list[str]:
    res = data["results"]
    lines = ["## Partial val vs complete val", "",
             "Small CNN (`configs/custom/small-cnn.yaml`, 56 px, batch 32, Adam 1e-3), "
             f"{data['epochs']} epochs, mosaics exported as PNG + CSV (2400 train rows with one positive each, "
             "600 complete test rows). *Partial val*: no `split=val` rows, so val is 20 % of the training rows "
             "(480 rows, one positive each) and wsml picks epochs by PU-AUC and thresholds by the PU rule. "
             "*Complete val*: 200 training rows given complete labels as `split=val`. Test mAP and F1 are "
             "computed against the complete test labels; the hidden complete labels of the partial val rows "
             "are used only to measure what a complete-label criterion would have picked.", "",
             "| run | val labels | epoch picked (criterion) | test mAP there | best test mAP (epoch) "
             "| epoch by hidden complete val mAP (test mAP) | epoch by old criterion: unlisted = absent (test mAP) "
             "| test macro F1, wsml's thresholds | test macro F1, F1-on-partial thresholds |",
             "|---|---|---|---:|---:|---|---|---:|---:|"]
    for name, r in res.items():
        crit = "PU-AUC" if r["criterion"] == "pu-auc" else "val mAP"
        hid = r.get("by_hidden_complete_val_map")
        old = r.get("by_old_criterion")
        lines.append(
            f"| {name} | {r['val']} | {r['selected']['epoch']} ({crit}) | {_f(r['selected']['test_map'])} "
            f"| {_f(r['oracle_test']['test_map'])} ({r['oracle_test']['epoch']}) "
            f"| {_pick(hid)} | {_pick(old)} "
            f"| {_f(r['test_macro_f1'])} | {_f(r.get('test_macro_f1_naive_thresholds'))} |")
    lines += ["", "Per epoch (val criterion wsml used; hidden complete-label val mAP where val is partial; test mAP):",
              ""]
    for name, r in res.items():
        h = r["history"]
        lines.append(f"- **{name}**: " + "; ".join(
            f"{int(e['epoch'])}: {e['val_score']:.1f} / "
            f"{_f(e.get('val_map_hidden') if r['criterion'] == 'pu-auc' else None, 1)} / {e['test_map_hidden']:.1f}"
            for e in h))
    lines += ["", "Thresholds per class (wsml's rule; and F1 on partial val as if complete, the old behaviour):", ""]
    for name, r in res.items():
        lines.append(f"- **{name}** ({r['threshold_rule']}): {', '.join(f'{t:.3f}' for t in r['thresholds'])}")
        if r.get("naive_thresholds"):
            lines.append(f"  - F1 on partial val: {', '.join(f'{t:.3f}' for t in r['naive_thresholds'])}")
    return lines


def delta_table(data: dict) -> list[str]:
    lines = ["## Δrel = auto vs hand-set", "",
             f"LL-R, 200 complete val rows, {data['epochs']} epochs (same data and model as above).", "",
             "| Δrel | value used | best epoch | test mAP |", "|---|---:|---:|---:|"]
    for r in data["results"].values():
        dr = "Naive AN (no Δrel)" if r["delta_rel"] is None else str(r["delta_rel"])
        lines.append(f"| {dr} | {_f(r.get('delta_rel_used'), 3) if r['delta_rel'] is not None else '–'} "
                     f"| {r.get('best_epoch', '–')} | {_f(r['test_map'])} |")
    return lines


if __name__ == "__main__":
    *inputs, out = sys.argv[1:]
    blobs = [json.loads(Path(p).read_text()) for p in inputs]
    cmds = [f"    {b['command']}" for b in blobs]
    lines = ["# Own data: partial vs complete val, Δrel=auto", "", "Commands (from the repository root):", "",
             *cmds, f"    python {' '.join(sys.argv)}", ""]
    for b in blobs:
        lines += (val_tables(b) if "val" in b["command"].split() else delta_table(b)) + [""]
    Path(out).write_text("\n".join(lines))
    print(f"wrote {out}")
