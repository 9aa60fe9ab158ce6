"""``wsml eval`` (mAP and thresholded metrics of a finished run) and ``wsml predict`` (scores for image files)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from wsml.cli._options import add_device

EPILOG_EVAL = """examples:
  wsml eval runs/fashion-mosaic-ll-r-end-to-end             # test mAP of the best checkpoint
  wsml eval runs/fashion-mosaic-ll-r-end-to-end --split val"""

EPILOG_PREDICT = """examples:
  wsml predict runs/voc-ll-r photo1.jpg photo2.jpg --top-k 3
  wsml predict runs/voc-ll-r images/*.jpg --out predictions.csv          # image,rank,class,score,threshold,predicted
  wsml predict runs/voc-ll-r images/*.jpg --wide --out labels.csv        # one row per image
  wsml predict runs/voc-ll-r photo.jpg --top-k 0 --out photo.json        # every class"""


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``eval`` and ``predict`` to the command tree."""
    fmt = argparse.RawDescriptionHelpFormatter
    sp = sub.add_parser("eval", help="mAP of a finished run's best checkpoint on a split",
                        description="Evaluate the best checkpoint (the epoch picked on val: val mAP, or PU-AUC "
                        "when val labels are partial) of a run folder: mAP, and macro "
                        "F1/precision/recall with per-class thresholds chosen on val; writes "
                        "predictions_<split>.npz and eval_<split>.json into it.", epilog=EPILOG_EVAL,
                        formatter_class=fmt)
    sp.add_argument("run_dir", metavar="RUN_DIR")
    sp.add_argument("--split", default="test", help="train, val or test (default: test)")
    add_device(sp)
    sp.set_defaults(func=cmd_eval)

    sp = sub.add_parser("predict", help="top classes with scores for image files",
                        description="Score image files with a run's best checkpoint and print the top-k classes "
                        "(sigmoid scores, independent per class) and the predicted labels: the classes whose score "
                        "reaches the per-class threshold chosen on the val split (max F1, or the PU rule when val "
                        "labels are partial; thresholds.json in the run folder).",
                        epilog=EPILOG_PREDICT, formatter_class=fmt)
    sp.add_argument("run_dir", metavar="RUN_DIR")
    sp.add_argument("images", nargs="+", metavar="IMAGE", help="image files or folders (their images, recursively)")
    sp.add_argument("--top-k", type=int, default=5, help="classes listed per image (default 5; 0 = all)")
    sp.add_argument("--out", metavar="FILE", help="write the results to FILE.csv or FILE.json")
    sp.add_argument("--wide", action="store_true", help="CSV with one row per image: path, predicted labels, "
                    "one score column per class (a labels CSV `wsml prepare csv` reads)")
    sp.add_argument("--skip-bad-images", action="store_true", help="leave unreadable images out (counted, the "
                    "first named on stderr) instead of stopping at the first one")
    add_device(sp)
    sp.set_defaults(func=cmd_predict)


# ------------------------------------------------------------------------------------------ commands


def cmd_eval(args: argparse.Namespace) -> int:
    from wsml.checkpoint import write_json
    from wsml.evaluation import evaluate_run
    from wsml.runs import RunFolder
    from wsml.tools.thresholds import ensure_thresholds, per_class_lines, per_class_table, thresholded_metrics

    run = RunFolder(args.run_dir)
    r, scores, rows = evaluate_run(run, args.split, device=args.device)
    m = f"{r['map']:.2f}" if r["map"] is not None else r.get("message", "not available")
    note = f" (partial labels: {r['classes_left_out']} classes left out)" if r["policy"] == "partial-labels" else ""
    print(f"{args.run_dir}: {r['split']} mAP {m} over {r['num_samples']} samples "
          f"(best checkpoint, epoch {r['checkpoint_epoch']}){note}")
    if "group_map" in r:
        print("  per class group (G1 = fewest annotated training images): "
              + ", ".join(f"{g} {v:.2f}" for g, v in r["group_map"].items()))
    if scores is None:  # scores kept in chunks (too large to hold): the thresholded metrics need them in memory
        print(f"  scores in {r['predictions']}; per-class F1 at the val thresholds is not computed at this size")
        return 0
    thr = ensure_thresholds(run, args.device, val=(r, scores, rows) if args.split == "val" else None)  # chosen on val
    t = thresholded_metrics(run, args.split, scores, rows, thresholds=thr)
    if t["macro_f1"] is not None:
        note = " (optimistic: the thresholds were chosen on val)" if args.split == "val" else ""
        print(f"  with the val thresholds: macro F1 {t['macro_f1']:.2f}, precision {t['macro_precision'] or 0:.2f}, "
              f"recall {t['macro_recall'] or 0:.2f}{note}")
    r.update({k: v for k, v in t.items() if k != "split"})
    r["per_class"] = per_class_table(r, thr)
    write_json(run.file(f"eval_{args.split}.json"), r)  # AP and F1 per class, printed and stored
    for line in per_class_lines(r["per_class"]):
        print(line)
    return 0


def _thresholds(run, device: str) -> tuple[list, list]:
    """(class names, per-class thresholds chosen on val); 0.5 with a note when the data set is not available."""
    from wsml.tools.thresholds import DEFAULT_THRESHOLD, ensure_thresholds

    if not run.file("config.yaml").is_file() or not run.best_pt.is_file():
        raise FileNotFoundError(f"{run.path} is not a finished run folder (needs config.yaml and best.pt)")
    try:
        thr = ensure_thresholds(run, device)
        return list(thr["class_names"]), list(thr["thresholds"])
    except FileNotFoundError as e:  # the val split is not on this machine: scores only, threshold 0.5
        info = run.checkpoint().get("model_info")
        if info is None:
            raise
        print(f"note: no per-class thresholds ({' '.join(str(e).split())}); using {DEFAULT_THRESHOLD}",
              file=sys.stderr)
        return list(info["class_names"]), [DEFAULT_THRESHOLD] * len(info["class_names"])


def cmd_predict(args: argparse.Namespace) -> int:
    from wsml.runs import RunFolder
    from wsml.tools.prediction_files import PredictionWriter, expand_images, prediction_records, run_image_score_batches

    args.images = expand_images(args.images)  # folders: their image files, sorted
    if args.out and Path(args.out).suffix.lower() not in (".csv", ".json"):
        raise ValueError(f"--out must end in .csv or .json, got {args.out}")
    if args.top_k < 0:
        raise ValueError(f"--top-k must be >= 0 (0 = every class), got {args.top_k}")
    run = RunFolder(args.run_dir)
    class_names, thresholds = _thresholds(run, args.device)
    writer = PredictionWriter(args.out, class_names, wide=args.wide) if args.out else None
    skipped = [] if args.skip_bad_images else None
    for paths, scores in run_image_score_batches(run, args.images, class_names, device=args.device,
                                                 skipped=skipped):
        records = prediction_records(paths, scores, class_names, thresholds, top_k=args.top_k)  # streamed
        for r in records:
            print(r["image"] + ": " + ", ".join(f"{t['class']} {t['score']:.3f}" for t in r["top"])
                  + f"  -> labels: {'; '.join(r['labels']) or '(none)'}")
        if writer is not None:
            writer.write(records)
    if writer is not None:
        print(f"wrote {writer.close()}")
    if skipped:
        print(f"warning: {len(skipped)} of {len(args.images)} image(s) could not be read and are not in the "
              f"output (first: {skipped[0]})", file=sys.stderr)
    return 0
