"""EM and EM+APL (Zhou et al., ECCV 2022, "Acknowledging the Unknown for Multi-label Learning with Single Positive
Labels"): unobserved labels are treated as *unknown*, not negative.

**EM** (entropy maximisation), p = σ(z), mean over all B·C entries:

    POS: −log p          NEG: −log(1 − p)          UNOBS: −α · H(p),  H(p) = −p log p − (1 − p) log(1 − p)

α (``alpha``): VOC 0.2, COCO 0.1, NUS 0.1, CUB 0.01.

**EM+APL** adds asymmetric pseudo-labelling with a self-paced procedure: after each epoch t ≥ ``warmup_epoch``,
for every class c the n_c = ⌊``neg_proportion`` · U_c / (``num_epochs`` − ``warmup_epoch``)⌋ UNOBS entries
with the lowest predicted probability that are not pseudo-labelled yet become *soft negative* pseudo-labels
with target s = the probability predicted then (U_c = number of UNOBS entries of class c in the training set);
there are num_epochs − warmup_epoch such rounds, after epochs warmup_epoch … num_epochs − 1 (a longer run
gets no further rounds).
No positive pseudo-labels are made (the asymmetric tolerance: false positives are much more harmful than
false negatives in single-positive data). Pseudo-labelled entries then have loss β · BCE(z, s), β = ``beta``.
Defaults per data set (authors): warm-up VOC 5, COCO 5, NUS 4, CUB 3; β VOC 0.02, COCO 0.9, NUS 0.2,
CUB 0.4; neg_proportion 0.9; 10 epochs. The defaults here are COCO's.

**Where the pseudo-labels come from (``pseudo_source``).**

* ``"eval"`` (default, the authors' procedure: SPML-AckTheUnknown main.py lines 113-116 and 244-296): after
  each epoch t with ``warmup_epoch`` <= t < ``num_epochs`` the training loop runs the model in evaluation mode
  over the whole training set and hands the scores to ``on_train_scores`` (wsml.train.epoch_end), which makes the
  round's pseudo-labels. wsml's engine does this; code that drives the loss itself must call
  ``on_train_scores(scores, rows, observed)`` after such an epoch, or ``set_epoch`` raises instead of silently
  skipping the round. The authors score the training loader, i.e. with its random flips; wsml scores the
  training images without augmentation.
* ``"train"`` (wsml's earlier variant): the loss records the detached *training-mode* predictions of every
  entry it sees during epoch t and pseudo-labels from them when ``set_epoch(t + 1)`` is called; no extra pass.
  Three N × C tensors kept in ``state_dict``; under DDP the recorded predictions are merged over ranks.

**Logarithms (``log_eps``).** The authors compute every log as log(x + 1e-5) (losses.py lines 153-157);
``log_eps=1e-5`` does the same; ``log_eps=0`` (default, wsml's choice) uses the exact log-sigmoid forms. The
reproduction configs set the authors' value; they also stop at the first epoch whose val mAP does not improve
(``train.early_stop_patience: 1``, main.py lines 126-134).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from wsml.losses._checks import check_choice, check_int, check_number
from wsml.losses.base import PartialLoss, check_row_ids, check_state_fits
from wsml.losses.distributed import world_size
from wsml.losses.registry import register_loss


def neg_entropy(logits: Tensor) -> Tensor:
    """Per-entry p·log p + (1 − p)·log(1 − p) = −H(σ(z)), computed from logits."""
    p = torch.sigmoid(logits)
    return p * F.logsigmoid(logits) + (1.0 - p) * F.logsigmoid(-logits)


def log_p(logits: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """(log p, log(1 − p)) for p = σ(z): exact log-sigmoids when ``eps`` is 0, else the authors' log(x + eps)."""
    if eps == 0:
        return F.logsigmoid(logits), F.logsigmoid(-logits)
    p = torch.sigmoid(logits)
    return torch.log(p + eps), torch.log(1.0 - p + eps)


def em_terms(logits: Tensor, targets: Tensor, alpha: float, eps: float = 0.0) -> Tensor:
    """Per-entry EM loss: −log p (POS), −log(1 − p) (NEG), −α·H(p) (UNOBS), logs as ``log_p``."""
    lp, lq = log_p(logits, eps)
    p = torch.sigmoid(logits)
    return torch.where(targets == 1, -lp, torch.where(targets == -1, -lq, alpha * (p * lp + (1.0 - p) * lq)))


def soft_bce(logits: Tensor, soft: Tensor, eps: float) -> Tensor:
    """Per-entry BCE against soft targets s: −s·log p − (1 − s)·log(1 − p), logs as ``log_p``."""
    if eps == 0:
        return F.binary_cross_entropy_with_logits(logits, soft, reduction="none")
    lp, lq = log_p(logits, eps)
    return -(soft * lp + (1.0 - soft) * lq)


@register_loss("em", aliases=("entropy-maximization",))
class EntropyMaximization(PartialLoss):
    """EM: BCE on observed labels, α-weighted entropy maximisation on UNOBS labels."""

    def __init__(self, *, alpha: float = 0.1, log_eps: float = 0.0) -> None:
        super().__init__()
        self.alpha = check_number("alpha", alpha, 0.0)
        self.log_eps = check_number("log_eps", log_eps, 0.0, 1.0)

    def compute(self, logits: Tensor, targets: Tensor, index: Optional[Tensor]) -> Tensor:
        return em_terms(logits, targets, self.alpha, self.log_eps).mean()

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, alpha={self.alpha}, log_eps={self.log_eps}"


@register_loss("em-apl", aliases=("em+apl", "apl"))
class EMAPL(EntropyMaximization):
    """EM+APL: EM plus soft negative pseudo-labels made per class after each epoch >= ``warmup_epoch``."""

    needs_index = True
    SOURCES = ("eval", "train")
    example_hparams = {"num_samples": 16, "num_classes": 8, "warmup_epoch": 1, "num_epochs": 3}

    def __init__(self, *, num_samples: int, num_classes: int, alpha: float = 0.1, beta: float = 0.9,
                 warmup_epoch: int = 5, num_epochs: int = 10, neg_proportion: float = 0.9,
                 pseudo_source: str = "eval", log_eps: float = 0.0) -> None:
        super().__init__(alpha=alpha, log_eps=log_eps)
        self.num_samples = check_int("num_samples", num_samples)
        self.num_classes = check_int("num_classes", num_classes)
        self.beta = check_number("beta", beta, 0.0)
        self.warmup_epoch = check_int("warmup_epoch", warmup_epoch)
        self.num_epochs = check_int("num_epochs", num_epochs)
        if self.num_epochs <= self.warmup_epoch:
            raise ValueError(f"num_epochs ({num_epochs}) must be larger than warmup_epoch ({warmup_epoch}): "
                             "APL spreads the pseudo-labels over the epochs after the warm-up")
        self.neg_proportion = check_number("neg_proportion", neg_proportion, 0.0, 1.0)
        self.pseudo_source = check_choice("pseudo_source", pseudo_source, self.SOURCES)
        shape = (self.num_samples, self.num_classes)
        self.register_buffer("pseudo", torch.full(shape, -1.0))  # soft pseudo-labels (-1 = none)
        if pseudo_source == "train":  # predictions recorded in the current epoch (-1 = not seen), UNOBS mask
            self.register_buffer("recorded", torch.full(shape, -1.0))
            self.register_buffer("unobserved", torch.zeros(shape, dtype=torch.bool))
            self.register_buffer("seen", torch.zeros(self.num_samples, dtype=torch.bool))
        self.labelled_through = 0  # last epoch whose predictions were turned into pseudo-labels

    # --- pseudo-labelling -----------------------------------------------------------------------------------
    def _due(self, epoch: int) -> bool:
        """A round follows epoch ``epoch``: warmup_epoch <= epoch < num_epochs (num_epochs − warmup_epoch rounds)."""
        return self.warmup_epoch <= epoch < self.num_epochs

    def wants_train_scores(self, epoch: int) -> bool:
        """Engine hook (wsml.train.epoch_end): eval-mode training-set scores after epoch ``epoch`` are needed."""
        return self.pseudo_source == "eval" and self._due(epoch) and epoch > self.labelled_through

    @torch.no_grad()
    def on_train_scores(self, scores: Tensor, rows: Tensor, observed: Tensor) -> None:
        """One APL round from eval-mode scores ``[N, C]`` of training rows ``rows`` with observed labels
        ``observed``; the per-class count uses U_c of the rows given (the whole training set from the engine)."""
        rows = check_row_ids(rows.to(self.pseudo.device), self.num_samples)
        unobs = observed.to(self.pseudo.device) == 0
        self._label(rows, scores.to(self.pseudo), unobs, unobs.sum(0))
        self.labelled_through = self.epoch

    def set_epoch(self, epoch: int) -> None:
        previous = epoch - 1
        if self.pseudo_source == "eval":
            if self._due(previous) and self.epoch == previous and previous > self.labelled_through:
                raise ValueError(f"EM+APL (pseudo_source='eval') got no training-set scores after epoch {previous}: "
                                 "call loss_fn.on_train_scores(scores, rows, observed) after each epoch when "
                                 "loss_fn.wants_train_scores(epoch) (wsml's engine does), or use pseudo_source='train'")
        elif self._due(previous) and previous > self.labelled_through and self.epoch == previous:
            self._merge_ranks()
            seen = self.seen.nonzero().squeeze(1)
            self._label(seen, self.recorded[seen], self.unobserved[seen], self.unobserved.sum(0))
            self.labelled_through = previous
        if self.pseudo_source == "train" and epoch != self.epoch:
            self.recorded.fill_(-1.0)
        super().set_epoch(epoch)

    def _merge_ranks(self) -> None:
        if world_size() > 1:
            import torch.distributed as dist

            for t in (self.recorded, self.unobserved, self.seen):
                as_float = t.float()
                dist.all_reduce(as_float, op=dist.ReduceOp.MAX)
                t.copy_(as_float.to(t.dtype))

    def _label(self, rows: Tensor, scores: Tensor, unobs: Tensor, unobs_per_class: Tensor) -> None:
        """Per class c, the ⌊neg_proportion · U_c / rounds⌋ lowest-scored UNOBS entries not yet pseudo-labelled
        become soft negatives with target = their score (main.py lines 279-296)."""
        rounds = self.num_epochs - self.warmup_epoch
        per_class = (self.neg_proportion * unobs_per_class.double() / rounds).floor().long().tolist()
        candidates = unobs & (self.pseudo[rows] < 0) & (scores >= 0)
        for c, n in enumerate(per_class):
            local = candidates[:, c].nonzero().squeeze(1)
            n = min(n, local.numel())
            if n <= 0:
                continue
            # lowest scores first; stable sort so ties go to the smaller row id on every rank
            chosen = local[torch.sort(scores[local, c], stable=True).indices[:n]]
            self.pseudo[rows[chosen], c] = scores[chosen, c]

    def pseudo_labels(self) -> tuple[Tensor, Tensor, Tensor]:
        """(rows, classes, soft targets) of all pseudo-labels so far."""
        rows, classes = (self.pseudo >= 0).nonzero(as_tuple=True)
        return rows, classes, self.pseudo[rows, classes]

    # --- loss -----------------------------------------------------------------------------------------------
    def compute(self, logits: Tensor, targets: Tensor, index: Optional[Tensor]) -> Tensor:
        check_state_fits(logits, "EM+APL", self.num_classes, self.pseudo, "state")
        index = check_row_ids(index, self.num_samples)
        if self.pseudo_source == "train":
            with torch.no_grad():
                new = ~self.seen[index]
                if bool(new.any()):
                    self.unobserved[index[new]] = targets[new] == 0
                    self.seen[index[new]] = True
                self.recorded[index] = torch.sigmoid(logits.detach()).to(self.recorded.dtype)
        soft = self.pseudo[index].to(logits.dtype)
        labelled = (targets == 0) & (soft >= 0)
        self.count_modified(int(labelled.sum()))
        pl = self.beta * soft_bce(logits, soft.clamp(min=0.0), self.log_eps)
        return torch.where(labelled, pl, em_terms(logits, targets, self.alpha, self.log_eps)).mean()

    def get_extra_state(self) -> dict:
        state = super().get_extra_state()
        state["labelled_through"] = self.labelled_through
        return state

    def set_extra_state(self, state: dict) -> None:
        super().set_extra_state(state)
        self.labelled_through = int(state.get("labelled_through", 0))

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, beta={self.beta}, warmup_epoch={self.warmup_epoch}, "
                f"num_epochs={self.num_epochs}, neg_proportion={self.neg_proportion}, "
                f"pseudo_source={self.pseudo_source!r}, num_samples={self.num_samples}, num_classes={self.num_classes}")
