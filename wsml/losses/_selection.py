"""Exact selection of the large-loss UNOBS entries of a batch (LL-R / LL-Ct / LL-Cp).

For an UNOBS entry the Naive-AN loss is softplus(z), strictly increasing in the logit z, so the k largest
losses are the k largest logits and selection never needs the loss matrix. ``topk_unobserved`` avoids a full
``torch.topk`` over all B·C entries on large batches: it takes the k-th largest of a strided sample (a few
standard deviations past the expected rank) as a threshold τ, keeps the UNOBS entries with z ≥ τ, and runs
``topk`` on those candidates only (on CPU with numpy's ``flatnonzero``/``argpartition``, much faster there).
When fewer than k UNOBS candidates pass, it falls back to the full ``topk``, so
the result is always exact: every non-candidate is < τ ≤ every candidate. Exactly min(k, #UNOBS) entries are
returned; ties at the boundary are broken by ``torch.topk``. The routine is deterministic, so DDP ranks that
run it on the same gathered global batch agree.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch
from torch import Tensor

SAMPLE_MIN_NUMEL = 1 << 14  # below this, a direct topk is cheaper than sampling (measured on CPU)
SAMPLE_SIZE = 1 << 12  # target size of the strided sample
EXCLUDED = -1e30  # key offset of observed entries; keys <= EXCLUDED_BELOW are never selected
EXCLUDED_BELOW = -1e29
_NEG_INF = float("-inf")
_BLOCKS = 8


def masked_keys(logits: Tensor, targets: Optional[Tensor]) -> Tensor:
    """Selection keys: the logit for UNOBS entries, logit − 1e30 for observed ones (one fused op).

    Half-precision logits are promoted to float32 so that the offset stays finite.
    """
    if targets is None:
        return logits
    if logits.dtype not in (torch.float32, torch.float64):
        logits = logits.float()
    if targets.dtype == logits.dtype:
        return torch.addcmul(logits, targets, targets, value=EXCLUDED)
    return torch.add(logits, targets.abs(), alpha=EXCLUDED)


def _coprime_stride(numel: int, num_classes: int) -> int:
    """A stride near numel / SAMPLE_SIZE sharing no factor with C, so the sample visits all classes evenly."""
    s = max(2, numel // SAMPLE_SIZE)
    while math.gcd(s, num_classes) != 1:
        s += 1
    return s


def positions_at_least(z: Tensor, tau: float) -> Tensor:
    """Flat positions of the entries of the 1-D tensor ``z`` with z >= tau (deterministic order).

    Two-level: the element-wise max over 8 contiguous slices finds the few slice columns holding a hit, and
    only those columns are compared; much cheaper than ``nonzero`` over everything when hits are rare.
    """
    n = z.numel()
    m = n // _BLOCKS
    if m == 0:
        return torch.nonzero(z >= tau).squeeze(1)
    grid = z[: _BLOCKS * m].view(_BLOCKS, m)
    cols = torch.nonzero(grid.amax(0) >= tau).squeeze(1)
    hit = torch.nonzero(grid.index_select(1, cols) >= tau)
    pos = hit[:, 0] * m + cols[hit[:, 1]]
    if _BLOCKS * m < n:
        pos = torch.cat([pos, _BLOCKS * m + torch.nonzero(z[_BLOCKS * m :] >= tau).squeeze(1)])
    return pos


def _sample_plan(n: int, k: int, num_classes: int) -> tuple[int, int]:
    """(stride, rank in the sample): the sample's ks-th largest key is ≤ the global k-th largest with high
    probability (expected rank + 4 standard deviations + 8); if not, the caller falls back to a full topk."""
    s = _coprime_stride(n, num_classes)
    ns = -(-n // s)
    expected = k * ns / n
    return s, min(ns, math.ceil(expected + 4.0 * math.sqrt(expected) + 8.0))


def _topk_sampled_torch(z: Tensor, t: Optional[Tensor], k: int, num_classes: int) -> Optional[Tensor]:
    s, ks = _sample_plan(z.numel(), k, num_classes)
    sample = masked_keys(z[::s], None if t is None else t[::s])
    tau = float(torch.topk(sample, ks, sorted=False).values.min())
    if not tau > EXCLUDED_BELOW:
        return None
    cand = positions_at_least(z, tau)  # every entry >= tau, observed ones included
    if cand.numel() < k:
        return None
    values, top = torch.topk(masked_keys(z[cand], None if t is None else t[cand]), k, sorted=False)
    if float(values.min()) <= EXCLUDED_BELOW:  # fewer than k UNOBS candidates
        return None
    return cand[top]


def _topk_sampled_numpy(z: Tensor, t: Optional[Tensor], k: int, num_classes: int) -> Optional[Tensor]:
    """CPU version: numpy's comparisons, ``flatnonzero`` and ``argpartition`` are several times faster there."""
    zn = z.numpy()
    if zn.dtype not in (np.float32, np.float64):
        zn = zn.astype(np.float32)
    tn = None if t is None else t.numpy()
    s, ks = _sample_plan(zn.size, k, num_classes)
    sample = zn[::s] if tn is None else np.where(tn[::s] == 0, zn[::s], -np.inf)
    tau = np.partition(sample, sample.size - ks)[sample.size - ks]
    if not tau > EXCLUDED_BELOW:
        return None
    cand = np.flatnonzero(zn >= tau)
    if tn is not None:
        cand = cand[tn[cand] == 0]
    m = cand.size
    if m < k:
        return None
    if m > k:  # exactly k: all candidates above the k-th largest value v, then the first ties at v
        zc = zn[cand]
        v = np.partition(zc, m - k)[m - k]
        above, tied = np.flatnonzero(zc > v), np.flatnonzero(zc == v)
        cand = cand[np.concatenate([above, tied[: k - above.size]])]
    return torch.from_numpy(cand.astype(np.int64, copy=False))


def topk_unobserved(logits: Tensor, targets: Optional[Tensor], k: int) -> Tensor:
    """Flat positions (into ``logits.reshape(-1)``) of the k largest logits among UNOBS entries.

    ``targets`` None means ``logits`` already are selection keys (``masked_keys``; −inf also excluded).
    Returns exactly min(k, #eligible) positions, unordered, as a LongTensor on the logits' device (an UNOBS
    logit below −1e29, whose loss is 0 anyway, counts as not eligible).
    """
    z = logits.detach().reshape(-1)
    if z.dtype == torch.bfloat16 and z.device.type == "cpu":
        z = z.float()  # numpy has no bfloat16; float32 holds every bfloat16 value exactly (same order)
    n = z.numel()
    if k > n:
        k = n
    if k <= 0:
        return torch.empty(0, dtype=torch.long, device=z.device)
    t = None if targets is None else targets.reshape(-1)
    if n >= SAMPLE_MIN_NUMEL and 8 * k <= n:
        sampled = _topk_sampled_numpy if z.device.type == "cpu" else _topk_sampled_torch
        sel = sampled(z, t, k, logits.shape[-1])
        if sel is not None:
            return sel
    values, pos = torch.topk(masked_keys(z, t), k)
    if float(values[-1]) <= EXCLUDED_BELOW:  # fewer than k eligible entries
        pos = pos[values > EXCLUDED_BELOW]
    return pos


def loss_threshold_to_logit(r: float) -> float:
    """The logit z* with softplus(z*) = r, so that for UNOBS entries AN loss > r ⇔ z > z* (−inf when r ≤ 0)."""
    if r <= 0:
        return _NEG_INF
    return r + math.log(-math.expm1(-r))  # log(expm1(r)), stable for small and large r


def above_threshold_unobserved(logits: Tensor, targets: Optional[Tensor], r: float) -> Tensor:
    """Flat positions of the UNOBS entries whose AN loss softplus(z) exceeds ``r`` (absolute schedule R(t)).

    ``targets`` None means ``logits`` already are selection keys (``masked_keys``).
    """
    z = logits.detach().reshape(-1)
    thr = loss_threshold_to_logit(r)
    if targets is None:
        thr = max(thr, EXCLUDED_BELOW)
    if z.device.type == "cpu" and z.dtype in (torch.float32, torch.float64):
        pos = torch.from_numpy(np.flatnonzero(z.numpy() > thr).astype(np.int64, copy=False))
    else:
        pos = torch.nonzero(z > thr).squeeze(1)
    return pos if targets is None else pos[targets.reshape(-1)[pos] == 0]
