"""Opening every image of a user's data set at ``wsml prepare`` time, so that bad files are found before training.

Each file is checked for existence, for its pixel count against ``max_pixels`` (read from the header, before
decoding: decompression bombs) and for a full decode. ``on_bad_image`` says what happens to bad files:

* ``error`` (default): stop, listing the bad files with counts per reason and how to drop them;
* ``drop``: leave their rows out of the prepared data set, listing them (also in the manifest);
* ``ignore``: no check at all (e.g. labels are prepared before the images are copied).
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

BAD_IMAGE_POLICIES = ("error", "drop", "ignore")


def image_problem(path: str, max_pixels: Optional[int]) -> Optional[str]:
    """None when ``path`` decodes and is within ``max_pixels``; otherwise a short reason."""
    from wsml.data.loading import open_image

    if not os.path.isfile(path):
        return "missing"
    try:
        with open_image(path, max_pixels) as im:
            im.load()
    except ValueError as e:
        if "megapixels" in str(e):
            return "too many pixels"
        return "cannot decode"
    except Exception:  # noqa: BLE001 - any decoder failure (OSError, SyntaxError, DecompressionBombError...)
        return "cannot decode"
    return None


def inspect_images(image_root: Path, paths: Sequence[str], policy: str, name: str,
                   max_pixels: Optional[int]) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """(rows to keep, [(path, reason)] of the bad files) after opening every image under ``image_root``."""
    from wsml.progress import progress

    if policy not in BAD_IMAGE_POLICIES:
        raise ValueError(f"on_bad_image must be one of {list(BAD_IMAGE_POLICIES)}, got {policy!r}")
    keep = np.ones(len(paths), dtype=bool)
    if policy == "ignore":
        return keep, []
    bad = []
    for i, p in enumerate(progress(paths, f"{name}: checking images", unit="images")):
        reason = image_problem(os.path.join(str(image_root), p), max_pixels)
        if reason is not None:
            keep[i] = False
            bad.append((p, reason))
    if bad:
        counts = ", ".join(f"{n} {r}" for r, n in sorted(Counter(r for _, r in bad).items()))
        listed = "; ".join(f"{p} ({r})" for p, r in bad[:5]) + (" ..." if len(bad) > 5 else "")
        if policy == "error":
            raise ValueError(f"{name}: {len(bad)} of {len(paths)} images under {image_root} are bad ({counts}): "
                             f"{listed}. Fix them, or pass on_bad_image=drop to leave their rows out")
        if not keep.any():
            raise ValueError(f"{name}: none of the {len(paths)} images under {image_root} can be used ({counts})")
        print(f"warning: {name}: dropped {len(bad)} of {len(paths)} rows with bad images ({counts}): {listed}",
              file=sys.stderr)
    return keep, bad
