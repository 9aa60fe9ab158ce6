"""The built-in backbones: ``small_cnn`` (CPU runs), ``linear`` / ``mlp`` (feature vectors such as Yeast),
``resnet50`` / ``resnet101`` (the paper's), and the ``timm:<name>`` / ``torchvision:<name>`` families.

Every builder creates its network WITHOUT downloading anything; pretrained weights are loaded afterwards by
:func:`wsml.models.create_model` from a local file (see :mod:`wsml.models.weights`).
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from wsml.models.registry import IMAGENET_MEAN_STD, Backbone, register_backbone


def need_image_input(name: str, in_features: Optional[int]) -> None:
    """Image backbones reject ``in_features`` (the feature-vector length of ``linear`` / ``mlp``)."""
    if in_features is not None:
        raise ValueError(f"backbone {name!r} takes images; in_features={in_features} is only for 'linear'/'mlp'")


def _probe(net: nn.Module, forward, size: int) -> torch.Tensor:
    """``forward`` of one zero image ``size`` x ``size`` (eval mode, no grad, ``net``'s mode restored): its output
    shape tells the feature size / layout of a network built without weights."""
    was = net.training
    net.eval()
    in_chans = next(m for m in net.modules() if isinstance(m, nn.Conv2d)).in_channels
    with torch.no_grad():
        out = forward(torch.zeros(1, in_chans, size, size))
    net.train(was)
    return out


def _conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class SmallCNN(Backbone):
    """conv3x3-BN-ReLU blocks with a 2x2 max-pool between them: a 56x56 mosaic gives a 7x7 map for CAM."""

    def __init__(self, in_chans: int = 3, widths: Sequence[int] = (32, 64, 128, 128)):
        super().__init__()
        if len(widths) < 1 or any(int(w) < 1 for w in widths):
            raise ValueError(f"small_cnn: widths must be positive integers, got {tuple(widths)}")
        layers: list[nn.Module] = []
        cin = in_chans
        for i, w in enumerate(widths):
            if i > 0:
                layers.append(nn.MaxPool2d(2))
            layers += _conv_bn_relu(cin, int(w))
            cin = int(w)
        self.body = nn.Sequential(*layers)
        self.feature_dim = cin
        self.spatial = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


@register_backbone("small_cnn")
def small_cnn(*, in_chans: int = 3, in_features: Optional[int] = None,
              widths: Sequence[int] = (32, 64, 128, 128)) -> Backbone:
    """Small CNN (~240k parameters) that trains on 56x56 Fashion-MNIST mosaics in minutes on a CPU."""
    need_image_input("small_cnn", in_features)
    return SmallCNN(in_chans, widths)


class VectorBackbone(Backbone):
    """Feature-vector input ``[B, in_features]``: identity (``linear``) or one hidden ReLU layer (``mlp``)."""

    def __init__(self, in_features: int, hidden_dim: Optional[int] = None):
        super().__init__()
        self.in_features = in_features
        self.net = nn.Identity() if hidden_dim is None else nn.Sequential(nn.Linear(in_features, hidden_dim), nn.ReLU())
        self.feature_dim = in_features if hidden_dim is None else hidden_dim
        self.spatial = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"expected feature vectors of shape [B, {self.in_features}], got {tuple(x.shape)}")
        return self.net(x)


def _vector_dim(name: str, in_features: Optional[int]) -> int:
    if in_features is None or int(in_features) < 1:
        raise ValueError(f"backbone {name!r} needs in_features (the feature-vector length, e.g. 103 for Yeast)")
    return int(in_features)


@register_backbone("linear")
def linear(*, in_chans: int = 3, in_features: Optional[int] = None) -> Backbone:
    """Linear model on feature vectors: the backbone is the identity, the head is the whole model."""
    return VectorBackbone(_vector_dim("linear", in_features))


@register_backbone("mlp")
def mlp(*, in_chans: int = 3, in_features: Optional[int] = None, hidden_dim: int = 256) -> Backbone:
    """One hidden ReLU layer on feature vectors; ``pooled_features`` is the hidden layer."""
    return VectorBackbone(_vector_dim("mlp", in_features), int(hidden_dim))


class TorchvisionBody(Backbone):
    """A torchvision classifier without its pooling and classifier: ResNet-like, RegNet, or ``.features`` models."""

    def __init__(self, net: nn.Module, name: str):
        super().__init__()
        self.net = net
        self.spatial = True
        self.default_mean_std = IMAGENET_MEAN_STD
        self.default_input_size = 224
        self.extra_weight_dirs = (torch.hub.get_dir() + "/checkpoints",)  # where torchvision keeps its own files
        if hasattr(net, "layer4") and isinstance(getattr(net, "fc", None), nn.Linear):
            self.kind, self.feature_dim, net.fc = "resnet", net.fc.in_features, nn.Identity()
            self.classifier_prefixes = ("fc.",)
        elif hasattr(net, "trunk_output") and isinstance(getattr(net, "fc", None), nn.Linear):
            self.kind, self.feature_dim, net.fc = "regnet", net.fc.in_features, nn.Identity()
            self.classifier_prefixes = ("fc.",)
        elif isinstance(getattr(net, "features", None), nn.Module):
            self.kind = "densenet" if type(net).__name__ == "DenseNet" else "features"
            for attr in ("classifier", "fc"):
                if hasattr(net, attr):
                    setattr(net, attr, nn.Identity())
            self.classifier_prefixes = ("classifier.", "fc.")
            self.feature_dim = int(_probe(net, self.forward, 224).shape[1])
        else:
            raise ValueError(f"torchvision:{name}: unsupported layout (need a ResNet/RegNet or a '.features' module)")

    @property
    def weights_target(self) -> nn.Module:
        return self.net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.net
        if self.kind == "resnet":
            x = n.maxpool(n.relu(n.bn1(n.conv1(x))))
            return n.layer4(n.layer3(n.layer2(n.layer1(x))))
        if self.kind == "regnet":
            return n.trunk_output(n.stem(x))
        x = n.features(x)
        return torch.relu(x) if self.kind == "densenet" else x


def _torchvision(name: str, in_chans: int) -> Backbone:
    import torchvision

    try:
        net = torchvision.models.get_model(name, weights=None)
    except ValueError as e:
        raise ValueError(f"unknown torchvision model {name!r} ({e})") from e
    if in_chans != 3:
        raise ValueError(f"torchvision:{name} takes 3-channel images (in_chans={in_chans}); use timm:{name} instead")
    return TorchvisionBody(net, name)


@register_backbone("torchvision:")
def torchvision_backbone(name: str, *, in_chans: int = 3, in_features: Optional[int] = None) -> Backbone:
    """Any torchvision classification model by name, e.g. ``torchvision:resnet18``."""
    need_image_input(f"torchvision:{name}", in_features)
    return _torchvision(name, in_chans)


@register_backbone("resnet50")
def resnet50(*, in_chans: int = 3, in_features: Optional[int] = None) -> Backbone:
    """ResNet-50 (torchvision layout, 2048-d features, stride 32): the paper's backbone."""
    need_image_input("resnet50", in_features)
    return _torchvision("resnet50", in_chans)


@register_backbone("resnet101")
def resnet101(*, in_chans: int = 3, in_features: Optional[int] = None) -> Backbone:
    """ResNet-101 (torchvision layout): the paper's backbone for OpenImages V3."""
    need_image_input("resnet101", in_features)
    return _torchvision("resnet101", in_chans)


class TimmBody(Backbone):
    """A timm model without its classifier; CNN maps are returned NCHW, token models pooled by timm's own head."""

    def __init__(self, net: nn.Module, spatial: Optional[bool] = None):
        super().__init__()
        self.net = net
        self.feature_dim = int(net.num_features)
        self.nhwc = getattr(net, "output_fmt", "NCHW") == "NHWC"
        cfg = getattr(net, "pretrained_cfg", {}) or {}
        if cfg.get("mean") and cfg.get("std"):
            self.default_mean_std = (tuple(cfg["mean"]), tuple(cfg["std"]))
        self.default_input_size = int(cfg["input_size"][-1]) if cfg.get("input_size") else None
        self.classifier_prefixes = tuple(f"{c}." for c in _as_tuple(cfg.get("classifier", "classifier")))
        if spatial is None:  # one tiny forward tells a CNN (4-d map) from a token model (3-d)
            spatial = _probe(net, net.forward_features, self.default_input_size or 224).ndim == 4
        self.spatial = bool(spatial)

    @property
    def weights_target(self) -> nn.Module:
        return self.net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.net.forward_features(x)
        if f.ndim == 4:
            return f.permute(0, 3, 1, 2) if self.nhwc else f
        return self.net.forward_head(f, pre_logits=True)


def _as_tuple(v) -> tuple:
    return tuple(v) if isinstance(v, (list, tuple)) else (v,)


def create_timm(name: str, in_chans: int, **kwargs) -> nn.Module:
    """``timm.create_model`` without a classifier and without ever downloading."""
    import timm

    try:
        return timm.create_model(name, pretrained=False, num_classes=0, in_chans=in_chans, **kwargs)
    except RuntimeError as e:
        raise ValueError(f"unknown timm model {name!r} ({e})") from e


@register_backbone("timm:")
def timm_backbone(name: str, *, in_chans: int = 3, in_features: Optional[int] = None, **kwargs) -> Backbone:
    """Any timm model by name, e.g. ``timm:resnet18``; extra keyword arguments go to ``timm.create_model``."""
    need_image_input(f"timm:{name}", in_features)
    return TimmBody(create_timm(name, in_chans, **kwargs))
