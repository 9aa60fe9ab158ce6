"""Backbone registry: a name -> builder table, like timm's, plus the ``timm:`` / ``torchvision:`` prefixes.

A backbone is the part of a :class:`~wsml.models.MultiLabelModel` below the linear multi-label head. Every
builder returns a :class:`Backbone`, a module whose ``forward`` gives either a spatial feature map
``[B, D, h, w]`` (image backbones; global average pooling of it is what the head sees, so the class activation
maps of Zhou et al. 2016 are exact) or a feature vector ``[B, D]`` (feature-vector data such as Yeast).
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import nn

MeanStd = tuple[tuple[float, ...], tuple[float, ...]]
IMAGENET_MEAN_STD: MeanStd = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))

_BACKBONES: dict[str, Callable[..., Backbone]] = {}
_PREFIXES: dict[str, Callable[..., Backbone]] = {}


class Backbone(nn.Module):
    """Feature extractor below the head.

    Attributes set by the builders:
      feature_dim        D, the channels of the last feature map (or the vector length)
      spatial            True when ``forward`` returns ``[B, D, h, w]``; False for ``[B, D]``
      default_mean_std   per-channel (mean, std) the (pretrained) weights expect on [0, 1] inputs, or None
                         when the backbone is trained from scratch and the data pipeline may choose
      default_input_size square input side the weights were trained at, or None
      weights_target     the module whose native state dict a weights file holds (often ``self``)
      classifier_prefixes  key prefixes of the original classifier in weight files, ignored when loading
      extra_weight_dirs  folders searched for ``pretrained=True`` after the wsml ones
      weights_hint       appended to the error when ``pretrained=True`` finds no weights file
    """

    feature_dim: int
    spatial: bool = True
    default_mean_std: Optional[MeanStd] = None
    default_input_size: Optional[int] = None
    classifier_prefixes: tuple[str, ...] = ()
    extra_weight_dirs: tuple[str, ...] = ()
    weights_hint: str = ""

    def packaged_weights(self) -> Optional[str]:
        """Path of weights shipped with an installed package (used by ``pretrained=True``), or None."""
        return None

    @property
    def weights_target(self) -> nn.Module:
        return self

    def convert_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Rename the keys of a foreign checkpoint layout to ``weights_target``'s (identity by default)."""
        return state


def register_backbone(name: str) -> Callable[[Callable[..., Backbone]], Callable[..., Backbone]]:
    """Decorator registering ``builder(*, in_chans, in_features, **kw) -> Backbone`` (built without weights).

    A name ending in ``:`` registers a prefix family (``timm:``, ``torchvision:``); its builder gets the rest of
    the name as its first positional argument.
    """
    key = name.lower()

    def wrap(builder: Callable[..., Backbone]) -> Callable[..., Backbone]:
        table = _PREFIXES if key.endswith(":") else _BACKBONES
        if key in table:
            raise ValueError(f"backbone {name!r} is already registered")
        table[key] = builder
        return builder

    return wrap


def available_backbones() -> list[str]:
    """Registered names, then the prefix families written as ``timm:<name>`` / ``torchvision:<name>``."""
    return sorted(_BACKBONES) + [f"{p}<name>" for p in sorted(_PREFIXES)]


def resolve_backbone(name: str) -> tuple[Callable[..., Backbone], tuple[str, ...]]:
    """Return (builder, positional args) for ``name``; unknown names raise ValueError listing the choices."""
    key = name.strip()
    low = key.lower()
    if low in _BACKBONES:
        return _BACKBONES[low], ()
    for prefix, builder in _PREFIXES.items():
        if low.startswith(prefix):
            rest = key[len(prefix):]
            if not rest:
                raise ValueError(f"backbone {name!r}: give a model name after {prefix!r}, e.g. '{prefix}resnet18'")
            return builder, (rest,)
    raise ValueError(f"unknown backbone {name!r}; available: {', '.join(available_backbones())}")
