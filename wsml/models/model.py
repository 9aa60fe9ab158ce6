"""MultiLabelModel: a backbone, global average pooling and one linear multi-label head (logits, no sigmoid).

Because the head sits on globally average-pooled features, applying its weights at every position of the last
feature map gives the class activation maps (CAM) of Zhou et al. 2016 exactly: the spatial mean of
``cam(x)`` equals ``logits - bias``. The analysis uses them for the Pointing Game.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from wsml.models.registry import BACKBONES, Backbone, MeanStd, resolve_backbone
from wsml.models.weights import (
    find_local_weights,
    load_backbone_weights,
    missing_weights_error,
    verify_weights,
)


class MultiLabelModel(nn.Module):
    """``backbone -> global average pool -> dropout -> head: nn.Linear(D, C)``; ``forward`` returns logits [B, C]."""

    def __init__(self, backbone: Backbone, num_classes: int, dropout: float = 0.0, name: str = "backbone"):
        super().__init__()
        self.backbone = backbone
        self.backbone_name = name
        self.num_classes = int(num_classes)
        self.feature_dim = int(backbone.feature_dim)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.head = nn.Linear(self.feature_dim, self.num_classes)
        self.weights_info: Optional[dict] = None
        self._backbone_frozen = False

    @property
    def spatial(self) -> bool:
        """True for image backbones with a feature map (``forward_features`` and ``cam`` work)."""
        return bool(self.backbone.spatial)

    @property
    def default_mean_std(self) -> Optional[MeanStd]:
        """(mean, std) per channel the pretrained weights expect on [0, 1] pixels; None = the data's choice."""
        return self.backbone.default_mean_std

    @property
    def default_input_size(self) -> Optional[int]:
        return self.backbone.default_input_size

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Last feature map ``[B, D, h, w]`` of an image backbone."""
        if not self.spatial:
            raise ValueError(f"backbone {self.backbone_name!r} has no spatial feature map "
                             "(feature-vector or token model): forward_features/cam need a CNN image backbone")
        return self.backbone(x)

    def pooled_features(self, x: torch.Tensor) -> torch.Tensor:
        """Globally average-pooled features ``[B, D]`` (the input itself for ``linear``): what LinearInit caches."""
        f = self.backbone(x)
        return f.mean(dim=(2, 3)) if f.ndim == 4 else f

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Logits from pooled features ``[B, D]`` (dropout, then the head): trains the head from cached features."""
        if features.ndim != 2 or features.shape[1] != self.feature_dim:
            raise ValueError(f"expected pooled features of shape [B, {self.feature_dim}], got {tuple(features.shape)}")
        return self.head(self.dropout(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.pooled_features(x)))

    def cam_from_feature_map(self, fmap: torch.Tensor, include_bias: bool = False) -> torch.Tensor:
        """CAM ``M_c(i, j) = sum_d w_cd f_d(i, j)`` (+ b_c if ``include_bias``) of a map ``[B, D, h, w]``."""
        cam = torch.einsum("bdhw,cd->bchw", fmap, self.head.weight)
        return cam + self.head.bias.view(1, -1, 1, 1) if include_bias else cam

    def cam(self, x: torch.Tensor, include_bias: bool = False) -> torch.Tensor:
        """Class activation maps ``[B, C, h, w]`` (Zhou et al. 2016); their spatial mean is ``logits - bias``."""
        return self.cam_from_feature_map(self.forward_features(x), include_bias)

    def param_groups(self, lr: float, head_lr_mult: float = 10.0) -> list[dict]:
        """Optimizer groups: backbone at ``lr``, head at ``lr * head_lr_mult`` (10x in the paper).

        Frozen or parameter-free backbones contribute no group. Each group has a ``name`` key.
        """
        if lr <= 0 or head_lr_mult <= 0:
            raise ValueError(f"lr and head_lr_mult must be > 0, got lr={lr}, head_lr_mult={head_lr_mult}")
        groups = []
        backbone = [p for p in self.backbone.parameters() if p.requires_grad]
        if backbone:
            groups.append({"name": "backbone", "params": backbone, "lr": lr})
        groups.append({"name": "head", "params": list(self.head.parameters()), "lr": lr * head_lr_mult})
        return groups

    @property
    def backbone_frozen(self) -> bool:
        return self._backbone_frozen

    def freeze_backbone(self, frozen: bool = True) -> MultiLabelModel:
        """LinearInit stage 1: no gradients into the backbone and its BatchNorm statistics kept (eval mode)."""
        self._backbone_frozen = bool(frozen)
        for p in self.backbone.parameters():
            p.requires_grad_(not frozen)
        self.train(self.training)
        return self

    def train(self, mode: bool = True) -> MultiLabelModel:
        super().train(mode)
        if self._backbone_frozen:
            self.backbone.eval()
        return self


def upsample_cam(cam: torch.Tensor, size: Union[int, tuple[int, int]], mode: str = "bilinear") -> torch.Tensor:
    """Resize CAMs ``[B, C, h, w]`` (or ``[C, h, w]``) to the image size ``(H, W)`` for the Pointing Game."""
    if cam.ndim not in (3, 4):
        raise ValueError(f"expected CAMs of shape [B, C, h, w] or [C, h, w], got {tuple(cam.shape)}")
    size = (size, size) if isinstance(size, int) else tuple(size)
    batched = cam if cam.ndim == 4 else cam.unsqueeze(0)
    out = F.interpolate(batched, size=size, mode=mode, **({} if mode == "nearest" else {"align_corners": False}))
    return out if cam.ndim == 4 else out.squeeze(0)


def create_model(backbone: str, num_classes: int, *, pretrained: bool = False,
                 weights: Union[str, Path, None] = None, in_chans: int = 3, in_features: Optional[int] = None,
                 dropout: float = 0.0, require_weights: str = "", **backbone_kwargs) -> MultiLabelModel:
    """Build ``backbone`` (a name from :func:`available_backbones`) with a ``num_classes``-way linear head.

    ``weights=PATH`` loads a local state dict into the backbone; ``pretrained=True`` alone uses packaged weights
    (efficientnet_lite0) or a file found by :func:`wsml.models.weights.find_local_weights`, and raises
    FileNotFoundError saying where to put one otherwise. Nothing is ever downloaded. ``require_weights=
    "imagenet1k_v1"`` (the paper configs) refuses any file that is not torchvision's IMAGENET1K_V1 ResNet.
    """
    if int(num_classes) != num_classes or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    if int(in_chans) < 1:
        raise ValueError(f"in_chans must be >= 1, got {in_chans}")
    in_chans = int(in_chans)
    builder, args = resolve_backbone(backbone)
    if not args:  # one spelling from here on (names, weight files): "Small-CNN" -> "small_cnn"
        backbone = BACKBONES.resolve(backbone)
    body = builder(*args, in_chans=in_chans, in_features=in_features, **backbone_kwargs)
    if body.default_mean_std is not None and in_chans == 1 and len(body.default_mean_std[0]) == 3:
        body.default_mean_std = tuple((sum(v) / 3,) for v in body.default_mean_std)  # grey = mean of RGB stats
    model = MultiLabelModel(body, int(num_classes), dropout=dropout, name=backbone.strip())
    path = weights
    if path is None and pretrained:
        path = body.packaged_weights() or find_local_weights(backbone, body.extra_weight_dirs)
        if path is None:
            raise missing_weights_error(backbone, body.weights_hint)
    if path is not None:
        digest = verify_weights(path, backbone, require_weights) if require_weights else None
        model.weights_info = load_backbone_weights(body, path, backbone)
        if digest:
            model.weights_info.update(sha256=digest, release=require_weights)
    return model
