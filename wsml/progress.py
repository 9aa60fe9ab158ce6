"""Visible progress: a tqdm bar on a terminal, and a periodic plain line with an ETA when output goes to a file
or a pipe (CI logs, ``nohup``, notebooks), so a long epoch or feature extraction never looks like a hang."""

from __future__ import annotations

import sys
import time
from typing import Iterable, Iterator, Optional

EVERY_S = 30.0  # seconds between plain progress lines when stderr is not a terminal


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def progress(items: Iterable, desc: str, enabled: bool = True, total: Optional[int] = None,
             every_s: float = EVERY_S, unit: str = "batches") -> Iterator:
    """Iterate ``items`` showing progress on stderr: a bar on a terminal, else ``desc: i/n, elapsed, ETA`` lines."""
    if not enabled:
        yield from items
        return
    if sys.stderr.isatty():
        from tqdm.auto import tqdm

        yield from tqdm(items, desc=desc, total=total, leave=False, dynamic_ncols=True)
        return
    n = total if total is not None else (len(items) if hasattr(items, "__len__") else None)
    start = last = time.time()
    for i, item in enumerate(items, start=1):
        yield item
        now = time.time()
        if now - last >= every_s:
            last = now
            eta = f", ETA {_clock((now - start) / i * (n - i))}" if n else ""
            print(f"{desc}: {i}/{n or '?'} {unit}, {_clock(now - start)} elapsed{eta}", file=sys.stderr, flush=True)


def run_folder_line(run_dir, requested: str) -> str:
    """``run folder: PATH`` and, when the requested name was taken, which one and how to reuse it."""
    from pathlib import Path

    run_dir = Path(run_dir)
    if run_dir.name != requested:
        return (f"run folder: {run_dir} ({run_dir.with_name(requested)} exists already; run.name=... picks another "
                f"name, run.overwrite=true reuses it)")
    return f"run folder: {run_dir}"
