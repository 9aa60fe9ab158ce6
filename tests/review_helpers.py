"""A tiny own-data set (PNG files + labels CSV) and a fake finished run on it, for the ``wsml review`` tests:
the run folder has config.yaml, a placeholder best.pt and a thresholds.json that matches it, so reviews start
without training a model (scores come from a ``scorer``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from wsml.config import load_config
from wsml.data import prepare
from wsml.runs import write_config

CLASSES = ["cat", "dog", "owl", "yak"]


def make_own_data(folder: Path, n_train: int = 16) -> Path:
    """``folder/img/NNN.png`` + ``folder/labels.csv`` (path,labels,negatives,split): train rows with one positive
    (the last ones none), one given negative on row 1, plus 2 val and 2 test rows with complete labels."""
    from PIL import Image

    (folder / "img").mkdir(parents=True)
    rng = np.random.default_rng(0)
    lines = ["path,labels,negatives,split"]
    for i in range(n_train + 4):
        Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(folder / "img" / f"{i:03d}.png")
        split = "train" if i < n_train else ("val" if i < n_train + 2 else "test")
        pos = CLASSES[i % 3] if (split != "train" or i < n_train - 2) else ""  # "yak" only outside train
        if split != "train":
            pos = ";".join([CLASSES[i % 4], CLASSES[(i + 1) % 4]])
        lines.append(f"img/{i:03d}.png,{pos},{'yak' if i == 1 else ''},{split}")
    (folder / "labels.csv").write_text("\n".join(lines) + "\n")
    return folder


def fake_run(data: Path, out: Path) -> Path:
    """A run folder on ``data`` (prepared with `wsml prepare csv`) whose val thresholds are all 0.5."""
    prepare("csv", out / "prep", root=str(data), allow_unseen_classes=True)  # "yak": no training positive
    run = out / "run"
    run.mkdir()
    write_config(load_config(None, [f"data.path={out / 'prep'}"]), run / "config.yaml")
    (run / "best.pt").write_bytes(b"")
    stamp = (run / "best.pt").stat().st_mtime_ns
    (run / "thresholds.json").write_text(json.dumps({"class_names": CLASSES, "thresholds": [0.5] * len(CLASSES),
                                                     "best_pt_mtime_ns": stamp}))
    return run


def scorer(paths: list) -> np.ndarray:
    """Deterministic fake model scores: image i scores high for classes i % 4 and (i + 2) % 4."""
    out = np.full((len(paths), len(CLASSES)), 0.1)
    for r, p in enumerate(paths):
        i = int(Path(p).stem)
        out[r, i % 4], out[r, (i + 2) % 4] = 0.9, 0.6
    return out


def pairs(images: list, classes: list, scores: list) -> list:
    """find-missing rows (its CSV columns) for the given (image, class, score) triples, best first."""
    return [{"rank": i + 1, "row": i, "image": im, "class": c, "score": s, "model_score": s, "oof_score": None,
             "an_loss": float(-np.log1p(-s)), "threshold": 0.5, "sources": "model"}
            for i, (im, c, s) in enumerate(zip(images, classes, scores))]
