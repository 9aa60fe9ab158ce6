"""IU + smoothness: Naive IU's BCE on observed labels plus two graph-smoothness terms on the predictions.

**This is not IMCL** (Huynh & Elhamifar, CVPR 2020, "Interactive Multi-Label CNN Learning with Partial
Labels"), and it must not fill the IMCL row of the Large Loss paper's Table 3. wsml used to register it as
``imcl``; it was renamed because it keeps none of IMCL's machinery. The authors' release (hbdat/cvpr20_IMCL,
TensorFlow) codes each image sparsely over a dictionary of other images' features and labels by orthogonal
matching pursuit (colaborative_loss.py, ``e2e_OMP_asym_sigmoid_Feature_Graph``), predicts with an asymmetric
sigmoid (``asym_sigmoid``), clamps the known labels in the propagated predictions (``is_clamp_label``) and learns
a label graph G interactively with the CNN. A faithful PyTorch port was out of this release's scope; wsml offers
no IMCL.

What this loss is (p = σ(z), mean over all B·C entries):

    L = 1/(BC) · [ Σ_{observed (b,c)} BCE(z_bc, y_bc)
                   + λ_label · Σ_b Σ_{c,c'} A_cc' (p_bc − p_bc')²        label smoothness
                   + λ_image · Σ_{i,j} W_ij ‖p_i − p_j‖² ]                image smoothness

* A (C × C) is the cosine similarity of the label columns of the observed positives seen so far,
  A_cc' = N_cc' / √(N_c N_c'), zero diagonal, N counting co-observed positive pairs, updated from every batch and
  kept in ``state_dict`` (C × C memory). With one observed positive per image no pair is ever co-observed, so A
  stays exactly 0 and the label term vanishes.
* W (B × B) links each image to its ``num_neighbors`` nearest images of the batch by cosine similarity of the
  detached logit vectors (weights max(cos, 0), symmetrised).

The weights λ (0.1 each) and k = 3 are wsml's choices. The BCE is summed over observed entries and divided by
all B·C entries (Naive IU's scaling), so with λ = 0 it is exactly ``iu``. Like IU, it collapses towards
predicting every label positive when only positives are observed. Under DDP each rank keeps its own A.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from wsml.losses._checks import check_int, check_number
from wsml.losses.base import PartialLoss, check_state_fits
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


@register_loss("iu-smooth", aliases=("iu-graph-smooth",))
class IUSmooth(PartialLoss):
    """BCE on observed labels + label-graph and image-graph smoothness of the predictions (see module doc)."""

    example_hparams = {"num_classes": 8}

    def __init__(self, *, num_classes: int, lambda_label: float = 0.1, lambda_image: float = 0.1,
                 num_neighbors: int = 3) -> None:
        super().__init__()
        self.num_classes = check_int("num_classes", num_classes)
        self.lambda_label = check_number("lambda_label", lambda_label, 0.0)
        self.lambda_image = check_number("lambda_image", lambda_image, 0.0)
        self.num_neighbors = check_int("num_neighbors", num_neighbors, 1)
        self.register_buffer("cooc", torch.zeros(self.num_classes, self.num_classes))

    def compute(self, logits: Tensor, targets: Tensor, index: Optional[Tensor]) -> Tensor:
        check_state_fits(logits, "iu-smooth", self.num_classes, self.cooc, "label graph")
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
