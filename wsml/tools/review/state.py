"""The items under review and the reviewer's decisions, kept in ``RUN/review/`` and saved as they are made.

Files (all written atomically, so a closed tab or a stopped server never loses a decision):

* ``source.json``            the labels CSV under review, the image root, class names, the run's val thresholds
* ``val.json``               ``--val``: the drawn images with their observed labels and the model's scores
* ``val-decisions.json``     ``{image: {"labels": [...], "done": bool}}`` - the complete label set of each image
* ``missing.csv``            ``--missing``: find-missing's ranked (image, class) pairs (its CSV columns)
* ``missing.json``           how the pairs were made (``k``, ``folds``)
* ``missing-decisions.json`` ``{"accept": [[image, class], ...], "reject": [...]}``

Paging works on arrays, so 100 000 suggestions page in milliseconds.
"""

from __future__ import annotations

import csv
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np

from wsml._types import PathLike
from wsml.checkpoint import write_json

REVIEW_DIR = "review"
STATUSES = {"val": ("all", "todo", "done"), "missing": ("all", "todo", "accepted", "rejected")}
_CODE = {"accept": 1, "reject": -1, None: 0}


@dataclass
class Source:
    """What a review is about: the user's labels CSV (never written), its image root, classes, thresholds."""

    csv: str
    image_root: str
    class_names: list
    thresholds: list
    model: str = ""

    def save(self, folder: Path) -> None:
        write_json(folder / "source.json", asdict(self))

    @classmethod
    def load(cls, folder: Path) -> Source:
        return cls(**read_json(folder / "source.json"))


def read_json(path: Path) -> dict:
    """A JSON file of the review folder; a clear error when it is missing or damaged."""
    from wsml.runs import read_json as read_run_json

    return read_run_json(path, "start the review with `wsml review RUN --val` or `--missing`")


def _page(ids: np.ndarray, offset: int, limit: int) -> tuple[int, np.ndarray]:
    if offset < 0 or limit < 1:
        raise ValueError(f"offset must be >= 0 and limit >= 1, got offset={offset}, limit={limit}")
    return len(ids), ids[offset:offset + min(limit, 1000)]


def _status(mode: str, status: str) -> str:
    if status not in STATUSES[mode]:
        raise ValueError(f"status must be one of {', '.join(STATUSES[mode])}, got {status!r}")
    return status


class ValReview:
    """``--val``: complete the label set of N drawn images; each is pre-filled from the model's scores."""

    mode = "val"

    def __init__(self, folder: PathLike, source: Source, items: list[dict], decisions: Optional[dict] = None,
                 meta: Optional[dict] = None) -> None:
        self.folder, self.source, self.items = Path(folder), source, items
        self.decisions = dict(decisions or {})
        self.meta = dict(meta or {})
        self.by_image = {it["image"]: i for i, it in enumerate(items)}

    @classmethod
    def create(cls, folder: PathLike, source: Source, items: list[dict], **meta) -> ValReview:
        """A new review of ``items`` (dicts: image, observed, negatives, scores [C]); written to ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        source.save(folder)
        write_json(folder / "val.json", {**meta, "items": items})
        return cls(folder, source, items, meta=meta)

    @classmethod
    def load(cls, folder: PathLike) -> ValReview:
        folder = Path(folder)
        data = read_json(folder / "val.json")
        path = folder / "val-decisions.json"
        decisions = read_json(path) if path.is_file() else {}
        items = data.pop("items")
        return cls(folder, Source.load(folder), items, decisions, meta=data)

    def images(self) -> set:
        return set(self.by_image)

    def prefill(self, item: dict) -> list[str]:
        """The observed positives plus every class whose score reaches its val threshold, minus known negatives."""
        names, thr = self.source.class_names, self.source.thresholds
        on = set(item["observed"]) | {n for n, s, t in zip(names, item["scores"], thr) if s >= t}
        return [n for n in names if n in on and n not in item["negatives"]]

    def view(self, i: int) -> dict:
        """One image for the page: its classes sorted by score, with the current toggle state."""
        item, names = self.items[i], self.source.class_names
        dec = self.decisions.get(item["image"])
        on = set(dec["labels"] if dec else self.prefill(item))
        order = np.argsort(-np.asarray(item["scores"]), kind="stable")
        classes = [{"name": names[c], "score": float(item["scores"][c]), "threshold": float(self.source.thresholds[c]),
                    "on": names[c] in on, "given": names[c] in item["observed"],
                    "negative": names[c] in item["negatives"]} for c in order]
        return {"id": i, "image": item["image"], "done": bool(dec and dec["done"]), "classes": classes}

    def page(self, offset: int = 0, limit: int = 50, status: str = "all", cls: str = "") -> dict:
        status = _status(self.mode, status)
        done = np.array([bool(self.decisions.get(it["image"], {}).get("done")) for it in self.items], dtype=bool)
        keep = {"all": np.ones_like(done), "todo": ~done, "done": done}[status]
        total, ids = _page(np.flatnonzero(keep), offset, limit)
        return {"total": total, "offset": offset, "items": [self.view(int(i)) for i in ids]}

    def decide(self, id: int, labels: list, done: bool = True) -> dict:
        """Set the complete label set of item ``id`` (``done``: reviewed) and save at once."""
        if not 0 <= int(id) < len(self.items):
            raise ValueError(f"no item {id} (the review has {len(self.items)})")
        unknown = [n for n in labels if n not in self.source.class_names]
        if unknown:
            raise ValueError(f"unknown class {unknown[0]!r}")
        wanted = set(labels)
        self.decisions[self.items[int(id)]["image"]] = {
            "labels": [n for n in self.source.class_names if n in wanted], "done": bool(done)}
        write_json(self.folder / "val-decisions.json", self.decisions)
        return self.counts()

    def completed(self) -> dict:
        """{image: complete label list} of the items marked done."""
        return {img: d["labels"] for img, d in self.decisions.items() if d.get("done")}

    def counts(self) -> dict:
        return {"items": len(self.items), "done": len(self.completed())}


class MissingReview:
    """``--missing``: accept or reject find-missing's ranked (image, class) pairs."""

    mode = "missing"

    def __init__(self, folder: PathLike, source: Source, images: list, classes: np.ndarray, scores: np.ndarray,
                 known: dict, decisions: Optional[dict] = None, meta: Optional[dict] = None) -> None:
        self.folder, self.source, self.meta = Path(folder), source, dict(meta or {})
        self.images_, self.classes, self.scores = list(images), np.asarray(classes, np.int64), np.asarray(scores)
        self.known = known  # image -> (positives, negatives) from the labels CSV
        self.state = np.zeros(len(self.images_), dtype=np.int8)  # 1 accepted, -1 rejected, 0 undecided
        col = {n: j for j, n in enumerate(source.class_names)}
        where = {(img, int(c)): i for i, (img, c) in enumerate(zip(self.images_, self.classes))}
        for name, code in (("accept", 1), ("reject", -1)):
            for img, cls in (decisions or {}).get(name, []):
                i = where.get((img, col.get(cls, -1)))
                if i is not None:
                    self.state[i] = code

    @classmethod
    def create(cls, folder: PathLike, source: Source, pairs: list[dict], known: dict, **meta) -> MissingReview:
        """A new review of find-missing's ``pairs`` (dicts with image, class, score, ...), best first."""
        from wsml.tools.find_missing import write_missing

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        source.save(folder)
        tmp = folder / ".missing.csv.tmp"
        os.replace(write_missing(tmp, pairs), folder / "missing.csv")  # a complete file or none
        write_json(folder / "missing.json", meta)
        return cls.load(folder, known)

    @classmethod
    def load(cls, folder: PathLike, known: Optional[dict] = None) -> MissingReview:
        from wsml.tools.review.export import known_labels

        folder = Path(folder)
        source = Source.load(folder)
        col = {n: j for j, n in enumerate(source.class_names)}
        images, classes, scores = [], [], []
        with open(folder / "missing.csv", newline="", encoding="utf-8") as f:
            for line, row in enumerate(csv.DictReader(f), start=2):
                if row.get("class") not in col:
                    raise ValueError(f"{folder / 'missing.csv'}, line {line}: unknown class {row.get('class')!r}")
                images.append(row["image"])
                classes.append(col[row["class"]])
                scores.append(float(row["score"]))
        path = folder / "missing-decisions.json"
        decisions = read_json(path) if path.is_file() else {}
        meta = read_json(folder / "missing.json") if (folder / "missing.json").is_file() else {}
        known = known if known is not None else known_labels(source.csv)
        return cls(folder, source, images, np.asarray(classes, np.int64), np.asarray(scores, np.float64), known,
                   decisions, meta)

    def images(self) -> set:
        return set(self.images_)

    def page(self, offset: int = 0, limit: int = 50, status: str = "all", cls: str = "") -> dict:
        """Pairs ``offset .. offset+limit`` (best first) among those with the given status and class."""
        keep = {"all": np.ones(len(self.state), bool), "todo": self.state == 0, "accepted": self.state == 1,
                "rejected": self.state == -1}[_status(self.mode, status)]
        if cls:
            if cls not in self.source.class_names:
                raise ValueError(f"unknown class {cls!r}")
            keep = keep & (self.classes == self.source.class_names.index(cls))
        total, ids = _page(np.flatnonzero(keep), offset, limit)
        names = self.source.class_names
        items = []
        for i in ids.tolist():
            pos, neg = self.known.get(self.images_[i], ([], []))
            items.append({"id": i, "rank": i + 1, "image": self.images_[i], "class": names[self.classes[i]],
                          "score": float(self.scores[i]), "labels": pos, "negatives": neg,
                          "decision": {1: "accept", -1: "reject", 0: None}[int(self.state[i])]})
        return {"total": total, "offset": offset, "items": items}

    def decide(self, id: int, decision: Optional[str]) -> dict:
        """Accept, reject (or with None undo) pair ``id`` and save at once."""
        if decision not in _CODE:
            raise ValueError(f"decision must be 'accept', 'reject' or null, got {decision!r}")
        if not 0 <= int(id) < len(self.state):
            raise ValueError(f"no suggestion {id} (the review has {len(self.state)})")
        self.state[int(id)] = _CODE[decision]
        write_json(self.folder / "missing-decisions.json", self.decided())
        return self.counts()

    def decided(self) -> dict:
        """{"accept": [[image, class], ...], "reject": [...]} in rank order."""
        names = self.source.class_names
        return {name: [[self.images_[i], names[self.classes[i]]] for i in np.flatnonzero(self.state == code).tolist()]
                for name, code in (("accept", 1), ("reject", -1))}

    def counts(self) -> dict:
        return {"items": len(self.state), "accepted": int((self.state == 1).sum()),
                "rejected": int((self.state == -1).sum())}


def load_review(folder: PathLike, mode: str) -> Union[ValReview, MissingReview]:
    """The review of ``mode`` ("val" or "missing") saved in ``folder`` (``RUN/review``)."""
    if mode not in STATUSES:
        raise ValueError(f"mode must be 'val' or 'missing', got {mode!r}")
    return ValReview.load(folder) if mode == "val" else MissingReview.load(folder)
