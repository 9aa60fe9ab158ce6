"""Export the Fashion-MNIST mosaics as a user's own data: PNG files + a labels CSV, with the hidden truth aside.

Own-data benchmarks (partial vs complete val, Δrel auto, review of missing labels) need data that looks
exactly like a practitioner's — image files and a ``path,labels,split`` CSV — while the complete labels stay
known for measuring. This writes, under ``OUT``:

* ``img/<split>/NNNNNN.png``   the mosaics (56×56 grayscale by default)
* ``labels.csv``               ``path,labels,split``: train rows keep ``num_pos`` observed positives (the reference
                               protocol, seed ``obs_seed``); ``--complete-val N`` turns N training rows (a seeded
                               random choice) into ``split=val`` rows with their complete label sets; test rows
                               are complete. Without ``--complete-val`` there are no val rows, as in the
                               practitioner's first try.
* ``hidden.csv``               ``path,labels``: the complete label set of every row (never read by wsml itself)

Usage: ``python benchmarks/mosaic_csv.py OUT [--num-train 3000] [--num-test 1000] [--complete-val 200]``
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path
from typing import Optional

import numpy as np

from wsml.data.fashion_mosaic import build_fashion_mosaic


def _names(row: np.ndarray, class_names: list[str]) -> str:
    return ";".join(class_names[c] for c in np.flatnonzero(row))


def export_mosaic_csv(out: str, *, num_train: int = 3000, num_test: int = 1000, complete_val: int = 0,
                      num_pos: int = 1, seed: int = 0, obs_seed: int = 1200, val_seed: int = 0,
                      root: Optional[str] = None) -> dict:
    """Write the mosaics as PNG + ``labels.csv`` + ``hidden.csv`` under ``out``; return a small summary dict."""
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    index = build_fashion_mosaic(root, num_train=num_train, num_test=num_test, seed=seed, num_pos=num_pos,
                                 obs_seed=obs_seed, val_frac=0.0, png_dir=str(out_dir / "img"))
    names = index.class_names
    train, test = index["train"], index["test"]
    observed = train.observed if isinstance(train.observed, np.ndarray) else train.observed.to_dense()
    val_rows = set(np.random.RandomState(val_seed).permutation(len(train))[:complete_val].tolist())
    rows, hidden = [], []
    for i, path in enumerate(train.samples):
        if i in val_rows:
            rows.append(("img/" + path, _names(train.full[i], names), "val"))
        else:
            rows.append(("img/" + path, _names(observed[i] == 1, names), "train"))
        hidden.append(("img/" + path, _names(train.full[i], names)))
    for i, path in enumerate(test.samples):
        rows.append(("img/" + path, _names(test.full[i], names), "test"))
        hidden.append(("img/" + path, _names(test.full[i], names)))
    for fname, header, body in (("labels.csv", ("path", "labels", "split"), rows),
                                ("hidden.csv", ("path", "labels"), hidden)):
        with open(out_dir / fname, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(header)
            w.writerows(body)
    return {"train_rows": len(train) - len(val_rows), "val_rows": len(val_rows), "test_rows": len(test),
            "classes": names, "csv": str(out_dir / "labels.csv"), "hidden": str(out_dir / "hidden.csv")}


def read_hidden(path: str, class_names: list[str]) -> dict[str, np.ndarray]:
    """``hidden.csv`` as {path: {0,1} vector over ``class_names``}."""
    col = {n: j for j, n in enumerate(class_names)}
    truth = {}
    with open(path, newline="") as f:
        for rec in csv.DictReader(f):
            y = np.zeros(len(class_names), dtype=np.uint8)
            for n in filter(None, rec["labels"].split(";")):
                y[col[n]] = 1
            truth[rec["path"]] = y
    return truth


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--num-train", type=int, default=3000)
    ap.add_argument("--num-test", type=int, default=1000)
    ap.add_argument("--complete-val", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    s = export_mosaic_csv(a.out, num_train=a.num_train, num_test=a.num_test, complete_val=a.complete_val,
                          seed=a.seed)
    print(f"wrote {s['csv']}: {s['train_rows']} train, {s['val_rows']} val, {s['test_rows']} test rows; "
          f"complete labels in {s['hidden']}")
