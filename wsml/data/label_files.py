"""Strict readers of a user's label files: the ``labels`` layout (``path,labels[,negatives][,split]``) and the
``wide`` layout (``path[,split],<class 1>,<class 2>,...`` with one 1/0/empty cell per class).

Strict means a slip is an error naming the file and line, never a silent new class or a dropped column:
column names are matched case-insensitively; an unknown column is an error unless listed in
``ignore_columns``; a label token that looks like a slip (``?``, an empty name between separators, a name
containing ``|`` or ``,``) is an error. Training rows without any label are allowed (every entry unknown) and
counted by ``wsml prepare``.
"""

from __future__ import annotations

import csv as csvlib
from pathlib import Path
from typing import Optional, Sequence

from wsml.data._io import need_file
from wsml.data.index import SPLITS

LABEL_COLUMNS = ("path", "labels", "negatives", "split")
FORMATS = ("labels", "wide")
MINUS_ONE = ("error", "unknown", "negative")
_SLIPS = ("?", "|", ",")


class Table:
    """Rows read from a user's files: path, positive and negative class names, split (None = unspecified)."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.pos: list[list[str]] = []
        self.neg: list[list[str]] = []
        self.split: list[Optional[str]] = []
        self.where: list[str] = []  # "file, line N" for error messages
        self.columns: list[str] = []  # class columns of a wide file, in file order

    def add(self, path: str, pos: list[str], neg: list[str], split: Optional[str], where: str) -> None:
        if not path:
            raise ValueError(f"{where}: empty image path")
        both = sorted(set(pos) & set(neg))
        if both:
            raise ValueError(f"{where}: class(es) {both} listed both as label and as negative")
        self.paths.append(path)
        self.pos.append(pos)
        self.neg.append(neg)
        self.split.append(split)
        self.where.append(where)


def class_names_of(field: Optional[str], where: str, column: str) -> list[str]:
    """The ``;``-separated class names of one field; slips (``?``, ``a||b``, ``a,b``, ``;a``) are errors."""
    raw = (field or "").strip()
    if not raw:
        return []
    names = [t.strip() for t in raw.split(";")]
    for t in names:
        if not t:
            raise ValueError(f"{where}: {column} {raw!r} has an empty class name (a stray ';'?)")
        slip = next((ch for ch in _SLIPS if ch in t), None)
        if slip is not None:
            raise ValueError(f"{where}: {column} {raw!r}: class name {t!r} contains {slip!r}; separate classes with "
                             f"';' and leave a field empty when nothing is known")
    return names


def _header(reader: csvlib.DictReader, path: Path, known: Sequence[str], ignore: Sequence[str],
            fmt: str) -> dict[str, str]:
    """{lower-case name: column as written}; unknown columns are errors unless ignored."""
    cols = [(h or "").strip() for h in (reader.fieldnames or [])]
    reader.fieldnames = cols
    lower = [c.lower() for c in cols]
    dup = sorted({c for c in lower if lower.count(c) > 1})
    if dup:
        raise ValueError(f"{path}, line 1: column(s) {dup} appear more than once (names are case-insensitive)")
    ignore = {c.strip().lower() for c in ignore}
    if fmt == "labels":
        unknown = [c for c, lc in zip(cols, lower) if lc not in known and lc not in ignore]
        if unknown:
            raise ValueError(f"{path}, line 1: unknown column(s) {unknown}; the known columns are "
                             f"{list(known)} (list others in ignore_columns=... to skip them)")
    if "path" not in lower or (fmt == "labels" and "labels" not in lower):
        need = "'path' and 'labels'" if fmt == "labels" else "'path' and one column per class"
        raise ValueError(f"{path}, line 1: the header must have the columns {need}, got {cols}")
    return {lc: c for c, lc in zip(cols, lower) if lc not in ignore}


def _split_of(row: dict, col: Optional[str], where: str, only_split: Optional[str]) -> Optional[str]:
    split = None
    if col is not None:
        split = (row[col] or "").strip().lower()
        if split not in SPLITS:
            raise ValueError(f"{where}: split must be one of {list(SPLITS)}, got {row[col]!r}")
    if only_split and split not in (None, only_split):
        raise ValueError(f"{where}: this file holds {only_split} rows only, got split {split!r}")
    return only_split or split


def _wide_cell(value: Optional[str], where: str, column: str, minus_one: str) -> Optional[str]:
    """'pos', 'neg' or None (unknown) for one cell of a wide file."""
    v = (value or "").strip()
    if v in ("", "-1" if minus_one == "unknown" else ""):
        return None
    if v in ("1", "1.0"):
        return "pos"
    if v in ("0", "0.0") or (v == "-1" and minus_one == "negative"):
        return "neg"
    if v == "-1":
        raise ValueError(f"{where}: column {column!r} holds -1, which tools use both for 'absent' and 'unknown': "
                         f"pass minus_one=unknown or minus_one=negative")
    raise ValueError(f"{where}: column {column!r} must be 1 (present), 0 (absent) or empty (unknown), got {v!r}")


def read_label_file(path: Path, table: Table, *, only_split: Optional[str] = None, fmt: str = "labels",
                    ignore_columns: Sequence[str] = (), minus_one: str = "error") -> None:
    """Append the rows of a label file (``fmt`` "labels" or "wide") to ``table``."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {list(FORMATS)}, got {fmt!r}")
    if minus_one not in MINUS_ONE:
        raise ValueError(f"minus_one must be one of {list(MINUS_ONE)}, got {minus_one!r}")
    need_file(path, "labels CSV")
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csvlib.DictReader(f)
        cols = _header(reader, path, LABEL_COLUMNS, ignore_columns, fmt)
        classes = [c for lc, c in cols.items() if lc not in ("path", "split")] if fmt == "wide" else []
        if fmt == "wide":
            if table.columns and table.columns != classes:
                raise ValueError(f"{path}, line 1: class columns {classes} differ from the first file's "
                                 f"{table.columns}")
            table.columns = classes
        for row in reader:
            where = f"{path}, line {reader.line_num}"
            if None in row:
                raise ValueError(f"{where}: more fields than the header has columns")
            split = _split_of(row, cols.get("split"), where, only_split)
            if fmt == "labels":
                pos = class_names_of(row[cols["labels"]], where, "labels")
                neg = class_names_of(row[cols["negatives"]], where, "negatives") if "negatives" in cols else []
            else:
                cells = {c: _wide_cell(row[c], where, c, minus_one) for c in classes}
                pos = [c for c in classes if cells[c] == "pos"]
                neg = [c for c in classes if cells[c] == "neg"]
            table.add((row[cols["path"]] or "").strip(), pos, neg, split, where)
