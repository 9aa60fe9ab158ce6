"""``wsml review RUN --val | --missing``: start or resume a review and serve its page on 127.0.0.1."""

from __future__ import annotations

import signal
import sys
from typing import Optional, Sequence

EPILOG = """examples:
  wsml review runs/my-data-ll-r --val                 # complete the labels of 200 drawn images -> split=val rows
  wsml review runs/my-data-ll-r --missing --k 500     # accept / reject the 500 best-ranked missing labels
  wsml review runs/my-data-ll-r --export-only         # write the reviewed CSV from the saved decisions

Decisions are saved in RUN/review/ as they are made: stop the server or close the tab at any time and run the
same command again (a saved review is resumed as it is; --n/--k that differ from it are an error).
"Export" (or --export-only) writes <labels>-reviewed.csv next to your labels CSV (the original is not touched)
plus <labels>-reviewed.labelstudio.json/.xml; then
  wsml prepare csv --root my_data/labels-reviewed.csv --out data/my-data-reviewed
  wsml train configs/custom/default.yaml data.path=data/my-data-reviewed

keys (val): left/right previous/next, 1-9 and 0 toggle the 1st-10th class, Enter accept and next, x clear
keys (missing): arrows move, a accept, r reject, u undo, n/p next/previous page"""


def build_parser():
    """The ``wsml review`` argument parser."""
    import argparse

    p = argparse.ArgumentParser(prog="wsml review", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
                                description="Review labels in a local web page (127.0.0.1, no external assets): "
                                "complete the label sets of a val sample (--val) or accept / reject the labels "
                                "find-missing suggests (--missing); export a new labels CSV for `wsml prepare csv`.")
    p.add_argument("run_dir", metavar="RUN", help="a finished run trained on a labels CSV")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--val", action="store_true", help="complete the labels of N drawn training images")
    mode.add_argument("--missing", action="store_true", help="accept or reject find-missing's suggestions")
    mode.add_argument("--export-only", action="store_true", help="export the saved decisions and exit")
    p.add_argument("--n", type=int, help="--val: images to draw (default 200)")
    p.add_argument("--seed", type=int, help="--val: seed of the stratified draw (default 0)")
    p.add_argument("--k", type=int, help="--missing: the K best-ranked pairs (default: every flagged pair)")
    p.add_argument("--folds", type=int, help="--missing: add K-fold out-of-fold scores (find-missing; default 0)")
    p.add_argument("--oof-epochs", type=int, help="--missing: epochs per fold model")
    p.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one, printed)")
    p.add_argument("--out", help="reviewed CSV to write (default: <labels>-reviewed.csv next to the labels CSV)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    return p


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def run(args) -> int:
    from pathlib import Path

    from wsml.review import build, export_review
    from wsml.review.server import make_server, url_of
    from wsml.review.state import REVIEW_DIR

    if args.export_only:
        r = export_review(Path(args.run_dir) / REVIEW_DIR, args.out)
        print(f"wrote {r['csv']} ({r['val_rows']} val rows completed, {r['accepted']} labels accepted, "
              f"{r['rejected']} rejected) and {r['labelstudio']}")
        return 0
    if not (Path(args.run_dir) / REVIEW_DIR / ("val.json" if args.val else "missing.csv")).is_file():
        print("scoring images with the run's best checkpoint (a new review; later starts reuse it) ...", flush=True)
    if args.val:
        review = build.start_val(args.run_dir, n=args.n, seed=args.seed, device=args.device)
    else:
        review = build.start_missing(args.run_dir, k=args.k, folds=args.folds, oof_epochs=args.oof_epochs,
                                     device=args.device)
    try:
        server = make_server(review, args.port, args.out)
    except OSError as e:
        raise OSError(f"cannot serve on 127.0.0.1:{args.port}: {e.strerror or e}") from None
    counts = ", ".join(f"{v} {k}" for k, v in review.counts().items())
    print(f"reviewing {review.source.csv} ({review.mode}: {counts}); decisions saved in {review.folder}")
    print(f"open {url_of(server)}  (Ctrl-C stops the server; run the same command to continue)", flush=True)
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops it like Ctrl-C
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped; every decision is saved")
    finally:
        server.server_close()
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``wsml review``; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except (ValueError, FileNotFoundError, NotADirectoryError, PermissionError, OSError) as e:
        if args.debug:
            raise
        print(f"wsml: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
