"""``wsml report`` (one page for run or sweep folders) and ``wsml analyze`` (the paper's analyses on finished
runs: memorization, precision of modification, qualitative, Pointing Game, CAMs, sweeps)."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from wsml.cli._options import add_device

EPILOG_ANALYZE = """examples:
  wsml analyze memorization runs/mosaic-an            # Fig 1 curves + Table 1 (needs callbacks=[memorization])
  wsml analyze precision runs/mosaic-ll-r runs/mosaic-ll-ct runs/mosaic-ll-cp      # Fig 4
  wsml analyze qualitative runs/mosaic-ll-ct          # Fig 3 (needs callbacks=[modification])
  wsml analyze pointing runs/mosaic-ll-ct             # Table 4: Pointing Game on the test split
  wsml analyze cams runs/mosaic-an runs/mosaic-ll-ct --rows 0,1,2 --out cams.png
  wsml analyze sweep configs/fashion/ll-ct.yaml --param loss.delta_rel --values 0.5,1,2,4 \\
      --method LL-Ct:loss.name=ll-ct --out runs/sweep-delta train.epochs=6         # Fig 5
  wsml analyze sweep configs/fashion/an.yaml --param data.options.train_frac --values 0.25,0.5,1 \\
      --method AN:loss.name=an --method LL-Ct:loss.name=ll-ct --out runs/sweep-frac  # Fig 6"""


def _ints(text: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ValueError(f"--rows must be comma-separated integers, got {text!r}") from None


def _values(text: str) -> list:
    from wsml.config import parse_value

    return [parse_value(t) for t in text.split(",") if t.strip()]


# ------------------------------------------------------------------------------------------------ report


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``report`` and ``analyze`` to the command tree."""
    p = sub.add_parser("report", help="summarise run folders / sweeps in one page (markdown or html)",
                       description="Write one page with the metrics table, training curves and every analysis "
                       "available for the given run (or sweep) folders.")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", default="report.md", help="report.md (PNG files in report_files/) or report.html "
                   "(self-contained); default report.md")
    p.add_argument("--title", default="wsml report")
    p.set_defaults(func=_report)
    _add_analyze(sub)


def _report(args: argparse.Namespace) -> int:
    from wsml.analysis.report import build_report

    out = build_report(args.runs, args.out, title=args.title)
    print(f"wrote {out}")
    return 0


# ------------------------------------------------------------------------------------------------ analyze


def _add_analyze(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("analyze", help="paper analyses: memorization, precision, pointing game, CAMs, sweeps",
                            description="The paper's analyses on finished runs.", epilog=EPILOG_ANALYZE,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", metavar="ANALYSIS", required=True)
    s = sub.add_parser("memorization", help="Fig 1 / Table 1 of a run trained with callbacks=[memorization]")
    s.add_argument("run_dir", metavar="RUN_DIR")
    s = sub.add_parser("precision", help="Fig 4: precision of modification of LL runs (callbacks=[modification])")
    s.add_argument("runs", nargs="+", metavar="RUN_DIR")
    s.add_argument("--out", help="PNG path (default: <first run>/analysis/precision.png)")
    s = sub.add_parser("qualitative", help="Fig 3: labels an LL run modified on some training images")
    s.add_argument("run_dir", metavar="RUN_DIR")
    s.add_argument("--rows", type=_ints, help="training rows to show (default: 3 right + 1 wrong)")
    s.add_argument("--out", help="PNG path (default: RUN_DIR/analysis/qualitative.png)")
    s = sub.add_parser("pointing", help="Table 4: Pointing Game of a run's best checkpoint (needs boxes)")
    s.add_argument("run_dir", metavar="RUN_DIR")
    s.add_argument("--split", default="test")
    s.add_argument("--tolerance", type=float, default=0.0, help="pixels around boxes (paper 0, Zhang et al. 15)")
    s.add_argument("--max-images", type=int, help="score only the first N images")
    s.add_argument("--overlays", type=int, default=4, help="CAM overlay figure of the first N images (0 = none)")
    add_device(s)
    s = sub.add_parser("cams", help="CAM overlays of the same images for several runs")
    s.add_argument("runs", nargs="+", metavar="RUN_DIR")
    s.add_argument("--rows", type=_ints, default=[0, 1, 2, 3], help="split rows (default 0,1,2,3)")
    s.add_argument("--names", help="comma-separated column titles (default: loss names)")
    s.add_argument("--split", default="test")
    s.add_argument("--classes", default="gt", choices=["gt", "predicted"],
                   help="each image's ground-truth classes, or the first run's top-1 predicted class")
    s.add_argument("--out", default="cams.png")
    s.add_argument("--title", default="CAM (Table 4 / appendix Fig 1)", help="figure title")
    add_device(s)
    s = sub.add_parser("sweep", help="Fig 5/6: train METHODS × VALUES of one config key, plot test mAP")
    s.add_argument("config", nargs="?", help="base YAML config")
    s.add_argument("overrides", nargs="*", metavar="key=value", help="overrides for every run")
    s.add_argument("--param", required=True, help="config key, e.g. loss.delta_rel or data.options.train_frac")
    s.add_argument("--values", required=True, type=_values, help="comma-separated values")
    s.add_argument("--method", action="append", default=[], metavar="LABEL:key=value,...",
                   help="a method (repeatable); default: the base config as is")
    s.add_argument("--out", required=True, help="sweep folder (runs/, sweep.json, sweep.png)")
    s.add_argument("--xlabel", default="")
    s.set_defaults(key_values="overrides")
    for name, fn in (("memorization", _memorization), ("precision", _precision), ("qualitative", _qualitative),
                     ("pointing", _pointing), ("cams", _cams), ("sweep", _sweep)):
        sub.choices[name].set_defaults(func=fn)


def _memorization(args: argparse.Namespace) -> int:
    from wsml.analysis.memorization import load_curve, memorization_summary
    from wsml.analysis.plots import plot_memorization
    from wsml.checkpoint import write_json

    summary = memorization_summary(args.run_dir)
    out = Path(args.run_dir) / "analysis"
    out.mkdir(exist_ok=True)
    curve = load_curve(args.run_dir)
    if curve is not None:
        plot_memorization(curve, out / "memorization.png")
    write_json(out / "memorization.json", summary)
    for g, p in summary["peaks"].items():
        shape = "  (rises, then falls)" if p["rises_then_falls"] else ""
        print(f"{g:>3}: loss after epoch 1 {p['start_loss']:.4f} -> peak {p['peak_loss']:.4f} at epoch "
              f"{p['peak_at']:.2f} -> final {p['final_loss']:.4f}{shape}")
    for g, d in summary.get("table1", {}).items():
        print(f"{g:>3}: highest loss in epoch 1 for {d['warmup_pct']:.1f}% of {d['entries']} entries, "
              f"later for {d['regular_pct']:.1f}% (median epoch {d['median_peak_epoch']:.0f})")
    print(f"wrote {out / 'memorization.png'} and {out / 'memorization.json'}")
    return 0


def _precision(args: argparse.Namespace) -> int:
    from wsml.analysis.fig4 import fig4_verdict, group_runs, matched_count, plot_groups
    from wsml.checkpoint import write_json

    groups = group_runs(args.runs)
    for key, runs in groups.items():
        for r in runs:
            print(f"{key} seed {r['seed']}: precision % per epoch "
                  + ", ".join("–" if p != p else f"{p:.1f}" for p in r["precision"])
                  + "; perfect ranker " + ", ".join("–" if p != p else f"{p:.1f}" for p in r["oracle"]))
    bases = [b for runs in groups.values() for r in runs for b in r["base_rate"] if b == b]
    print(f"base rate (truly positive among unobserved): {sum(bases) / len(bases) if bases else float('nan'):.2f}%")
    verdict = fig4_verdict(groups)
    for c in verdict["comparisons"].values():
        print(c["text"])
    out = Path(args.out) if args.out else Path(args.runs[0]) / "analysis" / "precision.png"
    print(f"wrote {plot_groups(groups, out)}")
    matched = matched_count(groups)
    for m in matched:
        print(f"matched count, seed {m['seed']}: LL-Cp epoch {m['ll_cp_epoch']} ({m['ll_cp_count']} entries) "
              f"{m['ll_cp_precision']:.1f}% vs {m['method']} epoch {m['epoch']} ({m['count']}) {m['precision']:.1f}%")
    write_json(out.with_suffix(".json"), {"runs": [str(d) for d in args.runs], "groups": groups, "verdict": verdict,
                                          "matched_count": matched})
    print(f"wrote {out.with_suffix('.json')}")
    return 0


def _qualitative(args: argparse.Namespace) -> int:
    from wsml.analysis.qualitative import make_qualitative

    out = Path(args.out) if args.out else Path(args.run_dir) / "analysis" / "qualitative.png"
    png = make_qualitative(args.run_dir, out, rows=args.rows)
    if png is None:
        raise ValueError(f"{args.run_dir}: no modifications logged; train an LL loss with callbacks=[modification]")
    print(f"wrote {png}")
    return 0


def _pointing(args: argparse.Namespace) -> int:
    from wsml.analysis.cams import cam_overlay_figure, evaluate_pointing_game

    r = evaluate_pointing_game(args.run_dir, args.split, args.tolerance, args.max_images, args.device)
    print(f"{args.run_dir}: Pointing Game {r['score']:.2f}% (random point {r['random_score']:.2f}%) over "
          f"{r['pairs']} (image, class) pairs of {r['images']} {args.split} images; "
          f"{r['no_box']} positives without box")
    if args.overlays > 0:
        png = cam_overlay_figure({"CAM": args.run_dir}, list(range(args.overlays)),
                                 Path(args.run_dir) / "analysis" / "cam_overlays.png", args.split, args.device)
        print(f"wrote {png}")
    return 0


def _cams(args: argparse.Namespace) -> int:
    from wsml.analysis.cams import cam_overlay_figure
    from wsml.runs import RunFolder

    names = args.names.split(",") if args.names else [RunFolder(d).loss_name for d in args.runs]
    if len(names) != len(args.runs) or len(set(names)) != len(names):
        raise ValueError(f"--names must give {len(args.runs)} distinct titles, got {names}")
    png = cam_overlay_figure(dict(zip(names, args.runs)), args.rows, args.out, args.split, args.device, args.classes,
                             title=args.title)
    print(f"wrote {png}")
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from wsml.analysis.sweeps import parse_methods, run_sweep, sweep_table

    methods = parse_methods(args.method) if args.method else {"run": []}
    sweep = run_sweep(args.param, args.values, methods, args.out, args.config, args.overrides, args.xlabel,
                      command="wsml analyze " + shlex.join(args.argv))
    print(sweep_table(sweep))
    print(f"wrote {Path(args.out) / 'sweep.json'} and {Path(args.out) / 'sweep.png'}")
    return 0
