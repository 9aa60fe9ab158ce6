"""``wsml prepare <dataset> --help``: the options an adapter takes, one line each, read from its signature."""

from __future__ import annotations

import importlib
import inspect

from wsml.data._io import PROTOCOL_OPTIONS

HELP = {
    "num_pos": "observed positives kept per training image (reference protocol; -1 = all)",
    "num_neg": "observed negatives kept per training image",
    "seed": "seed of the observed labels and of the train/val split",
    "obs_seed": "seed of the observed labels and of the train/val split",
    "val_frac": "share of the training rows moved to val when there is no val split (default 0.2)",
    "train_frac": "keep this random share of the training rows (paper Fig 6)",
    "train_frac_seed": "seed of train_frac",
    "csv": "labels file name inside --root (default labels.csv)",
    "test_csv": "a second file whose rows are all test rows",
    "images": "folder the image paths are relative to (default: the CSV's folder)",
    "classes": "class list (YAML list, or a text file with one name per line); default: every name seen",
    "format": "labels (path,labels[,negatives][,split]) or wide (path[,split] + one 1/0/empty column per class)",
    "ignore_columns": "comma-separated extra columns to skip (unknown columns are errors)",
    "minus_one": "wide format: what -1 means: error (default), unknown or negative",
    "complete_eval": "val/test rows list every positive (unlisted = absent); false: only listed entries count",
    "simulate_partial": "take the given labels as complete truth and draw the observed ones (study the paper)",
    "on_bad_image": "missing/undecodable/too large images at prepare: error (default), drop or ignore",
    "missing_images": "missing image files: error, drop or ignore (csv: the older name of on_bad_image)",
    "max_pixels": "images with more pixels are refused before decoding (default 64000000)",
    "allow_outside_root": "allow absolute or ../ image paths outside the data root (default false)",
    "allow_unseen_classes": "allow classes without a training positive (default false: an error)",
    "features": "a float .npy with one feature row per CSV data row: kind features, no image read (backbone linear)",
    "sparse_labels": "auto (sparse when a split's N x C is above 2**25), true or false: how labels are stored",
    "layout": "auto, flat (root/<class>/<img>) or split (root/{train,val,test}/<class>/<img>)",
    "multi_label": "the same file name in several class folders is one image with several labels",
    "boxes": "read the bounding boxes (localization analyses)",
    "include_difficult": "count VOC objects marked difficult as positives",
    "drop_empty": "drop images without any positive",
    "num_train": "mosaics drawn from the training items (train + val)",
    "num_test": "test rows",
    "grid": "mosaic grid size (2 = 2x2 items)",
    "min_objects": "fewest items per mosaic",
    "max_objects": "most items per mosaic",
    "png_dir": "also write the mosaics as PNG files there",
    "split_seed": "seed of the train/test split",
    "chunk_rows": "rows read per chunk of the annotation CSVs",
}


def adapter_options(target: str) -> list[tuple[str, str, str]]:
    """[(option, default, help)] of the adapter ``module:function``, including the protocol options it passes on."""
    module, fn = target.split(":")
    sig = inspect.signature(getattr(importlib.import_module(module), fn))
    out = []
    for p in sig.parameters.values():
        if p.name == "root":
            continue
        if p.kind is inspect.Parameter.VAR_KEYWORD:
            out += [(n, "", HELP.get(n, "")) for n in PROTOCOL_OPTIONS if n not in sig.parameters]
            continue
        default = "" if p.default in (inspect.Parameter.empty, None) else repr(p.default)  # None: "not given"
        out.append((p.name, default, HELP.get(p.name, "see the adapter's documentation")))
    return out


def options_text(name: str, target: str) -> str:
    """The help text listing the options of adapter ``name``."""
    rows = adapter_options(target)
    width = max((len(n) for n, _, _ in rows), default=0)
    lines = [f"usage: wsml prepare {name} [--root ROOT] [--out OUT] [key=value ...]", "", f"options of {name}:"]
    for n, default, text in rows:
        lines.append(f"  {n:<{width}}  {text}" + (f" (default {default})" if default and "default" not in text
                                                    else ""))
    return "\n".join(lines)
