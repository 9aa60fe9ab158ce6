"""``wsml bench SPEC.yaml``: a grid of methods x seeds -> mean ± std tables vs Naive AN (:mod:`wsml.bench.grid`)."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``bench`` to the command tree."""
    p = sub.add_parser("bench", help="grid of methods x seeds -> mean ± std tables vs Naive AN",
                       description="Run a grid of methods x seeds (benchmarks/grids/*.yaml) and write mean ± std "
                       "tables, comparisons with Naive AN and the AN->Full gap closed.")
    p.add_argument("spec", help="grid spec YAML")
    p.add_argument("--results", default="benchmarks/results", help="folder for <name>.md/.json/.csv")
    p.add_argument("--runs", default=None, help="folder for the run folders (default: spec runs_dir or runs/bench)")
    p.add_argument("--workers", type=int, default=1, help="parallel training processes (spawned)")
    p.add_argument("--threads", type=int, default=0, help="torch threads per run (0 = torch's default)")
    p.add_argument("--seeds", type=int, default=0, help="use only the first N seeds of the spec")
    p.add_argument("--only", default="", help="comma-separated methods to run (default: all)")
    p.add_argument("--merge", action="store_true", help="merge the --only methods' new runs into the existing "
                   "<results>/<name>.json (their old runs replaced, the rest kept) instead of writing them alone")
    p.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    from wsml.bench.grid import load_spec, merge_results, run_grid
    from wsml.bench.report import write_results

    spec = load_spec(args.spec)
    if args.seeds:
        spec["seeds"] = spec["seeds"][: args.seeds]
    only = [m.strip() for m in args.only.split(",") if m.strip()] or None
    bad = [m for m in only or [] if m not in spec["methods"]]
    if bad:
        raise ValueError(f"--only: unknown method(s) {', '.join(bad)}; the spec has {', '.join(spec['methods'])}")
    committed = Path(args.results) / f"{spec['name']}.json"
    if args.merge and (not only or not committed.is_file()):
        raise ValueError(f"--merge needs --only and an existing {committed}")
    results = run_grid(spec, runs_dir=args.runs, workers=args.workers, threads=args.threads, methods=only)
    command = "wsml bench " + shlex.join(args.argv)
    if args.merge:
        results, command = merge_results(results, committed, command)
    paths = write_results(results, args.results, command)
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0
