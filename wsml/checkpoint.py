"""Checkpoints written atomically, RNG states, and small run-folder writers (CSV, JSON).

Every file is written to a temporary name in the same folder and then moved over the target with
``os.replace``, so an interrupted run never leaves a half-written ``last.pt`` behind.
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
import tempfile
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch

PathLike = Union[str, Path]
_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: PathLike, write) -> None:
    """Call ``write(f)`` on a binary file in ``path``'s folder, then move it over ``path`` (fsync'ed first)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give them the usual permissions
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_checkpoint(obj: dict, path: PathLike) -> None:
    """``torch.save`` to ``path`` atomically."""
    atomic_write(path, lambda f: torch.save(obj, f))


def load_checkpoint(path: PathLike, map_location: Any = "cpu") -> dict:
    """Load a checkpoint written by :func:`save_checkpoint`; a clear error when it is missing or corrupt."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # a truncated or foreign file
        raise ValueError(f"checkpoint {path} cannot be read ({type(e).__name__}: {e})") from None


def write_text(path: PathLike, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


def write_json(path: PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def write_csv(path: PathLike, rows: list[dict]) -> None:
    """Rows of dicts as CSV; the header is the union of keys in first-seen order."""
    header: list[str] = []
    for r in rows:
        header += [k for k in r if k not in header]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=header, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: _fmt(v) for k, v in r.items()})
    write_text(path, buf.getvalue())


def _fmt(v: Any) -> Any:
    if isinstance(v, float):
        return repr(v)  # exact round trip
    return v


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, (np.ndarray, torch.Tensor)):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def rng_state() -> dict:
    """The states of every random generator training touches (python, numpy, torch CPU and CUDA)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
