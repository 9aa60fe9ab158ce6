"""The torch loading layer: a map-style Dataset over a prepared index and a deterministic DataLoader.

Items are dicts::

    {"input": float32 tensor (image [C, H, W] or feature row [D]),
     "observed": int8 [C] labels {1, 0, -1} (Split.train_targets(); SparseLabels rows are densified per item),
     "full": uint8 [C] ground truth (only when the split has full labels),
     "index": int, the row of the item in its split (stable id for LL-Cp / ROLE state; < len(split))}

Image pixels come from ``Split.images`` (uint8 array, e.g. the mosaics; no decode) or from files
``Split.samples`` under ``index.root`` decoded with PIL; both become ``uint8 [C, H, W]`` with ``channels``
1 (L) or 3 (RGB, default so ImageNet backbones work on grayscale data too) before the transform.

Bad image files: ``on_bad_image="error"`` raises FileNotFoundError/ValueError naming the file.
``"skip"`` drops files that do not exist when the dataset is built (one stat per file, with a warning),
and an item whose file fails to decode later becomes ``None`` (with a warning) that ``collate_items`` drops,
so such a batch is smaller; a batch whose items all fail is ``None`` and must be skipped by the caller.
"""

from __future__ import annotations

import os
import warnings
from typing import Callable, Optional, Union

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler, Sampler

from wsml.data._io import DEFAULT_MAX_PIXELS
from wsml.data.index import DatasetIndex
from wsml.data.transforms import Size, build_transform
from wsml.labels import SparseLabels, as_full

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601-2, as PIL's convert("L")




def open_image(path: str, max_pixels: Optional[int] = DEFAULT_MAX_PIXELS):
    """Open an image lazily (header only) and refuse it when it has more than ``max_pixels`` pixels: a small file
    can declare a huge canvas (a 164 KB PNG of 169 MP costs ~1.6 GB per decode). wsml's limit replaces Pillow's
    own decompression-bomb check, whose warning would otherwise reach the user's terminal."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            im = Image.open(path)
        except Image.DecompressionBombError:
            raise ValueError(f"{path}: over {2 * Image.MAX_IMAGE_PIXELS / 1e6:.0f} megapixels, Pillow's "
                             "decompression-bomb limit") from None
    if max_pixels is not None and im.width * im.height > max_pixels:
        im.close()
        raise ValueError(f"{path}: {im.width}x{im.height} = {im.width * im.height / 1e6:.1f} megapixels is over the "
                         f"limit of {max_pixels / 1e6:g} MP (data.max_pixels / max_pixels=)")
    return im


def load_image(path: str, channels: int = 3, draft_size: Optional[tuple[int, int]] = None,
               max_pixels: Optional[int] = DEFAULT_MAX_PIXELS) -> torch.Tensor:
    """Decode an image file to uint8 [channels, H, W]; errors name the file.

    ``draft_size`` lets JPEG decoding downscale by a power of two while staying >= that size (faster);
    images over ``max_pixels`` are refused from their header, before any decoding.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with open_image(path, max_pixels) as im:
            if draft_size is not None and im.format == "JPEG":
                im.draft(im.mode, draft_size)
            arr = np.array(im.convert("RGB" if channels == 3 else "L"), dtype=np.uint8)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: image file not found") from None
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise ValueError(f"{path}: cannot decode image ({type(e).__name__}: {e})") from None
    t = torch.from_numpy(arr)
    return t[None] if t.ndim == 2 else t.permute(2, 0, 1).contiguous()


def _array_image(img: np.ndarray, channels: int) -> torch.Tensor:
    """A uint8 [H, W] or [H, W, 3] array row -> uint8 [channels, H, W]."""
    if img.ndim == 2:
        t = torch.from_numpy(np.array(img, dtype=np.uint8))[None]
        return t.expand(3, -1, -1).contiguous() if channels == 3 else t
    if channels == 3:
        return torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1).contiguous()
    gray = np.clip(np.rint(img.astype(np.float32) @ _LUMA), 0, 255).astype(np.uint8)
    return torch.from_numpy(gray)[None]


class PartialLabelDataset(Dataset):
    """Map-style dataset over one split of a :class:`DatasetIndex` (see the module docstring for items)."""

    def __init__(self, index: DatasetIndex, split: str, transform: Optional[Callable] = None,
                 on_bad_image: str = "error", channels: int = 3, max_pixels: Optional[int] = DEFAULT_MAX_PIXELS):
        if on_bad_image not in ("error", "skip"):
            raise ValueError(f"on_bad_image must be 'error' or 'skip', got {on_bad_image!r}")
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        s = index[split]
        self.name = f"{index.name}/{split}"
        self.kind, self.transform, self.on_bad_image, self.channels = index.kind, transform, on_bad_image, channels
        self.max_pixels = max_pixels
        # only full labels (an evaluation split): fully observed, derived row by row in observed_row - never the
        # N × C int8 matrix of Split.train_targets() (5 GiB of temporaries at 125 000 × 5000)
        self.targets = s.train_targets() if s.observed is not None or s.full is None else None
        self.full = s.full
        self.num_samples = len(s)  # size of the row-id space ("index" values), also after skipping
        self.features = self.images = self.samples = None
        self.root = index.root
        if self.kind == "features":
            if s.features is None:
                raise ValueError(f"{self.name}: kind 'features' but the split has no features")
            self.features = s.features
        elif self.kind == "images":
            if s.images is not None:
                self.images = s.images
            elif s.samples is not None:
                self.samples = s.samples
            else:
                raise ValueError(f"{self.name}: kind 'images' but the split has neither images nor samples")
        else:
            raise ValueError(f"{self.name}: unknown data kind {self.kind!r} (expected 'images' or 'features')")
        self.rows = np.arange(self.num_samples, dtype=np.int64)
        if on_bad_image == "skip" and self.samples is not None:
            exists = np.fromiter((os.path.isfile(self.path(i)) for i in range(self.num_samples)), dtype=bool,
                                 count=self.num_samples)
            if not exists.all():
                missing = np.nonzero(~exists)[0]
                warnings.warn(f"{self.name}: skipping {len(missing)} missing image files, e.g. "
                              f"{', '.join(self.path(i) for i in missing[:3])}", stacklevel=2)
                self.rows = self.rows[exists]

    def __len__(self) -> int:
        return len(self.rows)

    def path(self, row: int) -> str:
        """The file of split row ``row`` (image data stored as files)."""
        return os.path.join(self.root, self.samples[row])

    def observed_row(self, row: int) -> np.ndarray:
        """Dense int8 [C] observed labels of split row ``row`` (sliced from sparse storage when sparse)."""
        t = self.targets
        if t is None:
            return np.where(as_full(self.full, np.array([row]))[0] == 1, 1, -1).astype(np.int8)
        if isinstance(t, SparseLabels):
            a, b = t.indptr[row], t.indptr[row + 1]
            out = np.zeros(t.num_classes, dtype=np.int8)
            out[t.indices[a:b]] = t.values[a:b]
            return out
        return np.array(t[row], dtype=np.int8)

    def _input(self, row: int) -> Optional[torch.Tensor]:
        if self.features is not None:
            x = torch.from_numpy(np.array(self.features[row], dtype=np.float32))
            return x if self.transform is None else self.transform(x)
        if self.images is not None:
            img = _array_image(self.images[row], self.channels)
        else:
            size = getattr(self.transform, "image_size", None)
            try:
                img = load_image(self.path(row), self.channels, size, self.max_pixels)
            except (FileNotFoundError, ValueError) as e:
                if self.on_bad_image == "error":
                    raise
                warnings.warn(f"skipped: {e}", stacklevel=2)
                return None
        return img.float().div_(255.0) if self.transform is None else self.transform(img)

    def __getitem__(self, i: int) -> Optional[dict]:
        row = int(self.rows[i])
        x = self._input(row)
        if x is None:
            return None
        item = {"input": x, "observed": torch.from_numpy(self.observed_row(row)), "index": row}
        if self.full is not None:
            item["full"] = torch.from_numpy(np.array(as_full(self.full, np.array([row]))[0], dtype=np.uint8))
        return item


def collate_items(items: list) -> Optional[dict]:
    """Stack item dicts into a batch, dropping ``None`` (skipped images); all skipped -> ``None``."""
    good = [b for b in items if b is not None]
    if not good:
        return None
    return torch.utils.data.default_collate(good)


def _worker_init(worker_id: int) -> None:
    info = torch.utils.data.get_worker_info()
    t = getattr(info.dataset, "transform", None)
    if hasattr(t, "reseed"):
        t.reseed(info.seed)  # info.seed = loader's base seed + worker id: distinct and reproducible


def make_loader(
    index: DatasetIndex,
    split: str,
    *,
    batch_size: int,
    train: bool,
    image_size: Size = None,
    num_workers: int = 0,
    seed: int = 0,
    sampler: Union[Sampler, Callable[[Dataset], Sampler], None] = None,
    drop_last: bool = False,
    transform: Optional[Callable] = None,
    channels: int = 3,
    mean: Optional[tuple[float, ...]] = None,
    std: Optional[tuple[float, ...]] = None,
    on_bad_image: str = "error",
    pin_memory: bool = False,
    max_pixels: Optional[int] = DEFAULT_MAX_PIXELS,
) -> DataLoader:
    """A DataLoader over ``index[split]``: shuffled when ``train`` (seeded), batches from :func:`collate_items`.

    Images get ``build_transform(image_size, train, mean, std)`` unless ``transform`` is given;
    ``image_size`` defaults to ``index.meta["image_size"]`` (the mosaics: native 56x56) and is required
    for image files. ``sampler`` may be a Sampler or a function of the dataset returning one (the training loop
    passes a seeded DistributedSampler, ``wsml.train.builders.make_sampler``, also in one process).
    Same ``seed`` -> same batches: the shuffling order does not depend on ``num_workers`` (the sampler has
    its own generator); random flips are reproducible for a given ``seed`` and ``num_workers``, also across a
    resume, because workers are started afresh each epoch and reseeded from the loader's generator. Iterating the
    same loader again gives the next epoch's order; a fresh loader with the same seed restarts it.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if transform is None and index.kind == "images":
        size = image_size if image_size is not None else index.meta.get("image_size")
        if size is None and index[split].images is None:
            raise ValueError(f"{index.name}/{split}: image files have varying sizes; pass image_size (paper: 448)")
        transform = build_transform(size, train, mean, std, channels=channels, seed=seed + 7919)
    ds = PartialLabelDataset(index, split, transform=transform, on_bad_image=on_bad_image, channels=channels,
                             max_pixels=max_pixels)
    if sampler is not None and not isinstance(sampler, Sampler) and callable(sampler):
        sampler = sampler(ds)
    elif sampler is None and train:
        sampler = RandomSampler(ds, generator=torch.Generator().manual_seed(seed))
    gen = torch.Generator().manual_seed(seed + 1)  # worker base seeds only
    return DataLoader(ds, batch_size=batch_size, sampler=sampler,
                      drop_last=drop_last, num_workers=num_workers, collate_fn=collate_items, generator=gen,
                      worker_init_fn=_worker_init if num_workers > 0 else None, pin_memory=pin_memory,
                      persistent_workers=False)  # fresh workers per epoch: flips follow the epoch's seed
