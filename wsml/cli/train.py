"""``wsml prepare`` (a data set into wsml's prepared format) and ``wsml train`` (a YAML config + key=value)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional

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


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``prepare`` and ``train`` to the command tree."""
    from wsml.data import available_datasets

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
    sp.set_defaults(func=cmd_prepare, key_values="options")

    sp = sub.add_parser("train", help="train a model (from a YAML config plus key=value overrides)",
                        description="Train a multi-label classifier from partial labels. The config is built from "
                        "defaults <- CONFIG.yaml <- key=value overrides; the run folder is <run.out>/<run.name>.",
                        epilog=EPILOG_TRAIN, formatter_class=fmt)
    sp.add_argument("config", nargs="?", help="YAML config file (e.g. configs/fashion/ll-r.yaml)")
    sp.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. optim.lr=1e-4")
    sp.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last.pt")
    sp.set_defaults(func=cmd_train, key_values="overrides")


def adapter_help(dataset: str) -> Optional[str]:
    """``wsml prepare DATASET --help``: that adapter's options, or None for a name that is not an adapter."""
    from wsml.data import ADAPTERS
    from wsml.data.options_help import options_text

    return options_text(ADAPTERS.resolve(dataset), ADAPTERS[dataset]) if dataset in ADAPTERS else None


def cmd_prepare(args: argparse.Namespace) -> int:
    from wsml.config import parse_assignment
    from wsml.data import prepare

    options = dict(parse_assignment(item, "option", "num_pos=1") for item in args.options)
    out = Path(args.out or Path("data") / args.dataset.lower())
    try:
        index = prepare(args.dataset, out, root=args.root, **options)
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
    from wsml.train.engine import train
    from wsml.train.run_dir import resume_config

    if args.resume:  # a key=value first positional is already among the overrides (wsml.cli.main)
        run_dir = Path(args.resume)
        if not (run_dir / "last.pt").is_file():
            saved = " (no epoch was completed: nothing to resume; start the run again)" \
                if (run_dir / "config.yaml").is_file() else ""
            raise FileNotFoundError(f"{run_dir}: not a resumable run folder (needs last.pt){saved}")
        if args.config:
            raise ValueError("give either a config file or --resume RUN_DIR (the run's own config.yaml is used)")
        train(resume_config(run_dir, args.overrides), resume=run_dir)
        return 0
    train(load_config(args.config, args.overrides))
    return 0
