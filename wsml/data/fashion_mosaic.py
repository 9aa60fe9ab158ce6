"""The embedded default data set: multi-label mosaics of Fashion-MNIST items (offline, no download).

Each image is a ``rows x cols`` grid of 28x28 cells (default 2x2 -> 56x56 grayscale). A mosaic holds
``k`` items, ``k`` uniform in ``[min_objects, max_objects]`` (default 1-4), placed in ``k`` random cells;
the other cells are black. Its full labels are the *set* of item classes (10 classes, a class may
repeat), its boxes the cells of its items: rows ``(sample, class, x0, y0, x1, y1)`` in pixels, with
``x1 = x0 + 28`` exclusive. Train mosaics use only Fashion-MNIST's training items, test mosaics only its
test items, each item drawn from a shuffled pool (reused only once the pool is exhausted).

Under the reference protocol (single positive, seed 1200, val 20 %) a mosaic keeps one observed
positive. With k uniform in 1..4 and 10 balanced classes a mosaic has on average
``E[sum_c 1 - (1 - p_c)^k] ~= 2.26`` positive classes, so ~1.26 true positives per image are missing and
silently become "negatives" under Naive AN: the false negatives that LL-R/LL-Ct/LL-Cp target.

Pixels are stored as one uint8 array per split (``Split.images``), which trains fastest; ``png_dir``
writes PNG files instead (``Split.samples``), e.g. to try ``wsml predict`` on real image files.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path
from typing import Optional, Union

import numpy as np

from wsml._types import PathLike
from wsml.data.index import DatasetIndex, Split
from wsml.data.protocol import reference_splits

DEFAULT_ROOT = "/usr/share/datasets/fashion-mnist"
CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
               "Ankle boot"]
_IDX_TYPES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
              0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path: PathLike) -> np.ndarray:
    """Read an idx file (the MNIST format; gzip'd or plain) and return its array in native byte order.

    Validates the magic number (two zero bytes, a known type code, ndim >= 1) and that the data size
    matches the header exactly; errors name the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: idx file not found")
    try:
        with open(path, "rb") as f:
            gz = f.read(2) == b"\x1f\x8b"
        with (gzip.open(path, "rb") if gz else open(path, "rb")) as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise ValueError(f"{path}: cannot read idx file ({e})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_TYPES or data[3] == 0:
        raise ValueError(f"{path}: not an idx file (bad magic number {data[:4].hex() or 'empty'})")
    ndim, dtype = data[3], _IDX_TYPES[data[2]]
    if len(data) < 4 + 4 * ndim:
        raise ValueError(f"{path}: idx header truncated ({len(data)} bytes for {ndim} dimensions)")
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    got = len(data) - 4 - 4 * ndim
    if got != expected:
        raise ValueError(f"{path}: idx header says shape {dims} ({expected} data bytes) but the file has {got}")
    arr = np.frombuffer(data, dtype=dtype, offset=4 + 4 * ndim).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=False)


def _find(root: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem):
        if (root / name).is_file():
            return root / name
    raise FileNotFoundError(f"{root}: missing {stem}.gz (Fashion-MNIST idx files; on Debian/Ubuntu: "
                            f"`sudo apt-get install dataset-fashion-mnist`, or `make fashion-mnist`)")


def load_fashion_mnist(root: Optional[PathLike] = None, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 [N, 28, 28] and labels int64 [N] of Fashion-MNIST ``split`` ("train" or "test")."""
    if split not in ("train", "test"):
        raise ValueError(f"Fashion-MNIST split must be 'train' or 'test', got {split!r}")
    root = Path(root or DEFAULT_ROOT)
    prefix = "train" if split == "train" else "t10k"
    ipath, lpath = _find(root, f"{prefix}-images-idx3-ubyte"), _find(root, f"{prefix}-labels-idx1-ubyte")
    images, labels = read_idx(ipath), read_idx(lpath)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(f"{ipath}: expected uint8 images [N, H, W], got {images.dtype} {images.shape}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise ValueError(f"{lpath}: expected {len(images)} labels (one per image), got shape {labels.shape}")
    if len(labels) and (labels.min() < 0 or labels.max() >= len(CLASS_NAMES)):
        raise ValueError(f"{lpath}: labels must be in [0, {len(CLASS_NAMES)}), got {labels.min()}..{labels.max()}")
    return images, labels.astype(np.int64)


def make_mosaics(items: np.ndarray, item_labels: np.ndarray, num: int, *, grid: tuple[int, int] = (2, 2),
                 min_objects: int = 1, max_objects: Optional[int] = None, num_classes: int = 10,
                 seed: Union[int, np.random.SeedSequence] = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Build ``num`` mosaics deterministically from ``seed``.

    Returns (images uint8 [num, rows*h, cols*w], full labels uint8 [num, num_classes], boxes float32 [M, 6]
    rows (sample, class, x0, y0, x1, y1), source item index int64 [M] aligned with the boxes).
    """
    rows, cols = grid
    cells = rows * cols
    max_objects = cells if max_objects is None else max_objects
    if rows < 1 or cols < 1 or not 1 <= min_objects <= max_objects <= cells:
        raise ValueError(f"need 1 <= min_objects <= max_objects <= cells ({cells}); got grid {grid}, "
                         f"objects {min_objects}..{max_objects}")
    if num < 1 or len(items) == 0:
        raise ValueError(f"need num >= 1 mosaics and a non-empty item pool; got num={num}, {len(items)} items")
    rng = np.random.default_rng(seed)
    h, w = items.shape[1:]
    k = rng.integers(min_objects, max_objects + 1, size=num)
    total = int(k.sum())
    reps = -(-total // len(items))
    pick = np.concatenate([rng.permutation(len(items)) for _ in range(reps)])[:total]
    cell_perm = np.argsort(rng.random((num, cells)), axis=1)  # one random cell order per mosaic
    owner = np.repeat(np.arange(num), k)
    slot = np.arange(total) - np.repeat(np.cumsum(k) - k, k)
    cell = cell_perm[owner, slot]
    r, c = cell // cols, cell % cols
    canvas = np.zeros((num, rows, cols, h, w), dtype=np.uint8)
    canvas[owner, r, c] = items[pick]
    images = np.ascontiguousarray(canvas.transpose(0, 1, 3, 2, 4).reshape(num, rows * h, cols * w))
    cls = item_labels[pick]
    full = np.zeros((num, num_classes), dtype=np.uint8)
    full[owner, cls] = 1
    boxes = np.stack([owner, cls, c * w, r * h, (c + 1) * w, (r + 1) * h], axis=1).astype(np.float32)
    return images, full, boxes, pick


def expected_positives(k_values: np.ndarray, class_freq: np.ndarray) -> float:
    """E[number of distinct classes] of a mosaic whose k is uniform over ``k_values`` (items i.i.d. by class_freq)."""
    return float(np.mean([np.sum(1.0 - (1.0 - class_freq) ** k) for k in k_values]))


def build_fashion_mosaic(
    root: Optional[str] = None,
    *,
    num_train: int = 15000,
    num_test: int = 2000,
    grid: Union[int, tuple[int, int]] = 2,
    min_objects: int = 1,
    max_objects: Optional[int] = 4,
    seed: int = 0,
    num_pos: int = 1,
    num_neg: int = 0,
    obs_seed: int = 1200,
    val_frac: float = 0.2,
    train_frac: float = 1.0,
    png_dir: Optional[str] = None,
) -> DatasetIndex:
    """Fashion-MNIST mosaics under the reference protocol (the ``fashion-mosaic`` adapter).

    ``num_train`` mosaics from the official training items become train + val (``val_frac``), ``num_test``
    from the test items the test split. ``seed`` fixes the mosaics, ``obs_seed`` the observed labels
    (``observe_labels(num_pos, num_neg)``) and the train/val split. ``png_dir``: also write every mosaic as
    a PNG under it and reference those files (kind "images" with samples) instead of storing arrays.
    """
    grid = (grid, grid) if isinstance(grid, int) else tuple(grid)
    max_objects = grid[0] * grid[1] if max_objects is None else max_objects
    ss_train, ss_test = np.random.SeedSequence(seed).spawn(2)
    built = {}
    for name, num, ss in (("train", num_train, ss_train), ("test", num_test, ss_test)):
        items, labels = load_fashion_mnist(root, name)
        images, full, boxes, _ = make_mosaics(items, labels, num, grid=grid, min_objects=min_objects,
                                              max_objects=max_objects, num_classes=len(CLASS_NAMES), seed=ss)
        built[name] = (images, full, boxes)
        if name == "train":
            item_freq = np.bincount(labels, minlength=len(CLASS_NAMES)) / len(labels)
    splits = {}
    for name, (images, full, boxes) in built.items():
        if png_dir is not None:
            splits[name] = Split(samples=export_png(images, Path(png_dir), name), full=full, boxes=boxes)
        else:
            splits[name] = Split(full=full, boxes=boxes, images=images)
    h, w = built["train"][0].shape[1:]
    ks = np.arange(min_objects, max_objects + 1)
    mosaic = {"grid": list(grid), "cell_size": [int(h // grid[0]), int(w // grid[1])],
              "objects": [min_objects, max_objects], "seed": seed, "num_train": num_train, "num_test": num_test,
              "expected_positives_per_image": round(expected_positives(ks, item_freq), 4),
              "source": str(Path(root or DEFAULT_ROOT))}
    img_root = str(Path(png_dir).resolve()) if png_dir is not None else ""
    return reference_splits("fashion-mosaic", CLASS_NAMES, splits["train"], splits["test"], root=img_root,
                            kind="images", num_pos=num_pos, num_neg=num_neg, seed=obs_seed, val_frac=val_frac,
                            train_frac=train_frac, meta={"image_size": [int(h), int(w)], "channels": 1,
                                                         "mosaic": mosaic})


def export_png(images: np.ndarray, folder: Path, prefix: str) -> list[str]:
    """Write uint8 images [N, H, W(, 3)] as ``folder/prefix/NNNNNN.png``; return the paths relative to folder."""
    from PIL import Image

    out = Path(folder) / prefix
    out.mkdir(parents=True, exist_ok=True)
    names = []
    for i, img in enumerate(images):
        rel = f"{prefix}/{i:06d}.png"
        Image.fromarray(np.asarray(img)).save(Path(folder) / rel, compress_level=1)
        names.append(rel)
    return names


def describe(index: DatasetIndex) -> str:
    """A few lines of label statistics (mean positives per image, observed positives, class frequencies)."""
    lines = [f"{index.name}: {index.num_classes} classes, image size {index.meta.get('image_size')}"]
    exp = index.meta.get("mosaic", {}).get("expected_positives_per_image")
    if exp is not None:
        lines.append(f"  expected positives per image (analytic): {exp:.3f}")
    for name, st in index.meta.get("stats", {}).items():
        line = f"  {name}: {st['rows']} images"
        if "mean_positives" in st:
            line += f", {st['mean_positives']:.3f} positives/image"
        if "observed_pos_per_row" in st:
            line += f", {st['observed_pos_per_row']:.3f} observed positives/image"
        lines.append(line)
        if "class_frequency" in st:
            lines.append("    class frequency: " + ", ".join(
                f"{n}={f:.3f}" for n, f in zip(index.class_names, st["class_frequency"])))
    return "\n".join(lines)


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="Prepare the Fashion-MNIST mosaics and print their label statistics")
    ap.add_argument("out")
    ap.add_argument("--root", default=None)
    ap.add_argument("--num-train", type=int, default=15000)
    ap.add_argument("--num-test", type=int, default=2000)
    a = ap.parse_args()
    idx = build_fashion_mosaic(a.root, num_train=a.num_train, num_test=a.num_test)
    idx.save(a.out)
    print(describe(idx))
