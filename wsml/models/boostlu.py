"""BoostLU (Kim et al., CVPR 2023, "Bridging the Gap between Model Explanations in Partially Annotated Multi-label
Classification"): boost the positive part of the class activation maps before global pooling.

With the CAM including the head's bias, M_c(i, j) = w_c · f(i, j) + b_c, the logits become

    z_c = mean_{i,j} BoostLU(M_c(i, j)),    BoostLU(x) = α·x if x > 0 else x      (α = 5)

instead of z_c = mean_{i,j} M_c(i, j) (what ``MultiLabelModel`` computes). The paper trains it together with
LL-R (or LL-Ct / LL-Cp). As in the authors' release, the bias is inside the CAM and BoostLU is used both in
training and in evaluation; ``apply_in_eval=False`` evaluates with the plain logits instead.

``BoostLU(model, alpha=5.0)`` shares the backbone and head of ``model`` (no copy) and keeps the
``MultiLabelModel`` API, so its ``state_dict`` has the same keys as the plain model's. ``cam`` still returns
the raw CAM (the Pointing Game takes its argmax, which BoostLU does not change); ``boosted_cam`` returns the
map whose spatial mean is the logits. On a feature-vector backbone (``linear``, ``mlp``) the "map" is a single
position, so the logits are BoostLU(head(f)). ``forward_head`` on *cached pooled* features (LinearInit stage 1)
raises: the pooled features of a spatial backbone do not determine the boosted logits.

Config: ``model.boostlu_alpha: 5.0`` (``null``/absent = off) wraps the built model with this class; use it with
``loss.name: ll-r``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from wsml.models.model import MultiLabelModel


def boostlu(x: torch.Tensor, alpha: float) -> torch.Tensor:
    """α·x where x > 0, x elsewhere."""
    return torch.where(x > 0, x * alpha, x)


class BoostLU(MultiLabelModel):
    """A ``MultiLabelModel`` whose logits are the spatial mean of BoostLU(CAM + bias); shares ``model``'s modules."""

    def __init__(self, model: MultiLabelModel, alpha: float = 5.0, apply_in_eval: bool = True) -> None:
        if not isinstance(model, MultiLabelModel):
            raise ValueError(f"BoostLU wraps a wsml MultiLabelModel, got {type(model).__name__}")
        if isinstance(model, BoostLU):
            raise ValueError("model already uses BoostLU")
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha <= 0:
            raise ValueError(f"boostlu alpha must be a positive number (the paper uses 5), got {alpha!r}")
        if not isinstance(apply_in_eval, bool):
            raise ValueError(f"apply_in_eval must be True or False, got {apply_in_eval!r}")
        with torch.random.fork_rng(devices=[]):  # the throw-away head's init must not shift the RNG stream
            super().__init__(model.backbone, model.num_classes, name=model.backbone_name)
        self.head = model.head  # shared: the plain model and the wrapper train the same weights
        self.dropout = model.dropout
        self.weights_info = model.weights_info
        self._backbone_frozen = model.backbone_frozen
        self.alpha = float(alpha)
        self.apply_in_eval = apply_in_eval
        self.train(model.training)

    @property
    def boosting(self) -> bool:
        """True when the forward pass uses BoostLU (always in training; in eval when ``apply_in_eval``)."""
        return self.training or self.apply_in_eval

    def boosted_cam(self, x: torch.Tensor) -> torch.Tensor:
        """BoostLU(CAM + bias) ``[B, C, h, w]``; its spatial mean is the logits."""
        return boostlu(self.cam(x, include_bias=True), self.alpha)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.boosting:
            return super().forward(x)
        f = self.backbone(x)
        if f.ndim == 2:  # feature-vector backbone: a single position
            return boostlu(self.head(self.dropout(f)), self.alpha)
        cam = self.cam_from_feature_map(self.dropout(f), include_bias=True)
        return boostlu(cam, self.alpha).mean(dim=(2, 3))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        if not self.boosting:
            return super().forward_head(features)
        if self.spatial:
            raise ValueError("BoostLU needs the feature map: it cannot train or evaluate on cached pooled features "
                             "(LinearInit stage 1); use train.scheme=end-to-end or turn model.boostlu_alpha off")
        return boostlu(super().forward_head(features), self.alpha)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, apply_in_eval={self.apply_in_eval}"


def apply_boostlu(model: nn.Module, alpha: float | None, apply_in_eval: bool = True) -> nn.Module:
    """``BoostLU(model, alpha)`` when ``alpha`` is set, else ``model`` unchanged (the config hook)."""
    if alpha is None:
        return model
    return BoostLU(model, alpha=alpha, apply_in_eval=apply_in_eval)
