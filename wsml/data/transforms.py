"""Image transforms on uint8 tensors: resize, random horizontal flip (train), ImageNet normalisation.

The paper's end-to-end setting resizes to a square 448x448 and flips horizontally at random during
training. Working on ``uint8 [C, H, W]`` tensors (not PIL images) lets file images and the array-backed
mosaics share one path, without a PIL round trip per item. The flip draws from the transform's own
``torch.Generator`` (``seed``) so that loading is reproducible; ``make_loader`` reseeds it per worker.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# grayscale equivalents (channel averages), used when images are loaded with one channel
GRAY_MEAN = (sum(IMAGENET_MEAN) / 3,)
GRAY_STD = (sum(IMAGENET_STD) / 3,)

Size = Union[int, Sequence[int], None]


class ImageTransform:
    """uint8 [C, H, W] -> float32 [C, S, S]: bilinear antialiased resize, optional flip, (x/255 - mean)/std."""

    def __init__(self, image_size: Size = None, train: bool = False, mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD, seed: Optional[int] = None):
        if isinstance(image_size, int):
            image_size = (image_size, image_size)
        if image_size is not None and (len(image_size) != 2 or min(image_size) < 1):
            raise ValueError(f"image_size must be a positive int or (height, width), got {image_size!r}")
        if len(mean) != len(std) or any(s <= 0 for s in std):
            raise ValueError(f"mean {tuple(mean)} and std {tuple(std)} must have equal lengths and std > 0")
        self.image_size = None if image_size is None else (int(image_size[0]), int(image_size[1]))
        self.train = bool(train)
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        self._scale = torch.tensor([1.0 / (255.0 * s) for s in self.std]).view(-1, 1, 1)
        self._shift = torch.tensor([m / s for m, s in zip(self.mean, self.std)]).view(-1, 1, 1)
        self.seed = seed
        self._gen: Optional[torch.Generator] = None

    def reseed(self, seed: int) -> None:
        """Restart the flip stream from ``seed`` (called in each DataLoader worker)."""
        self.seed = int(seed) % (2**63)
        self._gen = None

    def _flip(self) -> bool:
        if self.seed is None:
            return bool(torch.rand(()) < 0.5)
        if self._gen is None:
            self._gen = torch.Generator().manual_seed(self.seed)
        return bool(torch.rand((), generator=self._gen) < 0.5)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        if img.ndim != 3:
            raise ValueError(f"expected an image tensor [C, H, W], got shape {tuple(img.shape)}")
        c = img.shape[0]
        if len(self.mean) not in (1, c):
            raise ValueError(f"image has {c} channels but mean/std have {len(self.mean)}")
        x = img.float()
        if self.image_size is not None and tuple(x.shape[1:]) != self.image_size:
            x = F.interpolate(x[None], size=self.image_size, mode="bilinear", align_corners=False, antialias=True)[0]
        if self.train and self._flip():
            x = x.flip(-1)
        return x * self._scale - self._shift

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_gen"] = None  # generators are recreated from the seed in the receiving process
        return state

    def __repr__(self) -> str:
        return f"ImageTransform(image_size={self.image_size}, train={self.train}, mean={self.mean}, std={self.std})"


def build_transform(image_size: Size, train: bool, mean: Optional[Sequence[float]] = None,
                    std: Optional[Sequence[float]] = None, *, channels: int = 3,
                    seed: Optional[int] = None) -> ImageTransform:
    """The standard transform: resize to ``image_size`` (None keeps the size), flip when ``train``, normalise.

    ``mean``/``std`` default to ImageNet's (RGB) or their channel averages when ``channels == 1``.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    mean = mean if mean is not None else (IMAGENET_MEAN if channels == 3 else GRAY_MEAN)
    std = std if std is not None else (IMAGENET_STD if channels == 3 else GRAY_STD)
    return ImageTransform(image_size, train, mean, std, seed)
