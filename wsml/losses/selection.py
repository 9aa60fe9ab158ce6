"""Exact selection of the large-loss UNOBS entries of a batch (LL-R / LL-Ct / LL-Cp).

For an UNOBS entry the Naive-AN loss is softplus(z), strictly increasing in the logit z, so the k largest
losses are the k largest logits and selection never needs the loss matrix. ``topk_unobserved`` avoids a full
``torch.topk`` over all B·C entries on large batches: it takes the k-th largest of a strided sample (a few
standard deviations past the expected rank) as a threshold τ, keeps the UNOBS entries with z ≥ τ, and runs
``topk`` on those candidates only. When fewer than k candidates pass, it falls back to the full ``topk``, so
the result is always exact: every non-candidate is < τ ≤ every candidate. Exactly min(k, #UNOBS) entries are
returned; ties at the boundary are broken by ``torch.topk``. The routine is deterministic, so DDP ranks that
run it on the same gathered global batch agree.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

SAMPLE_MIN_NUMEL = 1 << 15  # below this, a direct topk is cheaper than sampling
SAMPLE_SIZE = 1 << 14  # target size of the strided sample
_NEG_INF = float("-inf")


def masked_keys(logits: Tensor, targets: Optional[Tensor]) -> Tensor:
    """Selection keys: the logit for UNOBS entries (targets == 0), −inf for observed ones."""
    if targets is None:
        return logits
    return logits.masked_fill(targets != 0, _NEG_INF)


def _coprime_stride(numel: int, num_classes: int) -> int:
    """A stride near numel / SAMPLE_SIZE sharing no factor with C, so the sample visits all classes evenly."""
    s = max(2, numel // SAMPLE_SIZE)
    while math.gcd(s, num_classes) != 1:
        s += 1
    return s


def _topk_sampled(z: Tensor, t: Optional[Tensor], k: int, num_classes: int) -> Optional[Tensor]:
    n = z.numel()
    s = _coprime_stride(n, num_classes)
    sample = masked_keys(z[::s], None if t is None else t[::s])
    ns = sample.numel()
    expected = k * ns / n
    ks = min(ns, math.ceil(expected + 4.0 * math.sqrt(expected) + 8.0))
    tau = float(torch.topk(sample, ks, sorted=False).values.min())
    if tau == _NEG_INF:
        return None
    cand = torch.nonzero(z >= tau).squeeze(1)
    if t is not None:
        cand = cand[t[cand] == 0]
    if cand.numel() < k:
        return None
    return cand[torch.topk(z[cand], k, sorted=False).indices]


def topk_unobserved(logits: Tensor, targets: Optional[Tensor], k: int) -> Tensor:
    """Flat positions (into ``logits.reshape(-1)``) of the k largest logits among UNOBS entries.

    ``targets`` None means the caller already put −inf on the excluded entries (``masked_keys``).
    Returns exactly min(k, #eligible) positions, unordered, as a LongTensor on the logits' device.
    """
    z = logits.detach().reshape(-1)
    t = None if targets is None else targets.reshape(-1)
    n = z.numel()
    k = min(int(k), n)
    if k <= 0:
        return torch.empty(0, dtype=torch.long, device=z.device)
    if n >= SAMPLE_MIN_NUMEL and 8 * k <= n:
        sel = _topk_sampled(z, t, k, logits.shape[-1] if logits.dim() == 2 else 1)
        if sel is not None:
            return sel
    values, pos = torch.topk(masked_keys(z, t), k, sorted=False)
    return pos[values != _NEG_INF]


def loss_threshold_to_logit(r: float) -> float:
    """The logit z* with softplus(z*) = r, so that for UNOBS entries AN loss > r ⇔ z > z* (−inf when r ≤ 0)."""
    if r <= 0:
        return _NEG_INF
    return r + math.log(-math.expm1(-r))  # log(expm1(r)), stable for small and large r


def above_threshold_unobserved(logits: Tensor, targets: Optional[Tensor], r: float) -> Tensor:
    """Flat positions of the UNOBS entries whose AN loss softplus(z) exceeds ``r`` (absolute schedule R(t))."""
    z = logits.detach().reshape(-1)
    keys = masked_keys(z, None if targets is None else targets.reshape(-1))
    return torch.nonzero(keys > loss_threshold_to_logit(r)).squeeze(1)
