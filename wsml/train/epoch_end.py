"""End-of-epoch steps of the training loop that some methods need (kept out of engine.py).

* **Training-set scores.** Methods that label between epochs (EM+APL's pseudo-labels, Curriculum labelling's
  rounds) need the model's predictions on the whole training set *in evaluation mode* after an epoch. A loss asks
  for them with ``wants_train_scores(epoch) -> bool`` and receives ``on_train_scores(scores, rows, observed)``:
  sigmoid scores float32 ``[N, C]``, their training-split row ids ``[N]`` (sorted) and the observed labels of
  those rows (int8 ``{1, 0, -1}``). Under DDP every rank receives the same gathered arrays. Memory: N × C floats.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch


def wants_train_scores(loss_fn, epoch: int) -> bool:
    """True when ``loss_fn`` asks for the training set's eval-mode scores after loss epoch ``epoch``."""
    ask = getattr(loss_fn, "wants_train_scores", None)
    return bool(ask is not None and ask(epoch))


def feed_train_scores(loss_fn, forward: Callable, loader, split, device: torch.device) -> int:
    """Score the training split with ``forward`` (the model in eval mode; ``loader`` without augmentation) and
    hand the scores to the loss; returns the number of rows scored."""
    from wsml.evaluation import predict_split

    with torch.no_grad():
        scores, rows = predict_split(forward, loader, device)  # fp32, as every evaluation
    observed = np.asarray(split.train_targets()[rows], dtype=np.int8)
    loss_fn.on_train_scores(torch.from_numpy(scores).to(device), torch.from_numpy(rows).to(device),
                            torch.from_numpy(observed).to(device))
    return int(len(rows))
