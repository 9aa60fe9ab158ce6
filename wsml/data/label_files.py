"""Strict readers of a user's label files: the ``labels`` layout (``path,labels[,negatives][,split]``) and the
``wide`` layout (``path[,split],<class 1>,<class 2>,...`` with one 1/0/empty cell per class).

Strict means a slip is an error naming the file and line, never a silent new class or a dropped column:
column names are matched case-insensitively; an unknown column is an error unless listed in
``ignore_columns`` (``score:<class>`` columns, written by ``wsml predict --wide``, are skipped); a label token
that looks like a slip (``?``, an empty name between separators, a name containing ``|`` or ``,``) is an error.
Training rows without any label are allowed (every entry unknown) and counted by ``wsml prepare``.
"""

from __future__ import annotations

import csv as csvlib
from array import array
from pathlib import Path
from typing import Optional, Sequence

from wsml.data._io import need_file
from wsml.data.index import SPLITS
from wsml.labels import NEG, POS

LABEL_COLUMNS = ("path", "labels", "negatives", "split")
FORMATS = ("labels", "wide")
MINUS_ONE = ("error", "unknown", "negative")
_SLIPS = ("?", "|", ",")
SCORE_PREFIX = "score:"  # the score columns of `wsml predict --wide`: a file it wrote is a labels CSV as it is


class Table:
    """Rows read from a user's files, kept compact so that a million rows fit in little memory: image paths, a
    split code per row, and the (row, class name, POS/NEG) label entries as flat arrays over a vocabulary of the
    class names seen. ``pos``/``neg``/``split``/``where`` give the per-row view (built on first use)."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.split_code = array("b")  # index into SPLITS, -1 = unspecified
        self.files: list[str] = []  # label files read, for "file, line N" in error messages
        self.file_of = array("l")
        self.line_of = array("l")
        self.entry_row = array("l")  # label entries in file order: row, vocabulary id, POS or NEG
        self.entry_name = array("l")
        self.entry_value = array("b")
        self.vocab: dict[str, int] = {}  # class name -> vocabulary id, in order of first appearance
        self.columns: list[str] = []  # class columns of a wide file, in file order
        self._pos: Optional[list[list[str]]] = None
        self._neg: Optional[list[list[str]]] = None

    def __len__(self) -> int:
        return len(self.paths)

    def add(self, path: str, pos: list[str], neg: list[str], split: Optional[str], where: str) -> None:
        """Append one row; ``where`` is "file, line N" (files are numbered as first seen)."""
        if not path:
            raise ValueError(f"{where}: empty image path")
        if neg:
            both = sorted(set(pos) & set(neg))
            if both:
                raise ValueError(f"{where}: class(es) {both} listed both as label and as negative")
        file, sep, line = where.rpartition(", line ")
        if not sep or not line.isdigit():  # not "file, line N" (e.g. an image file of a folder tree): kept as is
            file, line = where, "0"
        if not self.files or self.files[-1] != file:
            self.files.append(file)
        row = len(self.paths)
        self.paths.append(path)
        self.split_code.append(SPLITS.index(split) if split else -1)
        self.file_of.append(len(self.files) - 1)
        self.line_of.append(int(line))
        for names, value in ((pos, POS), (neg, NEG)):
            for n in names:
                self.add_label(row, n, value)

    def add_label(self, row: int, name: str, value: int = POS) -> None:
        """One more label entry (POS or NEG) of an existing row."""
        self.entry_row.append(row)
        self.entry_name.append(self.vocab.setdefault(name, len(self.vocab)))
        self.entry_value.append(value)
        self._pos = self._neg = None

    def where_of(self, row: int) -> str:
        """"file, line N" of a row (or the text given for it), for error messages."""
        line = self.line_of[row]
        return f"{self.files[self.file_of[row]]}, line {line}" if line else self.files[self.file_of[row]]

    @property
    def names(self) -> list[str]:
        """The class names seen, by vocabulary id."""
        return list(self.vocab)

    @property
    def split(self) -> list[Optional[str]]:
        return [SPLITS[c] if c >= 0 else None for c in self.split_code]

    @property
    def where(self) -> list[str]:
        return [self.where_of(r) for r in range(len(self.paths))]

    def _rows_of(self, value: int) -> list[list[str]]:
        out: list[list[str]] = [[] for _ in self.paths]
        names = self.names
        for r, n, v in zip(self.entry_row, self.entry_name, self.entry_value):
            if v == value:
                out[r].append(names[n])
        return out

    @property
    def pos(self) -> list[list[str]]:
        """Positive class names per row, in file order (the per-row view ``wsml review`` reads)."""
        if self._pos is None or len(self._pos) != len(self.paths):
            self._pos = self._rows_of(POS)
        return self._pos

    @property
    def neg(self) -> list[list[str]]:
        if self._neg is None or len(self._neg) != len(self.paths):
            self._neg = self._rows_of(NEG)
        return self._neg


def class_names_of(field: Optional[str], where: str, column: str) -> list[str]:
    """The ``;``-separated class names of one field; slips (``?``, ``a||b``, ``a,b``, ``;a``) are errors."""
    raw = (field or "").strip()
    if not raw:
        return []
    names = [t.strip() for t in raw.split(";")]
    if "" not in names and "?" not in raw and "|" not in raw and "," not in raw:
        return names  # the common case, checked at once (a million rows are read in seconds)
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
    ignore = {c.strip().lower() for c in ignore} | {c for c in lower if c.startswith(SCORE_PREFIX)}
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
            got = "no split field (fewer fields than the header)" if row[col] is None else repr(row[col])
            raise ValueError(f"{where}: split must be one of {list(SPLITS)}, got {got}")
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
        end = reader.line_num
        for row in reader:
            start, end = end + 1, reader.line_num
            where = f"{path}, line {end}"
            if None in row:
                raise ValueError(f"{where}: more fields than the header has columns")
            if end > start and any("\n" in v or "\r" in v for v in row.values() if v):
                raise ValueError(f"{path}, line {start}: a quoted field runs on to line {end} (a '\"' not closed?)")
            split = _split_of(row, cols.get("split"), where, only_split)
            if fmt == "labels":
                pos = class_names_of(row[cols["labels"]], where, "labels")
                neg = class_names_of(row[cols["negatives"]], where, "negatives") if "negatives" in cols else []
            else:
                cells = {c: _wide_cell(row[c], where, c, minus_one) for c in classes}
                pos = [c for c in classes if cells[c] == "pos"]
                neg = [c for c in classes if cells[c] == "neg"]
            table.add((row[cols["path"]] or "").strip(), pos, neg, split, where)
