"""The ``wsml`` command: prepare a data set, train, evaluate a run, predict on image files.

Errors in configs, paths or inputs print one line ``wsml: error: ...`` and exit with code 2 (``--debug``
shows the traceback); Ctrl-C during training exits with 130 and leaves a resumable ``last.pt``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

EPILOG_PREPARE = """examples:
  wsml prepare fashion-mosaic                       # embedded default, offline -> data/fashion-mosaic
  wsml prepare fashion-mosaic num_train=3000        # adapter options as key=value
  wsml prepare voc --root ~/data/VOCdevkit --out data/voc
  wsml prepare formatted --root ~/data/nuswide --out data/nus images=~/data/nuswide/Flickr   # Cole et al.'s .npy
  wsml prepare yeast                                # tabular features shipped with `river`
data sets: {datasets}"""

EPILOG_TRAIN = """examples:
  wsml train configs/fashion/ll-r.yaml                       # CPU, a few minutes
  wsml train configs/voc/ll-r.yaml data.path=data/voc        # the paper's VOC setting (GPU)
  wsml train configs/voc/ll-r.yaml optim.lr=1e-3 loss.delta_rel=0.3 run.name=try2
  wsml train --resume runs/voc-ll-r                          # continue after an interruption
  torchrun --nproc-per-node 4 -m wsml.cli train configs/openimages/ll-r.yaml   # DDP, global batch

overrides are section.key=value with YAML values; sections: data, model, loss, optim, train, run,
callbacks. A run folder gets config.yaml, metrics.csv, best.pt, last.pt, predictions_test.npz, summary.json."""

EPILOG_EVAL = """examples:
  wsml eval runs/fashion-mosaic-ll-r-end-to-end             # test mAP of the best checkpoint
  wsml eval runs/fashion-mosaic-ll-r-end-to-end --split val"""

EPILOG_PREDICT = """examples:
  wsml predict runs/voc-ll-r photo1.jpg photo2.jpg --top-k 3
  wsml predict runs/voc-ll-r images/*.jpg --out predictions.csv          # image,rank,class,score,threshold,predicted
  wsml predict runs/voc-ll-r images/*.jpg --wide --out labels.csv        # one row per image
  wsml predict runs/voc-ll-r photo.jpg --top-k 0 --out photo.json        # every class"""


def build_parser() -> argparse.ArgumentParser:
    from wsml.data import available_datasets

    p = argparse.ArgumentParser(prog="wsml", description="Multi-label classification from partial labels "
                                "(Large Loss Matters, CVPR 2022): LL-R, LL-Ct, LL-Cp and baselines.")
    p.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    fmt = argparse.RawDescriptionHelpFormatter

    sp = sub.add_parser("prepare", help="convert a data set into wsml's prepared format and print its statistics",
                        description="Read a data set in its public layout, draw the observed labels with the "
                        "reference protocol (one positive per training image, seed 1200; 20% of train -> val) "
                        "and write a prepared folder that `wsml train` reads.",
                        epilog=EPILOG_PREPARE.format(datasets=", ".join(available_datasets())), formatter_class=fmt)
    sp.add_argument("dataset", help="data set name (see below)")
    sp.add_argument("--root", help="folder with the raw files (not needed for fashion-mosaic and yeast)")
    sp.add_argument("--out", help="output folder (default: data/<dataset>)")
    sp.add_argument("options", nargs="*", metavar="key=value", help="adapter options, e.g. num_pos=1 seed=1200; "
                    "`wsml prepare DATASET --help` lists them")

    sp = sub.add_parser("train", help="train a model (from a YAML config plus key=value overrides)",
                        description="Train a multi-label classifier from partial labels. The config is built from "
                        "defaults <- CONFIG.yaml <- key=value overrides; the run folder is <run.out>/<run.name>.",
                        epilog=EPILOG_TRAIN, formatter_class=fmt)
    sp.add_argument("config", nargs="?", help="YAML config file (e.g. configs/fashion/ll-r.yaml)")
    sp.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. optim.lr=1e-4")
    sp.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last.pt")

    sp = sub.add_parser("eval", help="mAP of a finished run's best checkpoint on a split",
                        description="Evaluate the best checkpoint (best val mAP) of a run folder: mAP, and macro "
                        "F1/precision/recall with per-class thresholds chosen on val; writes "
                        "predictions_<split>.npz and eval_<split>.json into it.", epilog=EPILOG_EVAL,
                        formatter_class=fmt)
    sp.add_argument("run_dir", metavar="RUN_DIR")
    sp.add_argument("--split", default="test", help="train, val or test (default: test)")
    sp.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])

    sp = sub.add_parser("predict", help="top classes with scores for image files",
                        description="Score image files with a run's best checkpoint and print the top-k classes "
                        "(sigmoid scores, independent per class) and the predicted labels: the classes whose score "
                        "reaches the per-class threshold chosen on the val split (max F1; thresholds.json in the "
                        "run folder).", epilog=EPILOG_PREDICT, formatter_class=fmt)
    sp.add_argument("run_dir", metavar="RUN_DIR")
    sp.add_argument("images", nargs="+", metavar="IMAGE", help="image files or folders (their images, recursively)")
    sp.add_argument("--top-k", type=int, default=5, help="classes listed per image (default 5; 0 = all)")
    sp.add_argument("--out", metavar="FILE", help="write the results to FILE.csv or FILE.json")
    sp.add_argument("--wide", action="store_true", help="CSV with one row per image: path, predicted labels, "
                    "one score column per class (a labels CSV `wsml prepare csv` reads)")
    sp.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    # analysis commands parse their own arguments (wsml.analysis.cli); listed here for --help
    sub.add_parser("report", help="summarise run folders / sweeps (see `wsml report --help`)", add_help=False)
    sub.add_parser("analyze", help="paper analyses: memorization, precision, pointing game, CAMs, sweeps "
                   "(see `wsml analyze --help`)", add_help=False)
    sub.add_parser("find-missing", help="rank the training labels the annotators likely missed "
                   "(see `wsml find-missing --help`)", add_help=False)
    sub.add_parser("bench", help="grid of methods x seeds -> mean ± std tables vs Naive AN "
                   "(see `wsml bench --help`)", add_help=False)
    sub.add_parser("review", help="complete a val set / accept or reject missing labels in a local web page "
                   "(see `wsml review --help`)", add_help=False)
    return p


# ------------------------------------------------------------------------------------------ commands


def cmd_prepare(args: argparse.Namespace) -> int:
    from wsml.config import parse_value
    from wsml.data import prepare

    options = {}
    for item in args.options:
        if "=" not in item:
            raise ValueError(f"option {item!r} is not of the form key=value (e.g. num_pos=1)")
        k, v = item.split("=", 1)
        options[k] = parse_value(v)
    out = Path(args.out or Path("data") / args.dataset.lower())
    try:
        index = prepare(args.dataset, out, root=args.root, **options)
    except TypeError as e:  # an option the adapter does not take
        if "keyword argument" not in str(e):
            raise
        raise ValueError(f"{args.dataset}: {e}; `wsml prepare {args.dataset} --help` lists the options") from None
    except ValueError as e:
        if "unknown option" in str(e):
            raise ValueError(f"{e}; `wsml prepare {args.dataset} --help` lists all options") from None
        raise
    print(f"prepared {index.name} -> {out}  ({index.num_classes} classes, kind {index.kind})")
    for split, st in index.meta.get("stats", {}).items():
        parts = [f"{st.get('rows', len(index[split]))} samples"]
        for key, label in (("mean_positives", "positives/sample"), ("observed_pos_per_row", "observed pos/sample"),
                           ("observed_neg_per_row", "observed neg/sample")):
            if key in st:
                parts.append(f"{st[key]:.3f} {label}")
        print(f"  {split:<5}: " + ", ".join(parts))
    from wsml.data.custom import prepare_notes

    for line in prepare_notes(index):  # own data: positives per class and split, and what to check
        print(line, file=sys.stderr if line.startswith("warning:") else sys.stdout)
    print(f"train with: wsml train <config.yaml> data.path={out}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from wsml.config import load_config
    from wsml.engine import train
    from wsml.run_folder import resume_config

    if args.resume:
        run_dir = Path(args.resume)
        if not (run_dir / "last.pt").is_file():
            saved = " (no epoch was completed: nothing to resume; start the run again)" \
                if (run_dir / "config.yaml").is_file() else ""
            raise FileNotFoundError(f"{run_dir}: not a resumable run folder (needs last.pt){saved}")
        if args.config and "=" in args.config:  # `--resume DIR key=value`: the positional is an override
            args.overrides.insert(0, args.config)
        elif args.config:
            raise ValueError("give either a config file or --resume RUN_DIR (the run's own config.yaml is used)")
        train(resume_config(run_dir, args.overrides), resume=run_dir)
        return 0
    if args.config and "=" in args.config and not Path(args.config).is_file():
        args.overrides.insert(0, args.config)
        args.config = None
    train(load_config(args.config, args.overrides))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from wsml.evaluation import evaluate_run
    from wsml.thresholds import thresholded_metrics

    r = evaluate_run(args.run_dir, args.split, device=args.device)
    m = f"{r['map']:.2f}" if r["map"] is not None else r.get("message", "not available")
    note = f" (partial labels: {r['classes_left_out']} classes left out)" if r["policy"] == "partial-labels" else ""
    print(f"{args.run_dir}: {r['split']} mAP {m} over {r['num_samples']} samples "
          f"(best checkpoint, epoch {r['checkpoint_epoch']}){note}")
    if "group_map" in r:
        print("  per class group (G1 = fewest annotated training images): "
              + ", ".join(f"{g} {v:.2f}" for g, v in r["group_map"].items()))
    t = thresholded_metrics(args.run_dir, args.split, device=args.device)  # per-class thresholds chosen on val
    if t["macro_f1"] is not None:
        note = " (optimistic: the thresholds were chosen on val)" if args.split == "val" else ""
        print(f"  with the val thresholds: macro F1 {t['macro_f1']:.2f}, precision {t['macro_precision'] or 0:.2f}, "
              f"recall {t['macro_recall'] or 0:.2f}{note}")
    from wsml.thresholds import per_class_lines

    for line in per_class_lines(args.run_dir, args.split):  # AP and F1 per class (also in eval_<split>.json)
        print(line)
    return 0


def _thresholds(run_dir: str, device: str) -> tuple[list, list]:
    """(class names, per-class thresholds chosen on val); 0.5 with a note when the data set is not available."""
    from wsml.checkpoint import load_checkpoint
    from wsml.thresholds import DEFAULT_THRESHOLD, ensure_thresholds

    run = Path(run_dir)
    if not (run / "config.yaml").is_file() or not (run / "best.pt").is_file():
        raise FileNotFoundError(f"{run} is not a finished run folder (needs config.yaml and best.pt)")
    try:
        thr = ensure_thresholds(run, device)
        return list(thr["class_names"]), list(thr["thresholds"])
    except FileNotFoundError as e:  # the val split is not on this machine: scores only, threshold 0.5
        info = load_checkpoint(run / "best.pt").get("model_info")
        if info is None:
            raise
        print(f"note: no per-class thresholds ({' '.join(str(e).split())}); using {DEFAULT_THRESHOLD}",
              file=sys.stderr)
        return list(info["class_names"]), [DEFAULT_THRESHOLD] * len(info["class_names"])


def cmd_predict(args: argparse.Namespace) -> int:
    from wsml.prediction_files import expand_images, prediction_records, score_images, write_predictions

    args.images = expand_images(args.images)  # folders: their image files, sorted
    if args.out and Path(args.out).suffix.lower() not in (".csv", ".json"):
        raise ValueError(f"--out must end in .csv or .json, got {args.out}")
    if args.top_k < 0:
        raise ValueError(f"--top-k must be >= 0 (0 = every class), got {args.top_k}")
    class_names, thresholds = _thresholds(args.run_dir, args.device)
    scores = score_images(args.run_dir, args.images, class_names, device=args.device)
    records = prediction_records(args.images, scores, class_names, thresholds, top_k=args.top_k)
    for r in records:
        print(r["image"] + ": " + ", ".join(f"{t['class']} {t['score']:.3f}" for t in r["top"])
              + f"  -> labels: {'; '.join(r['labels']) or '(none)'}")
    if args.out:
        print(f"wrote {write_predictions(args.out, records, class_names, wide=args.wide)}")
    return 0


COMMANDS = {"prepare": cmd_prepare, "train": cmd_train, "eval": cmd_eval, "predict": cmd_predict}


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``wsml`` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("report", "analyze", "find-missing", "bench", "review"):  # commands with own parsers
        if argv[0] == "review":
            from wsml.review.cli import main as main_review

            return main_review(argv[1:])
        if argv[0] == "bench":
            from wsml.bench import main_bench

            return main_bench(argv[1:])
        if argv[0] == "find-missing":
            from wsml import find_missing

            return find_missing.main(argv[1:])
        from wsml.analysis import cli as analysis_cli

        return (analysis_cli.main_report if argv[0] == "report" else analysis_cli.main_analyze)(argv[1:])
    debug = "--debug" in argv  # accepted before or after the command
    if len(argv) >= 3 and argv[0] == "prepare" and ({"-h", "--help"} & set(argv[2:])):
        from wsml.data import ADAPTERS
        from wsml.data.options_help import options_text

        key = argv[1].lower().replace("_", "-")
        if key in ADAPTERS:  # `wsml prepare csv --help`: that adapter's options
            print(options_text(key, ADAPTERS[key]))
            return 0
    parser = build_parser()
    args, extra = parser.parse_known_args([a for a in argv if a != "--debug"])
    args.debug = debug
    # key=value items after an option (`prepare voc --out d seed=1`) land in `extra`; they belong to the command
    bad = [a for a in extra if a.startswith("-") or "=" not in a]
    if bad or (extra and args.command not in ("prepare", "train")):
        parser.error(f"unrecognized arguments: {' '.join(bad or extra)}")
    if extra:
        (args.options if args.command == "prepare" else args.overrides).extend(extra)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        return 130
    except (ValueError, OSError) as e:  # bad input, missing or unreadable files, a full disk
        if args.debug:
            raise
        print(f"wsml: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
