"""IMCL, lightweight (after Huynh & Elhamifar, CVPR 2020, "Interactive Multi-Label CNN Learning with Partial Labels").

IMCL regularises the cross-entropy on observed labels with the smoothness of the predictions over a *label*
similarity graph and an *image* similarity graph, and learns those similarities interactively with the CNN.
This loss keeps that structure with cheap, per-batch similarities (p = σ(z), mean over all B·C entries):

    L = 1/(BC) · [ Σ_{observed (b,c)} BCE(z_bc, y_bc)
                   + λ_label · Σ_b Σ_{c,c'} A_cc' (p_bc − p_bc')²        label smoothness
                   + λ_image · Σ_{i,j} W_ij ‖p_i − p_j‖² ]                image smoothness

* A (C × C) is the cosine similarity of the label columns of the *observed positives* seen so far,
  A_cc' = N_cc' / √(N_c N_c'), zero diagonal, where N counts co-observed positive pairs. It is updated online
  from every batch (a running estimate, "interactive" in the sense that it improves during training); kept in
  ``state_dict``. Memory is C × C (100 MB for OpenImages' 5000 classes).
* W (B × B) links each image to its ``num_neighbors`` nearest images of the batch by cosine similarity of the
  detached logit vectors (weights max(cos, 0), symmetrised). The paper learns a sparse image similarity from CNN
  features; the loss only sees logits, so the logit space stands in for the feature space.

What is *not* reproduced: the paper's alternating optimisation of the similarity matrices as separate
sub-problems, its feature-smoothness term and its global image graph. Weights λ are ours (the paper tunes
them per data set); both default to 0.1. Observed entries only get the BCE term, like Naive IU, so with single
positive labels (no observed negatives) the smoothness terms cannot stop the collapse towards predicting all
labels positive that the Large Loss paper reports for IMCL in that setting. Under DDP each rank keeps its own
running A (estimated from its share of the data).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from wsml.losses.base import PartialLoss, check_state_fits
from wsml.losses.checks import check_int, check_number
from wsml.losses.registry import register_loss


def label_similarity(cooc: Tensor) -> Tensor:
    """A_cc' = N_cc' / √(N_c N_c') with a zero diagonal (0 where a class has no observed positive)."""
    diag = cooc.diagonal().clamp(min=0)
    inv = torch.where(diag > 0, diag.rsqrt(), torch.zeros_like(diag))
    sim = cooc * inv[:, None] * inv[None, :]
    return sim.fill_diagonal_(0.0)


def knn_image_graph(logits: Tensor, num_neighbors: int) -> Tensor:
    """Symmetric B × B weights: each row's ``num_neighbors`` most cosine-similar other rows, weight max(cos, 0)."""
    B = logits.shape[0]
    k = min(num_neighbors, B - 1)
    if k <= 0:
        return logits.new_zeros(B, B)
    zn = F.normalize(logits.detach(), dim=1)
    sim = zn @ zn.T
    sim.fill_diagonal_(float("-inf"))
    vals, nbrs = torch.topk(sim, k, dim=1)
    W = logits.new_zeros(B, B).scatter_(1, nbrs, vals.clamp(min=0.0))
    return 0.5 * (W + W.T)


def graph_smoothness(values: Tensor, weights: Tensor, dim: int) -> Tensor:
    """Σ_{u,v} weights_uv ‖values_u − values_v‖² over index ``dim`` of ``values`` (0: rows, 1: columns)."""
    x = values if dim == 0 else values.T
    degree = weights.sum(1)
    return 2.0 * (degree * x.pow(2).sum(1)).sum() - 2.0 * (x * (weights @ x)).sum()


@register_loss("imcl")
class IMCL(PartialLoss):
    """BCE on observed labels + label-graph and image-graph smoothness of the predictions (see module doc)."""

    def __init__(self, *, num_classes: int, lambda_label: float = 0.1, lambda_image: float = 0.1,
                 num_neighbors: int = 3) -> None:
        super().__init__()
        self.num_classes = check_int("num_classes", num_classes)
        self.lambda_label = check_number("lambda_label", lambda_label, 0.0)
        self.lambda_image = check_number("lambda_image", lambda_image, 0.0)
        self.num_neighbors = check_int("num_neighbors", num_neighbors, 1)
        self.register_buffer("cooc", torch.zeros(self.num_classes, self.num_classes))

    def compute(self, logits: Tensor, targets: Tensor, index: Optional[Tensor]) -> Tensor:
        check_state_fits(logits, "IMCL", self.num_classes, self.cooc, "label graph")
        with torch.no_grad():
            pos = (targets == 1).to(self.cooc.dtype)
            self.cooc += pos.T @ pos
        observed = targets.abs().to(logits.dtype)
        y = (targets == 1).to(logits.dtype)
        total = F.binary_cross_entropy_with_logits(logits, y, weight=observed, reduction="sum")
        p = torch.sigmoid(logits)
        if self.lambda_label > 0:
            A = label_similarity(self.cooc).to(p.dtype)
            total = total + self.lambda_label * graph_smoothness(p, A, dim=1)
        if self.lambda_image > 0:
            total = total + self.lambda_image * graph_smoothness(p, knn_image_graph(logits, self.num_neighbors), dim=0)
        return total / logits.numel()

    def label_graph(self) -> Tensor:
        """The current label similarity A (C × C)."""
        return label_similarity(self.cooc)

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, num_classes={self.num_classes}, lambda_label={self.lambda_label}, "
                f"lambda_image={self.lambda_image}, num_neighbors={self.num_neighbors}")
