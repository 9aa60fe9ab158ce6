"""Partial-BCE with curriculum labelling (Durand, Mehrasa & Mori, CVPR 2019, "Learning a Deep ConvNet for
Multi-label Classification with Partial Labels") — the baseline the Large Loss paper's Table 3 calls Curriculum.

**Partial-BCE**: BCE on the *known* labels only, normalised by the proportion p_b of known labels of the image
(the paper's abstract: "a new classification loss that exploits the proportion of known labels per example"):

    ℓ_b = g(p_b) / C · Σ_{c known} BCE(z_bc, y_bc),    g(p) = a · p^γ + b,   g(1) = 1, g(0.1) = 5

so a = −4 / (1 − 0.1^γ), b = 1 − a (γ = ``gamma`` = 1: a = −4.44, b = 5.44): an image with few known labels
gets a larger weight per label, and with every label known it is plain BCE. The loss is the batch mean of ℓ_b,
i.e. the mean over all B·C entries with unknown ones counting 0. Labels added by the curriculum count as known.

**Curriculum labelling between training rounds** ("several curriculum learning based strategies to predict
missing labels", abstract; the Large Loss paper: it "label[s] some unannotated easy samples using its model
prediction"): train for a round of ``round_epochs`` epochs, then score the whole training set with the model in
evaluation mode (wsml's engine does this through ``wants_train_scores`` / ``on_train_scores``, see
wsml.train.epoch_end), label the easy unknown (UNOBS) pairs, and continue training with them as known labels; the
labels are permanent and kept sparsely in ``state_dict``. Strategies (``strategy``):

* ``"score-proportion"``: the proportion ``theta`` of the still-unknown pairs with the most confident score
  (largest |z|) get the model's decision, POS if z > 0 else NEG;
* ``"score-threshold"``: every unknown pair with z ≥ ``threshold`` becomes POS, with z ≤ −``threshold`` NEG;
* ``"positive-only"``: only the POS half of ``"score-threshold"``.

The paper's other strategies (an ensemble of models' scores; Bayesian uncertainty from Monte-Carlo dropout)
and its GNN label model are not included.

**What is wsml's choice.** This project could read the paper's abstract and introduction but not its method and
experiment sections, so every default here is wsml's, not a published value: ``strategy="score-proportion"``,
``theta=0.1``, ``threshold=2.0``, ``round_epochs=1`` (a round after every epoch but the last), rounds start after
the first round of training on the partial labels alone, and g(0.1) = 5 fixes g's second point. Whether the
paper fine-tunes from the previous round's model (wsml: training simply continues, optimizer and schedule
included) or retrains, how many rounds it runs and its θ per data set are not reproduced from its text.
The Large Loss paper does not say how it ran this baseline for its OpenImages table either.

**Single positive labels.** The Large Loss paper (§4.1, compared methods) reports that methods using only the
observed labels, naming Curriculum labeling and IMCL, "give a trivial solution that predicts all labels as
positive since only positive labels are observed". wsml's reading of why for this loss: with no observed
negative, partial-BCE only pushes scores up, so the confident unknown pairs are labelled POS; it needs observed
negatives (OpenImages' partial labels, ``fashion-mosaic num_neg``).
"""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from wsml.losses._checks import check_choice, check_int, check_number
from wsml.losses._corrections import CorrectionStore
from wsml.losses.base import PartialLoss
from wsml.losses.large_loss import ceil_count
from wsml.losses.registry import register_loss

STRATEGIES = ("score-proportion", "score-threshold", "positive-only")


def partial_bce_weights(gamma: float) -> tuple[float, float]:
    """(a, b) of g(p) = a·p^γ + b with g(1) = 1 and g(0.1) = 5."""
    a = -4.0 / (1.0 - 0.1**gamma)
    return a, 1.0 - a


def partial_bce(logits: Tensor, targets: Tensor, gamma: float) -> Tensor:
    """Durand et al.'s partial-BCE: mean over rows of g(p_b)/C · Σ_{known c} BCE (targets: 1 / 0 unknown / −1)."""
    known = (targets != 0).to(logits.dtype)
    num_classes = logits.shape[1]
    a, b = partial_bce_weights(gamma)
    g = a * (known.sum(1) / num_classes).pow(gamma) + b
    bce = F.binary_cross_entropy_with_logits(logits, (targets == 1).to(logits.dtype), reduction="none")
    return (g * (bce * known).sum(1)).sum() / logits.numel()


def select_easy(scores: Tensor, unknown: Tensor, strategy: str, theta: float, threshold: float) -> tuple[Tensor,
                                                                                                        Tensor]:
    """Flat positions (into ``scores`` [N, C], probabilities) of the unknown pairs a strategy labels, and their
    labels (True = POS). Ties in the proportion strategy go to the smaller flat position."""
    flat_unknown = unknown.reshape(-1)
    p = scores.reshape(-1)
    if strategy == "score-proportion":
        k = ceil_count(theta * float(flat_unknown.sum()))
        conf = (p - 0.5).abs().masked_fill(~flat_unknown, -1.0)
        order = torch.sort(conf, descending=True, stable=True).indices[:k]
        return order, p[order] > 0.5
    hi = torch.sigmoid(torch.tensor(threshold, dtype=p.dtype)).item()  # z >= t  <=>  p >= σ(t)
    pos = flat_unknown & (p >= hi)
    neg = flat_unknown & (p <= 1.0 - hi) if strategy == "score-threshold" else torch.zeros_like(pos)
    sel = (pos | neg).nonzero().squeeze(1)
    return sel, pos[sel]


@register_loss("curriculum", aliases=("curriculum-labeling", "curriculum-labelling", "partial-bce"))
class CurriculumLabeling(PartialLoss):
    """Partial-BCE + curriculum labelling of easy UNOBS pairs between rounds (permanent; needs ``index``)."""

    needs_index = True
    modified_count_per_round = True  # ``num_modified_epoch``: the labels made by the latest round

    def __init__(self, *, strategy: str = "score-proportion", theta: float = 0.1, threshold: float = 2.0,
                 gamma: float = 1.0, round_epochs: int = 1, num_epochs: int = 0) -> None:
        super().__init__()
        self.strategy = check_choice("strategy", strategy, STRATEGIES)
        self.theta = check_number("theta", theta, 0.0, 1.0)
        self.threshold = check_number("threshold", threshold, 0.0)
        self.gamma = check_number("gamma", gamma, 0.0, lo_open=True)
        self.round_epochs = check_int("round_epochs", round_epochs, 1)
        self.num_epochs = check_int("num_epochs", num_epochs, 0)  # 0 = unknown: a round after every round
        self.pos_store = CorrectionStore()
        self.neg_store = CorrectionStore()
        self.labelled_through = 0  # last epoch after which a round was made

    # --- rounds ---------------------------------------------------------------------------------------------
    def _due(self, epoch: int) -> bool:
        """A labelling round follows epoch ``epoch`` (every ``round_epochs`` epochs, none after the last)."""
        last = self.num_epochs == 0 or epoch < self.num_epochs
        active = self.theta > 0 if self.strategy == "score-proportion" else True
        return active and last and epoch % self.round_epochs == 0

    def wants_train_scores(self, epoch: int) -> bool:
        """Engine hook (wsml.train.epoch_end): eval-mode training-set scores after epoch ``epoch`` are needed."""
        return self._due(epoch) and epoch > self.labelled_through

    @torch.no_grad()
    def on_train_scores(self, scores: Tensor, rows: Tensor, observed: Tensor) -> None:
        """One labelling round from eval-mode scores ``[N, C]`` (probabilities) of training rows ``rows`` with
        observed labels ``observed``; pairs observed or labelled before are never relabelled."""
        C = scores.shape[1]
        rows = rows.long()
        known = self._known(observed.to(rows.device), rows)
        sel, positive = select_easy(scores, known == 0, self.strategy, self.theta, self.threshold)
        r, c = rows[sel // C], sel % C
        self.pos_store.add(r[positive], c[positive], C)
        self.neg_store.add(r[~positive], c[~positive], C)
        self.count_modified(int(sel.numel()))
        self.labelled_through = self.epoch

    def set_epoch(self, epoch: int) -> None:
        previous = epoch - 1
        if self._due(previous) and self.epoch == previous and previous > self.labelled_through:
            raise ValueError(f"curriculum labelling got no training-set scores after epoch {previous}: call "
                             "loss_fn.on_train_scores(scores, rows, observed) after each epoch when "
                             "loss_fn.wants_train_scores(epoch) (wsml's engine does)")
        super().set_epoch(epoch)

    # --- loss -----------------------------------------------------------------------------------------------
    def _known(self, targets: Tensor, index: Tensor) -> Tensor:
        """Targets with the curriculum labels of these rows filled in (observed labels are never changed)."""
        C = targets.shape[1]
        out = targets
        for store, value in ((self.pos_store, 1), (self.neg_store, -1)):
            if len(store):
                pos, classes = store.lookup(index, C)
                if pos.numel():
                    if out is targets:
                        out = targets.clone()
                    keep = targets[pos, classes] == 0
                    out[pos[keep], classes[keep]] = value
        return out

    def compute(self, logits: Tensor, targets: Tensor, index: Optional[Tensor]) -> Tensor:
        if int(index.min()) < 0:
            raise ValueError(f"curriculum index values (dataset row ids) must be >= 0, got {int(index.min())}")
        return partial_bce(logits, self._known(targets, index.long()), self.gamma)

    def labels(self) -> tuple[Tensor, Tensor, Tensor]:
        """(rows, classes, labels ±1) of every curriculum label so far, positives first."""
        pr, pc = self.pos_store.pairs()
        nr, nc = self.neg_store.pairs()
        values = torch.cat([torch.ones(pr.numel(), dtype=torch.long), -torch.ones(nr.numel(), dtype=torch.long)])
        return torch.cat([pr.cpu(), nr.cpu()]), torch.cat([pc.cpu(), nc.cpu()]), values

    def get_extra_state(self) -> dict[str, Any]:
        state = super().get_extra_state()
        state.update(curriculum_pos=self.pos_store.state(), curriculum_neg=self.neg_store.state(),
                     labelled_through=self.labelled_through)
        return state

    def set_extra_state(self, state: dict[str, Any]) -> None:
        super().set_extra_state(state)
        if "curriculum_pos" in state:
            self.pos_store.load(state["curriculum_pos"])
        if "curriculum_neg" in state:
            self.neg_store.load(state["curriculum_neg"])
        self.labelled_through = int(state.get("labelled_through", 0))

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, strategy={self.strategy!r}, theta={self.theta}, threshold={self.threshold}, "
                f"gamma={self.gamma}, round_epochs={self.round_epochs}, num_epochs={self.num_epochs}, "
                f"labelled={len(self.pos_store) + len(self.neg_store)}")
