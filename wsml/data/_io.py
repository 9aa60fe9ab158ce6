"""Small readers shared by the data set adapters: file checks, line parsing, image checks.

Every error names the file (and line) it comes from, so a corrupt download is found at ``wsml prepare``
time instead of as a traceback in the middle of training.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np

from wsml._types import PathLike

MISSING_POLICIES = ("error", "drop", "ignore")
DEFAULT_MAX_PIXELS = 64_000_000  # data.max_pixels: untrusted files larger than this are refused before decoding
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def require_root(root: Optional[PathLike], name: str) -> Path:
    """``root`` as an absolute existing directory, or a clear error saying what the adapter expects."""
    if root is None or str(root) == "":
        raise ValueError(f"{name}: a root folder is required (--root on the command line; data.root in a config)")
    path = Path(root).expanduser().resolve()
    if not path.is_dir():
        raise FileNotFoundError(f"{name}: root folder {path} does not exist")
    return path


def locate(root: Path, candidates: Sequence[str], marker: str, name: str) -> Path:
    """The first ``root/<candidate>`` that contains ``marker`` (accepts several nesting levels of a download)."""
    for c in candidates:
        base = root / c if c else root
        if (base / marker).exists():
            return base
    tried = ", ".join(str((root / c) / marker if c else root / marker) for c in candidates)
    raise FileNotFoundError(f"{name}: cannot find the data set under {root} (looked for {tried})")


def need_file(path: Path, what: str = "") -> Path:
    """``path`` when it is a file; otherwise FileNotFoundError naming it (and ``what`` it should hold)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found" + (f" ({what})" if what else ""))
    return path


def read_lines(path: Path, what: str = "") -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, stripped_line)`` for the non-blank lines of a text file (1-based numbers)."""
    need_file(path, what)
    with open(path, encoding="utf-8-sig", errors="strict", newline=None) as f:
        try:
            for i, line in enumerate(f, start=1):
                s = line.strip()
                if s:
                    yield i, s
        except UnicodeDecodeError as e:
            raise ValueError(f"{path}: not valid UTF-8 text ({e})") from None


def read_names(path: Path, what: str) -> list[str]:
    """The non-blank lines of a text file, stripped (class lists: one name per line, in file order)."""
    return [s for _, s in read_lines(path, what)]


def to_int(token: str, path: Path, line: int, what: str, allowed: Optional[Sequence[int]] = None) -> int:
    """Parse one integer field; the error names file, line and the bad value."""
    try:
        v = int(token)
    except ValueError:
        raise ValueError(f"{path}, line {line}: {what} must be an integer, got {token!r}") from None
    if allowed is not None and v not in allowed:
        raise ValueError(f"{path}, line {line}: {what} must be one of {list(allowed)}, got {v}")
    return v


def read_id_table(path: Path, what: str, min_fields: int = 2) -> list[tuple[int, list[str]]]:
    """Lines of whitespace-separated fields with at least ``min_fields`` fields: ``(line, fields)``."""
    rows = []
    for i, s in read_lines(path, what):
        fields = s.split()
        if len(fields) < min_fields:
            raise ValueError(f"{path}, line {i}: expected at least {min_fields} fields ({what}), got {s!r}")
        rows.append((i, fields))
    return rows


def check_policy(policy: str) -> str:
    if policy not in MISSING_POLICIES:
        raise ValueError(f"missing_images must be one of {MISSING_POLICIES}, got {policy!r}")
    return policy


def check_images(image_root: Path, paths: Sequence[str], policy: str, name: str) -> np.ndarray:
    """Boolean mask of the samples to keep after checking the image files exist under ``image_root``.

    ``policy``: ``"error"`` raises naming the first missing files, ``"drop"`` drops missing samples,
    ``"ignore"`` skips the check (e.g. labels are prepared before the images are downloaded).
    """
    check_policy(policy)
    keep = np.ones(len(paths), dtype=bool)
    if policy == "ignore":
        return keep
    base = str(image_root)
    for i, p in enumerate(paths):
        keep[i] = os.path.isfile(os.path.join(base, p))
    if policy == "drop" and len(paths) and not keep.any():
        raise FileNotFoundError(f"{name}: none of the {len(paths)} images exists under {image_root}, e.g. {paths[0]}")
    if policy == "error" and not keep.all():
        missing = [paths[i] for i in np.nonzero(~keep)[0][:3]]
        raise FileNotFoundError(
            f"{name}: {int((~keep).sum())} of {len(paths)} images are missing under {image_root}, e.g. "
            f"{', '.join(missing)} (pass missing_images='drop' to drop them or 'ignore' to skip this check)"
        )
    return keep


def rows_from_positives(positives: Sequence[Sequence[int]], num_classes: int) -> np.ndarray:
    """A ``{0,1}`` uint8 matrix with a 1 at every listed (row, class)."""
    full = np.zeros((len(positives), num_classes), dtype=np.uint8)
    for r, cls in enumerate(positives):
        full[r, list(cls)] = 1
    return full


def boxes_array(rows: list) -> np.ndarray:
    """Box rows ``(sample, class, x0, y0, x1, y1)`` as the float32 ``[M, 6]`` array of ``Split.boxes``."""
    return np.asarray(rows, dtype=np.float32).reshape(-1, 6)


PROTOCOL_TYPES = {"num_pos": "int", "num_neg": "int", "seed": "int", "val_frac": "float", "train_frac": "float",
                  "train_frac_seed": "int"}
PROTOCOL_OPTIONS = tuple(PROTOCOL_TYPES)
_KINDS = {"int": "an integer", "float": "a number", "bool": "true or false"}


def typed_option(name: str, key: str, value: Any, kind: str) -> Any:
    """Option ``key`` of adapter ``name`` as ``kind`` ("int", "float", "bool", or "Optional[...]" of one): ``1e6``
    (YAML reads it as text) becomes a number; anything else (``num_pos=abc``) is a ValueError naming the option,
    so a slip never reaches the protocol as text."""
    if kind.startswith("Optional[") and value is None:
        return None
    kind = kind.removeprefix("Optional[").removesuffix("]")
    number = value if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            number = None
    if kind == "bool" and isinstance(value, bool):
        return value
    if kind == "float" and number is not None:
        return float(number) if isinstance(value, str) else number
    if kind == "int" and number is not None and float(number).is_integer():
        return int(number)
    raise ValueError(f"{name}: option {key} must be {_KINDS[kind]}, got {value!r}")


def typed_options(name: str, fn: Callable, options: dict) -> dict:
    """``options`` for adapter function ``fn``, each int, float or bool one checked against ``fn``'s signature (the
    reference-protocol options against :data:`PROTOCOL_TYPES` when ``fn`` passes them on); others as given. An
    option ``fn`` does not take is an error here (``**options`` adapters check theirs in :func:`protocol_options`)."""
    params = inspect.signature(fn).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):  # else: protocol_options checks
        unknown = sorted(set(options) - set(params) - {"root"})
        if unknown:
            raise ValueError(f"{name}: unknown option(s) {unknown}; its options are "
                             f"{[n for n in params if n != 'root']}")
    out = {}
    for key, value in options.items():
        kind = str(params[key].annotation) if key in params else PROTOCOL_TYPES.get(key, "")
        base = kind.removeprefix("Optional[").removesuffix("]")
        out[key] = typed_option(name, key, value, kind) if base in _KINDS else value
    return out


def protocol_options(name: str, options: dict) -> dict:
    """The reference-protocol options (``num_pos``, ``seed``, ...) passed to an adapter; anything else is an error."""
    unknown = sorted(set(options) - set(PROTOCOL_OPTIONS))
    if unknown:
        raise ValueError(f"{name}: unknown option(s) {unknown}; protocol options are {list(PROTOCOL_OPTIONS)}")
    return dict(options)
