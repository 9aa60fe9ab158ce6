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

from wsml.registry import Registry

MeanStd = tuple[tuple[float, ...], tuple[float, ...]]
IMAGENET_MEAN_STD: MeanStd = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))

BACKBONES = Registry("backbone")  # name -> builder; "timm:" / "torchvision:" are families


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
    return BACKBONES.register(name)


def available_backbones() -> list[str]:
    """Registered names, then the prefix families written as ``timm:<name>`` / ``torchvision:<name>``."""
    return BACKBONES.available()


def resolve_backbone(name: str) -> tuple[Callable[..., Backbone], tuple[str, ...]]:
    """Return (builder, positional args) for ``name``; unknown names raise ValueError listing the choices."""
    family = BACKBONES.get_family(name)
    if family is not None:
        return family[0], (family[1],)
    return BACKBONES.get(name), ()
