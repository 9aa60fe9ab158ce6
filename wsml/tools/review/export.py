"""Export a review: a new labels CSV next to the user's (the original is never written) and Label Studio tasks.

The CSV has the columns ``path,labels,negatives,split`` that ``wsml prepare csv`` reads, one row per row of
the original, in its order:

* images completed with ``--val`` become ``split=val`` rows whose ``labels`` are their complete label set;
* pairs accepted with ``--missing`` are added to the image's ``labels``, rejected ones to its ``negatives``
  (known negatives: the losses never treat them as unobserved); a val-completed image ignores them (its
  label set is complete already);
* every other row keeps its labels; a row without a split becomes ``split=train``.

The Label Studio file is a list of tasks in its import format: ``data.image`` is a local-files URL
(``/data/local-files/?d=<path>``: serve the image root with ``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT``),
``predictions`` holds the model's suggestions as a multiple-choice pre-annotation (``score``: the highest
suggested score), the per-class scores are in ``data.scores``, and images completed with ``--val`` carry their
label set as an ``annotation``. ``*.labelstudio.xml`` is the matching labeling config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence
from urllib.parse import quote
from xml.sax.saxutils import quoteattr

from wsml._types import PathLike
from wsml.checkpoint import write_json, write_text


def read_table(csv_path: PathLike):
    """The user's labels CSV as read by ``wsml prepare csv`` (same rules, same errors)."""
    from wsml.data.label_files import Table, read_label_file

    table = Table()
    read_label_file(Path(csv_path), table)
    return table


def known_labels(csv_path: PathLike) -> dict:
    """{image path: (positives, negatives)} of the labels CSV."""
    t = read_table(csv_path)
    return {p: (pos, neg) for p, pos, neg in zip(t.paths, t.pos, t.neg)}


def default_out(csv_path: PathLike) -> Path:
    """``labels.csv`` -> ``labels-reviewed.csv`` in the same folder (image paths stay valid)."""
    p = Path(csv_path)
    return p.with_name(f"{p.stem}-reviewed.csv")


def reviewed_rows(table, class_names: list, val: dict, accept: dict, reject: dict) -> tuple[list, dict]:
    """(rows (path, labels, negatives, split), counts) after applying the decisions to ``table``.

    ``val``: {image: complete label list}; ``accept`` / ``reject``: {image: set of class names}.
    """
    order = {n: i for i, n in enumerate(class_names)}
    rows, n = [], {"rows": 0, "val_rows": 0, "accepted": 0, "rejected": 0, "ignored": 0}
    for path, pos, neg, split in zip(table.paths, table.pos, table.neg, table.split):
        if path in val:
            pos, neg, split = list(val[path]), [], "val"
            n["val_rows"] += 1
            n["ignored"] += len(accept.get(path, ())) + len(reject.get(path, ()))
        elif path in accept or path in reject:
            add, drop = accept.get(path, set()), reject.get(path, set())
            n["accepted"] += len(add - set(pos))
            n["rejected"] += len(drop - set(neg))
            pos = sorted((set(pos) | add) - drop, key=lambda c: order.get(c, len(order)))
            neg = sorted((set(neg) | drop) - add, key=lambda c: order.get(c, len(order)))
        rows.append((path, ";".join(pos), ";".join(neg), split or "train"))
    n["rows"] = len(rows)
    missing = sorted((set(val) | set(accept) | set(reject)) - set(table.paths))
    if missing:
        raise ValueError(f"reviewed image {missing[0]!r} is not in the labels CSV any more (delete the run's "
                         f"review/ folder to start over)")
    return rows, n


def write_labels_csv(path: PathLike, rows: list) -> Path:
    """``path,labels,negatives,split`` rows, written atomically."""
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(("path", "labels", "negatives", "split"))
    w.writerows(rows)
    write_text(path, buf.getvalue())
    return Path(path)


def label_config(class_names: list) -> str:
    """The Label Studio labeling config matching the exported tasks (image + multiple choice)."""
    choices = "\n".join(f"    <Choice value={quoteattr(n)}/>" for n in class_names)
    return ('<View>\n  <Image name="image" value="$image"/>\n'
            '  <Choices name="labels" toName="image" choice="multiple" showInLine="true">\n'
            f"{choices}\n  </Choices>\n</View>\n")


def _choices(labels: list, rid: str) -> dict:
    return {"id": rid, "from_name": "labels", "to_name": "image", "type": "choices", "value": {"choices": labels}}


def label_studio_task(image: str, suggested: dict, known: list, model: str, complete: Optional[list] = None) -> dict:
    """One task: ``suggested`` {class: score} (the model's pre-annotation, with the ``known`` positives),
    ``complete``: the reviewed complete label set (an annotation) or None."""
    labels = list(dict.fromkeys(list(known) + list(suggested)))
    task = {"data": {"image": "/data/local-files/?d=" + quote(image), "path": image,
                     "scores": {c: round(float(s), 6) for c, s in suggested.items()}},
            "predictions": [{"model_version": model, "score": round(max(suggested.values(), default=0.0), 6),
                             "result": [_choices(labels, "wsml-pred")] if labels else []}]}
    if complete is not None:
        task["annotations"] = [{"result": [_choices(list(complete), "wsml-ann")] if complete else []}]
    return task


def _reviews(folder: Path, modes: Sequence[str]) -> list:
    from wsml.tools.review.state import MissingReview, ValReview

    out = []
    if "val" in modes and (folder / "val.json").is_file():
        out.append(ValReview.load(folder))
    if "missing" in modes and (folder / "missing.csv").is_file():
        out.append(MissingReview.load(folder))
    if not out:
        raise FileNotFoundError(f"{folder}: no review to export (start one with `wsml review RUN --val` or --missing)")
    return out


def export_review(folder: PathLike, out: Optional[PathLike] = None, modes: Sequence[str] = ("val", "missing")) -> dict:
    """Write the reviewed labels CSV (default ``<csv>-reviewed.csv``), ``<out>.labelstudio.json`` and
    ``<out>.labelstudio.xml`` from the reviews (of ``modes``) saved in ``folder`` (``RUN/review``): both
    reviews of a run go into one CSV. Returns the paths and counts."""
    folder = Path(folder)
    reviews = _reviews(folder, modes)
    source = reviews[0].source
    csv_path = Path(source.csv)
    out = Path(out) if out else default_out(csv_path)
    if out.resolve() == csv_path.resolve():
        raise ValueError(f"{out}: the export never overwrites the labels CSV under review; choose another name")
    table = read_table(csv_path)
    names = source.class_names
    val, accept, reject, tasks = {}, {}, {}, {}
    for r in reviews:
        if r.mode == "val":
            val = r.completed()
            for item in r.items:
                scores = dict(zip(names, item["scores"]))
                task = label_studio_task(item["image"], {c: scores[c] for c in r.prefill(item)}, item["observed"],
                                         source.model, val.get(item["image"]))
                task["data"]["scores"] = {c: round(float(s), 6) for c, s in scores.items()}  # every class
                tasks[item["image"]] = task
        else:
            dec = r.decided()
            for key, pairs in (("accept", accept), ("reject", reject)):
                for img, cls in dec[key]:
                    pairs.setdefault(img, set()).add(cls)
            sugg: dict = {}
            for i in range(len(r.images_)):  # every image under review; its rejected pairs are not suggested
                s = sugg.setdefault(r.images_[i], {})
                if r.state[i] != -1:
                    s[names[r.classes[i]]] = float(r.scores[i])
            for img, s in sugg.items():
                if img not in tasks:
                    tasks[img] = label_studio_task(img, s, r.known.get(img, ([], []))[0], source.model)
    rows, counts = reviewed_rows(table, names, val, accept, reject)
    write_labels_csv(out, rows)
    ls_json, ls_xml = out.with_suffix(".labelstudio.json"), out.with_suffix(".labelstudio.xml")
    write_json(ls_json, list(tasks.values()))
    write_text(ls_xml, label_config(names))
    return {"csv": str(out), "labelstudio": str(ls_json), "labelstudio_config": str(ls_xml),
            "image_root": source.image_root, "tasks": len(tasks), **counts}
