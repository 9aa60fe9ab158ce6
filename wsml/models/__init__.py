"""Models: backbones (small CNN, ResNet, EfficientNet-Lite0, timm, torchvision, vector), linear head, CAM.

``create_model(name, num_classes)`` builds a :class:`MultiLabelModel`; ``available_backbones()`` lists names.
Importing this package registers the built-in backbones.
"""

from wsml.models import backbones, efficientnet_lite  # noqa: F401  (registers the built-in backbones)
from wsml.models.model import MultiLabelModel, create_model, upsample_cam
from wsml.models.registry import IMAGENET_MEAN_STD, Backbone, available_backbones, register_backbone
from wsml.models.weights import find_local_weights, load_backbone_weights, read_state_dict, weights_dirs

__all__ = [
    "IMAGENET_MEAN_STD",
    "Backbone",
    "MultiLabelModel",
    "available_backbones",
    "create_model",
    "find_local_weights",
    "load_backbone_weights",
    "read_state_dict",
    "register_backbone",
    "upsample_cam",
    "weights_dirs",
]
