"""Merge re-run rows of some methods into a committed ``wsml bench`` result (JSON, Markdown, CSV).

A grid's other rows come from run folders under ``runs/bench/`` that are not committed, so re-running a few
methods after a fix (e.g. LL-Cp's memory rule) writes a *partial* result with ``wsml bench SPEC --only ...
--results DIR``. This script replaces those methods' runs, search rows and chosen settings in the committed
result, recomputes the table and the comparison with Naive AN from the merged runs, and records both commands
and the check that the re-run reference (AN) search reproduced the committed values::

    python benchmarks/merge_rows.py benchmarks/results/fashion.json /tmp/partial/fashion.json \\
        --methods ll-cp,ll-cp-abs --command "wsml bench benchmarks/grids/fashion.yaml --only ll-cp,ll-cp-abs ..."
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import yaml

from wsml import bench_report as R


def reference_check(base: dict, part: dict, methods: list[str], checks: list[dict]) -> str:
    """Compare what the re-run and the committed result both hold for untouched rows (the shared search of the
    reference, and runs re-trained only to check, ``--check``): it must be reproduced for the untouched rows to be
    comparable with the new ones."""
    old = {("search",) + tuple(s["overrides"]): s["val_map"] for s in base.get("search", [])
           if s["method"].endswith("(shared)")}
    new = {("search",) + tuple(s["overrides"]): s["val_map"] for s in part.get("search", [])
           if s["method"].endswith("(shared)")}
    for res, into in [(base, old)] + [(c, new) for c in checks]:
        into.update({(r["method"], r["seed"], r["key"]): r["test_map"] for r in res["runs"]
                     if r["method"] not in methods})
    both = sorted(set(old) & set(new))
    if not both:
        return "nothing re-run to compare with the committed rows"
    diffs = [abs(old[k] - new[k]) for k in both]
    what = ", ".join(sorted({"reference search val mAP" if k[0] == "search" else f"{k[0]} seed {k[1]} test mAP"
                             for k in both}))
    return f"the re-run reproduced the committed {what} (largest difference {max(diffs):.2e})"


def merge(base: dict, part: dict, methods: list[str], command: str, checks: list[dict] = ()) -> dict:
    """``base`` with the runs, search rows and choices of ``methods`` taken from ``part``; tables recomputed."""
    missing = [m for m in methods if not any(r["method"] == m for r in part["runs"])]
    if missing:
        raise ValueError(f"the partial result has no runs of {', '.join(missing)}")
    runs = [r for r in base["runs"] if r["method"] not in methods]
    runs += [r for r in part["runs"] if r["method"] in methods]
    search = [s for s in base.get("search", []) if s["method"] not in methods]
    search += [s for s in part.get("search", []) if s["method"] in methods]
    chosen = {k: v for k, v in base.get("chosen", {}).items() if k not in methods}
    chosen.update({k: v for k, v in part.get("chosen", {}).items() if k in methods})
    order = [m for m in base["spec"]["methods"] if any(r["method"] == m for r in runs)]
    spec = base["spec"]
    table = R.summarise(runs, order)
    compared = [m for m in spec["compare"] if m in order]
    comparison = R.compare(runs, table, spec["reference"], spec.get("upper"), compared)
    check = reference_check(base, part, methods, list(checks))
    check_cmds = " (" + "; ".join(f"`{c['command']}`" for c in checks) + ")" if checks else ""
    merged_command = f"{base['command']}; then {command}; merged by python benchmarks/merge_rows.py"
    note = (f"Re-run on {part['date']}: the rows of {', '.join(methods)} come from `{command}` and replaced the "
            f"earlier ones (benchmarks/merge_rows.py); every other row is from `{base['command']}` "
            f"({base['date']}). Check{check_cmds}: {check}. Seconds per run are not comparable between the two parts "
            f"(different machine load).")
    spec = dict(spec, notes=(spec.get("notes") or "").rstrip() + "\n\n" + note)
    return dict(base, spec=spec, runs=runs, search=search, chosen=chosen, table=table, comparison=comparison,
                finished=len(runs), command=merged_command, date=part["date"], machine=part["machine"],
                rerun={"methods": methods, "command": command, "date": part["date"], "reference_check": check})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("base", help="committed <name>.json (rewritten with .md and .csv beside it)")
    p.add_argument("partial", help="<name>.json of the partial re-run")
    p.add_argument("--methods", required=True, help="comma-separated methods to take from the partial result")
    p.add_argument("--command", required=True, help="the exact command that produced the partial result")
    p.add_argument("--check", action="append", default=[], help="<name>.json of untouched rows re-run to check")
    p.add_argument("--spec", default="", help="grid spec whose (edited) title and notes replace the committed ones")
    args = p.parse_args(argv)
    base_path = Path(args.base)
    base, part = json.loads(base_path.read_text()), json.loads(Path(args.partial).read_text())
    checks = [json.loads(Path(c).read_text()) for c in args.check]
    if args.spec:
        spec = yaml.safe_load(Path(args.spec).read_text())
        base["spec"] = dict(base["spec"], title=spec.get("title", ""), notes=spec.get("notes", ""))
    out = merge(base, part, [m.strip() for m in args.methods.split(",") if m.strip()], args.command, checks)
    base_path.with_suffix(".md").write_text(R.markdown(out))
    base_path.write_text(json.dumps(out, indent=1, default=str) + "\n")
    rows = R.csv_rows(out)
    with open(base_path.with_suffix(".csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(f"merged {args.methods} into {base_path} (+ .md, .csv): {out['rerun']['reference_check']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
