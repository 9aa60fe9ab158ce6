"""Practitioner tools on a finished run: ``wsml find-missing RUN_DIR`` (rank the training labels the annotators
likely missed, :mod:`wsml.tools.find_missing`) and ``wsml review RUN --val | --missing`` (start or resume a review and
serve its page on 127.0.0.1, :mod:`wsml.tools.review`)."""

from __future__ import annotations

import argparse
import os
import signal

from wsml.cli._options import add_device

EPILOG_FIND_MISSING = """examples:
  wsml find-missing runs/my-data-ll-r                          # pairs the LL-R model flags (val thresholds)
  wsml find-missing runs/my-data-ll-r --k 200 --out missing.csv
  wsml find-missing runs/my-data-ll-r --folds 3 --oof-epochs 5  # + out-of-fold scores (3 extra trainings)"""

EPILOG_REVIEW = """examples:
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


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``find-missing`` and ``review`` to the command tree."""
    from wsml.tools.ranking import RANK_BY

    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser("find-missing", help="rank the training labels the annotators likely missed",
                       epilog=EPILOG_FIND_MISSING, formatter_class=fmt,
                       description="Rank the unobserved (image, class) pairs of a run's training set that "
                       "are likely positive: labels the annotators missed. Scores are the model's sigmoid "
                       "scores (= the assumed-negative loss softplus(z), monotone), in-sample and/or "
                       "out-of-fold, plus LL-Cp's permanent corrections.")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--out", default="missing.csv", help="CSV to write (default missing.csv)")
    p.add_argument("--k", type=int, help="the K best-ranked unobserved pairs (default: every flagged pair)")
    p.add_argument("--folds", type=int, default=0, help="K-fold out-of-fold scores (0 = off; K trainings)")
    p.add_argument("--oof-epochs", type=int, help="epochs per fold model (default: the run's train.epochs)")
    p.add_argument("--oof-seed", type=int, default=0, help="seed of the fold assignment")
    p.add_argument("--rank-by", default="auto", choices=RANK_BY,
                   help="score to rank by (auto: mean of model and oof with --folds, else model)")
    add_device(p)
    p.set_defaults(func=cmd_find_missing)

    p = sub.add_parser("review", help="complete a val set / accept or reject missing labels in a local web page",
                       epilog=EPILOG_REVIEW, formatter_class=fmt,
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
    add_device(p)
    p.set_defaults(func=cmd_review)


def cmd_find_missing(args: argparse.Namespace) -> int:
    from wsml.tools.find_missing import find_missing, record_run, write_missing

    rows = find_missing(args.run_dir, k=args.k, folds=args.folds, oof_epochs=args.oof_epochs,
                        oof_seed=args.oof_seed, rank_by=args.rank_by, device=args.device, quiet=False)
    if os.environ.get("RANK", "0") != "0":  # torchrun: every process scored its shard; rank 0 writes
        return 0
    write_missing(args.out, rows)
    record_run(args, rows)
    for r in rows[:10]:
        print(f"{r['rank']:>4}  {r['image']}  {r['class']}  score {r['score']:.3f}  [{r['sources'] or '-'}]")
    if len(rows) > 10:
        print(f"   ... {len(rows) - 10} more")
    what = (f"{len(rows)} ranked pairs (the best-ranked unobserved pairs, flagged or not)" if args.k is not None
            else f"{len(rows)} flagged likely-missing labels")
    print(f"wrote {what} to {args.out}")
    return 0


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def cmd_review(args: argparse.Namespace) -> int:
    from pathlib import Path

    from wsml.tools.review import build, export_review
    from wsml.tools.review.server import make_server, url_of
    from wsml.tools.review.state import REVIEW_DIR

    if args.export_only:
        r = export_review(Path(args.run_dir) / REVIEW_DIR, args.out)
        print(f"wrote {r['csv']} ({r['val_rows']} val rows completed, {r['accepted']} labels accepted, "
              f"{r['rejected']} rejected), {r['labelstudio']} and {Path(r['labelstudio_config']).name} (Label Studio)")
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
