"""Checkpoints written atomically, RNG states, and small run-folder writers (CSV, JSON).

Every file is written to a temporary name in the same folder and then moved over the target with
``os.replace``, so an interrupted run never leaves a half-written ``last.pt`` behind.

Checkpoints hold only tensors and plain Python values (dicts, lists, numbers, strings; the RNG states too),
so they are read with ``torch.load(weights_only=True)``: a crafted ``.pt`` file cannot run code, and a
foreign or damaged one is refused with one line naming it.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wsml._types import PathLike, json_default

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
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError) and str(path) not in str(e):  # a full disk, a quota, `ulimit -f`: name the file
            what = "no space left on device" if e.errno in (errno.ENOSPC, errno.EDQUOT) else (e.strerror or str(e))
            message = f"{what[:1].lower()}{what[1:]} while writing {path}"
            raise (OSError(e.errno, message) if e.errno is not None else OSError(message)) from None
        raise


def remove_stale_temporaries(folder: PathLike) -> list[Path]:
    """Delete the ``.<name>.*.tmp`` files a killed :func:`atomic_write` left in ``folder``; return them."""
    folder = Path(folder)
    stale = sorted(folder.glob(".*.tmp")) if folder.is_dir() else []
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def save_checkpoint(obj: dict, path: PathLike) -> None:
    """``torch.save`` to ``path`` atomically."""
    atomic_write(path, lambda f: torch.save(obj, f))


def load_checkpoint(path: PathLike, map_location: Any = "cpu", required: tuple = ("model",)) -> dict:
    """Load a checkpoint written by :func:`save_checkpoint` without running code (``weights_only=True``).

    A missing, damaged, unsafe or foreign file (not a dict holding the ``required`` keys) is a one-line
    error naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # pickle with code or foreign objects, a truncated file, not a torch file at all
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ValueError(f"checkpoint {path} cannot be read safely; it is damaged, or not a checkpoint of this "
                         f"wsml version ({type(e).__name__}: {reason[:200]})") from None
    missing = [k for k in required if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise ValueError(f"checkpoint {path} is not a wsml checkpoint (no {', '.join(map(repr, missing))})")
    return ckpt


def load_module_state(module: Any, state: Any, path: PathLike, what: str) -> None:
    """``module.load_state_dict(state)``; a mismatch (other architecture, class count, optimizer) is one line."""
    try:
        module.load_state_dict(state)
    except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as e:
        reason = " ".join(str(e).split())
        raise ValueError(f"checkpoint {path}: its {what} state does not fit this run ({reason[:300]})") from None


def write_text(path: PathLike, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


def write_json(path: PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, default=json_default) + "\n")


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


def rng_state() -> dict:
    """The states of every random generator training touches (python, numpy, torch CPU and CUDA),
    as tensors and plain values (numpy's key as a list), so that checkpoints load with ``weights_only``."""
    name, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    state = {"python": random.getstate(), "numpy": [str(name), keys.tolist(), int(pos), int(has_gauss), float(gauss)],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """The seed of one epoch on one rank, ``seed·1000003 + epoch·7919 + rank``: the one per-epoch seed formula.

    The training loop seeds the global generators (dropout, ...) with it and :func:`wsml.train.builders.start_epoch`
    the loader's workers and flips (offset by 17 for the in-process flips), so that an epoch's randomness is a
    function of (seed, epoch, rank) alone and a resumed run repeats an uninterrupted one. (The sampler's order
    is ``DistributedSampler.set_epoch``'s own ``seed + epoch``.)
    """
    return seed * 1_000_003 + epoch * 7919 + rank


def seed_everything(seed: int) -> None:
    """Seed python's, numpy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
