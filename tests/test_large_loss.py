"""LL-R / LL-Ct / LL-Cp (Kim et al. 2022): schedule, exact selection, values, gradients and LL-Cp memory.

Expected values come from the short float64 reference implementation ``wsml.losses.reference`` (full topk).
"""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from wsml.losses import build_loss, reference
from wsml.losses._corrections import CorrectionStore
from wsml.losses._kernels import FUSED_MIN_NUMEL, RejectedBCE, rejected_bce
from wsml.losses._selection import (
    _topk_sampled_numpy,
    _topk_sampled_torch,
    loss_threshold_to_logit,
    masked_keys,
    positions_at_least,
    topk_unobserved,
)


def brute_topk(zn: np.ndarray, tn: np.ndarray, k: int) -> set[int]:
    """The k largest AN losses among UNOBS entries (the reference implementation, float64)."""
    return set(reference.largest_unobserved(torch.from_numpy(zn).double(), torch.from_numpy(tn), k).tolist())


def np_ll(zn: np.ndarray, tn: np.ndarray, sel: set[int], correct: bool) -> float:
    """Mean LL loss with the selection ``sel`` (the reference implementation, float64)."""
    idx = torch.tensor(sorted(sel), dtype=torch.long)
    return float(reference.per_entry(torch.from_numpy(zn).double(), torch.from_numpy(tn), idx, correct).mean())


def single_positive(b: int, c: int, seed: int, neg_rows: int = 0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, c, generator=g, dtype=dtype) * 2 - 1
    targets = torch.zeros(b, c, dtype=torch.int8)
    targets[torch.arange(b), torch.randint(0, c, (b,), generator=g)] = 1
    for r in range(neg_rows):
        targets[r, (targets[r] == 0).nonzero()[:3, 0]] = -1
    return logits, targets


def flat(rows: torch.Tensor, classes: torch.Tensor, c: int) -> set[int]:
    return set((rows * c + classes).tolist())


# --- relative schedule ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["ll-r", "ll-ct", "ll-cp"])
def test_epoch_one_modifies_nothing(name: str) -> None:
    z, t = single_positive(8, 6, seed=0, neg_rows=2)
    loss = build_loss(name, delta_rel=50.0)
    value = loss(z, t, torch.arange(8))
    assert float(value) == pytest.approx(float(build_loss("an")(z, t)), rel=1e-6)
    assert loss.last_modified[0].numel() == 0 and loss.num_modified_epoch == 0


@pytest.mark.parametrize("b, c", [(6, 5), (128, 600)])  # direct topk + weighted BCE / sampled + fused BCE
@pytest.mark.parametrize("name", ["ll-r", "ll-ct"])
def test_relative_schedule_selects_exact_k_largest_unobserved(name: str, b: int, c: int, monkeypatch) -> None:
    import wsml.losses._selection as selection

    calls = []
    monkeypatch.setattr(selection, "_topk_sampled_numpy",
                        lambda *a, f=selection._topk_sampled_numpy: calls.append(1) or f(*a))
    z, t = single_positive(b, c, seed=1, neg_rows=3)
    loss = build_loss(name, delta_rel=0.4 if b * c > 1000 else 10.0)
    for epoch in (2, 3, 5):
        loss.set_epoch(epoch)
        zz = z.clone().requires_grad_(True)
        value = loss(zz, t)
        k = math.ceil(min(1.0, (epoch - 1) * loss.delta_rel / 100) * b * c - 1e-9)
        rows, classes = loss.last_modified
        sel = flat(rows, classes, c)
        assert len(sel) == k == rows.numel() and loss.num_modified_epoch == k
        assert bool((t[rows, classes] == 0).all())  # never an observed entry
        assert sel == brute_topk(z.numpy(), t.numpy(), k)
        expected = np_ll(z.numpy(), t.numpy(), sel, correct=name == "ll-ct")
        assert value.item() == pytest.approx(expected, rel=1e-5)
        # gradient = autograd of the plain formula with the same selection
        value.backward()
        z2 = z.clone().requires_grad_(True)
        reference.per_entry(z2, t, torch.tensor(sorted(sel)), correct=name == "ll-ct").mean().backward()
        torch.testing.assert_close(zz.grad, z2.grad, rtol=1e-5, atol=1e-9)
    loss.set_epoch(6)
    assert loss.num_modified_epoch == 0
    assert len(calls) == (3 if b * c >= selection.SAMPLE_MIN_NUMEL else 0)
    assert (b * c >= FUSED_MIN_NUMEL) == (b > 100)


def test_k_is_ceil_of_rate_times_entries() -> None:
    z, t = single_positive(2, 5, seed=2)
    for delta_rel, epoch, k in [(15.0, 2, 2), (10.0, 3, 2), (10.0, 4, 3), (30.0, 5, 8)]:  # 1.5->2, 2->2, 3, 12->8 UNOBS
        loss = build_loss("ll-r", delta_rel=delta_rel)
        loss.set_epoch(epoch)
        loss(z, t)
        assert loss.num_modified_epoch == k, (delta_rel, epoch)


def test_fewer_unobserved_than_k_modifies_all_unobserved_only() -> None:
    z, t = single_positive(4, 6, seed=3, neg_rows=4)
    loss = build_loss("ll-ct", delta_rel=100.0)
    loss.set_epoch(2)
    loss(z, t)
    rows, classes = loss.last_modified
    assert flat(rows, classes, 6) == set(np.flatnonzero(t.numpy().ravel() == 0).tolist())


@pytest.mark.parametrize("b, c", [(4, 10), (64, 600)])
def test_ties_still_select_exactly_k(b: int, c: int) -> None:
    z = torch.zeros(b, c)
    t = torch.zeros(b, c, dtype=torch.int8)
    t[:, 0] = 1
    loss = build_loss("ll-r", delta_rel=5.0)
    loss.set_epoch(2)
    value = loss(z, t)
    k = math.ceil(0.05 * b * c)
    assert loss.num_modified_epoch == k and bool((t[loss.last_modified] == 0).all())
    assert float(value) == pytest.approx(math.log(2) * (b * c - k) / (b * c), rel=1e-6)


def test_bfloat16_logits_work() -> None:
    z, t = single_positive(8, 10, seed=4, dtype=torch.bfloat16)
    loss = build_loss("ll-r", delta_rel=10.0)
    loss.set_epoch(2)
    value = loss(z.requires_grad_(True), t)
    value.backward()
    assert value.dtype == torch.bfloat16 and loss.num_modified_epoch == 8 and z.grad.dtype == torch.bfloat16


@pytest.mark.parametrize("hparams", [{"delta_rel": 10.0}, {"schedule": "abs", "r0": 2.0, "delta_abs": 0.3}])
@pytest.mark.parametrize("name", ["ll-r", "ll-ct", "ll-cp"])
def test_fast_path_matches_the_reference_over_epochs(name: str, hparams: dict) -> None:
    """The whole loss against ``reference.large_loss``: selection, value, gradient and LL-Cp's memory, which the
    reference keeps, as the paper's code does, in the label matrix."""
    z, t = single_positive(12, 9, seed=11, neg_rows=2)
    loss = build_loss(name, **hparams)
    kwargs = {k: v for k, v in hparams.items() if k != "schedule"}
    idx, labels = torch.arange(12) + 30, t.clone()
    for epoch in (1, 2, 3, 5):
        loss.set_epoch(epoch)
        zz, zr = z.clone().requires_grad_(True), z.double().requires_grad_(True)
        value = loss(zz, t, idx)
        expected, sel, remember = reference.large_loss(zr, labels, epoch, name, **kwargs)
        assert flat(*loss.last_modified, 9) == set((sel + 30 * 9).tolist())
        assert value.item() == pytest.approx(expected.item(), rel=1e-5)
        value.backward()
        expected.backward()
        torch.testing.assert_close(zz.grad.double(), zr.grad, rtol=1e-4, atol=1e-9)
        if name == "ll-cp":
            labels.view(-1)[remember] = 1
            assert flat(*loss.corrections(), 9) == set((torch.nonzero((labels != t).flatten())[:, 0] + 270).tolist())
    assert loss.num_modified_epoch > 0


# --- selection routines --------------------------------------------------------------------------------------
def test_selection_paths_agree_with_brute_force() -> None:
    z, t = single_positive(80, 500, seed=5, neg_rows=10)
    zf, tf = z.reshape(-1), t.reshape(-1).float()
    for k in (1, 37, 640, 4999):
        expected = brute_topk(z.numpy(), t.numpy(), k)
        for fn in (_topk_sampled_numpy, _topk_sampled_torch):
            got = fn(zf, tf, k, 500)
            assert got is not None and got.numel() == k and set(got.tolist()) == expected
        keys = masked_keys(z, t.float())  # pre-masked keys, as gathered under DDP
        assert set(topk_unobserved(keys, None, k).tolist()) == expected
    assert set(positions_at_least(zf, 2.5).tolist()) == set(torch.nonzero(zf >= 2.5).squeeze(1).tolist())


def test_sampling_falls_back_when_the_sample_misleads() -> None:
    # large values exactly on the sample's stride: its threshold is too high, fewer than k candidates pass
    n, c = 40000, 7
    z = torch.randn(n * c) * 0.01
    stride = max(2, n * c // 4096)
    while math.gcd(stride, c) != 1:
        stride += 1
    z[::stride] = 5.0 + torch.rand(z[::stride].numel())
    t = torch.zeros(n * c)
    k = z[::stride].numel() + 500
    assert _topk_sampled_numpy(z, t, k, c) is None and _topk_sampled_torch(z, t, k, c) is None
    got = topk_unobserved(z.view(n, c), t.view(n, c), k)
    assert set(got.tolist()) == set(torch.topk(z, k).indices.tolist())


def test_loss_threshold_to_logit_inverts_softplus() -> None:
    for r in (1e-6, 0.3, 1.0, 2.0, 50.0, 800.0):
        zstar = loss_threshold_to_logit(r)
        assert float(F.softplus(torch.tensor(zstar, dtype=torch.float64))) == pytest.approx(r, rel=1e-9)
    assert loss_threshold_to_logit(0.0) == -math.inf


# --- absolute schedule ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["ll-r", "ll-ct", "ll-cp"])
def test_absolute_schedule_threshold(name: str) -> None:
    z, t = single_positive(10, 8, seed=6, neg_rows=2)
    loss = build_loss(name, schedule="abs", r0=2.0, delta_abs=0.3)
    idx = torch.arange(100, 110)
    loss(z, t, idx)
    assert loss.num_modified_epoch == 0  # epoch 1
    for epoch in (2, 4):
        loss.set_epoch(epoch)
        r = 2.0 - epoch * 0.3
        zn, tn = z.numpy(), t.numpy()
        tn_now = tn.copy()
        if name == "ll-cp":
            rows, classes = loss.corrections()
            tn_now[(rows - 100).numpy(), classes.numpy()] = 1
        value = loss(z, t, idx)
        ref_sel, _ = reference.select(z.double(), torch.from_numpy(tn_now), epoch, r0=2.0, delta_abs=0.3)
        expected_sel = set(ref_sel.tolist())
        assert expected_sel == set(np.flatnonzero((tn_now.ravel() == 0) & (F.softplus(z.double()).numpy().ravel() > r)))
        rows, classes = loss.last_modified
        assert flat(rows - 100, classes, 8) == expected_sel and len(expected_sel) > 0
        assert float(value) == pytest.approx(np_ll(zn, tn_now, expected_sel, correct=name != "ll-r"), rel=1e-5)


# --- LL-Cp ---------------------------------------------------------------------------------------------------
def test_llcp_corrections_persist_across_batches_epochs_and_checkpoints() -> None:
    c = 6
    z, t = single_positive(8, c, seed=7)
    loss = build_loss("LL-Cp", delta_rel=10.0)
    a, b = torch.arange(0, 4) + 50, torch.arange(4, 8) + 50
    loss(z[:4], t[:4], a)  # epoch 1: nothing
    assert loss.corrections()[0].numel() == 0
    loss.set_epoch(2)
    loss(z[:4], t[:4], a)
    first = flat(*loss.corrections(), c)
    k = math.ceil(0.1 * 4 * c)
    assert flat(*loss.last_modified, c) == {50 * c + p for p in brute_topk(z[:4].numpy(), t[:4].numpy(), k)}
    # remembered: strictly above the k-th largest loss, i.e. the k - 1 largest (no ties in random logits)
    assert len(first) == k - 1 and first == {50 * c + p for p in brute_topk(z[:4].numpy(), t[:4].numpy(), k - 1)}
    loss(z[4:], t[4:], b)
    second = flat(*loss.corrections(), c)
    assert len(second) == 2 * (k - 1) and first < second
    # epoch 5: k stays constant; earlier corrections count as POS (target 1) and are not selected again
    loss.set_epoch(5)
    value = loss(z[:4], t[:4], a)
    assert loss.num_modified_epoch == k
    t_now = t[:4].numpy().copy()
    for key in first:
        t_now[key // c - 50, key % c] = 1
    new = flat(*loss.last_modified, c)
    assert not (new & first) and {x - 50 * c for x in new} == brute_topk(z[:4].numpy(), t_now, k)
    assert float(value) == pytest.approx(np_ll(z[:4].numpy(), t_now, {x - 50 * c for x in new}, True), rel=1e-5)
    # checkpoint round trip into a fresh loss: same state, same next result
    buf = io.BytesIO()
    torch.save(loss.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)  # what a checkpoint resume does
    fresh = build_loss("ll-cp", delta_rel=10.0)
    fresh.load_state_dict(state)
    assert flat(*fresh.corrections(), c) == flat(*loss.corrections(), c) and fresh.epoch == 5
    torch.testing.assert_close(fresh(z[4:], t[4:], b), loss(z[4:], t[4:], b))
    assert flat(*fresh.corrections(), c) == flat(*loss.corrections(), c)


@pytest.mark.parametrize("b, c, delta_rel, k", [(16, 20, 0.1, 1), (16, 80, 0.2, 3)])
def test_llcp_remembers_only_losses_strictly_above_the_kth(b: int, c: int, delta_rel: float, k: int) -> None:
    """Paper Eq. 7 ("l > R(t)") and the authors' code remember only losses strictly above the k-th largest:
    snucml/LargeLossMatters losses.py line 51 ``correction_idx = torch.where(unobserved_loss > topk_lossvalue)``
    (commit ac475fec, the first code commit, where train.py line 84 still writes them into label_matrix_obs),
    while the batch corrects every entry not below it (losses.py line 54). VOC (B 16, C 20, Δrel 0.1): k = 1,
    nothing remembered; COCO (C 80, Δrel 0.2): k = 3, two remembered per batch."""
    z, t = single_positive(b, c, seed=20 + c)
    loss = build_loss("ll-cp", delta_rel=delta_rel)
    idx = torch.arange(b) + 7
    loss.set_epoch(3)
    loss(z, t, idx)
    assert loss.num_modified_epoch == k
    assert flat(*loss.last_modified, c) == {7 * c + p for p in brute_topk(z.numpy(), t.numpy(), k)}
    assert flat(*loss.corrections(), c) == {7 * c + p for p in brute_topk(z.numpy(), t.numpy(), k - 1)}
    # ties at the k-th value: entries equal to it are corrected in the batch but never remembered
    zt = torch.full((2, 4), -5.0)
    zt[0, 1] = zt[1, 2] = 2.0
    zt[0, 3] = 3.0
    tt = torch.zeros(2, 4, dtype=torch.int8)
    tt[:, 0] = 1
    tied = build_loss("ll-cp", delta_rel=25.0)  # k = ceil(0.25 · 8) = 2: the 3.0 and one of the 2.0s
    tied.set_epoch(2)
    tied(zt, tt, torch.tensor([0, 1]))
    assert tied.num_modified_epoch == 2 and flat(*tied.corrections(), 4) == {3}


def test_llcp_reference_bug_flag_behaves_as_llct() -> None:
    z, t = single_positive(6, 7, seed=8)
    buggy = build_loss("ll-cp", delta_rel=10.0, reference_cp_bug=True)
    ct = build_loss("ll-ct", delta_rel=10.0)
    for epoch in (1, 2, 4):
        buggy.set_epoch(epoch)
        ct.set_epoch(epoch)
        torch.testing.assert_close(buggy(z, t), ct(z, t))  # no index needed, rate grows with the epoch
    assert buggy.corrections()[0].numel() == 0


def test_llcp_needs_nonnegative_index() -> None:
    z, t = single_positive(3, 4, seed=9)
    loss = build_loss("ll-cp")
    with pytest.raises(ValueError, match="needs index"):
        loss(z, t)
    with pytest.raises(ValueError, match="must be >= 0"):
        loss(z, t, torch.tensor([0, -1, 2]))


def test_last_modified_rows_are_dataset_ids_or_batch_positions() -> None:
    z, t = single_positive(5, 4, seed=10)
    loss = build_loss("ll-r", delta_rel=20.0)
    loss.set_epoch(2)
    loss(z, t)
    rows, classes = loss.last_modified
    loss(z, t, torch.arange(5) * 10 + 3)
    rows_id, classes_id = loss.last_modified
    assert torch.equal(rows_id, rows * 10 + 3) and torch.equal(classes, classes_id)
    assert loss.num_modified_epoch == 2 * rows.numel()


def test_correction_store() -> None:
    store = CorrectionStore()
    store.add(torch.tensor([5, 1, 5, 5]), torch.tensor([2, 0, 2, 3]), 4)  # duplicate (5, 2)
    assert len(store) == 3
    bpos, cls = store.lookup(torch.tensor([5, 0, 1, 5]), 4)
    got = sorted(zip(bpos.tolist(), cls.tolist()))
    assert got == [(0, 2), (0, 3), (2, 0), (3, 2), (3, 3)]
    rows = torch.arange(6000)
    store.add(rows, rows % 4, 4)  # triggers a merge into the main array
    store.add(torch.tensor([7000]), torch.tensor([1]), 4)
    assert len(store) == 3 + 6000 + 1  # no overlap between the three additions
    r, c = store.pairs()
    keys = (r * 4 + c).tolist()
    assert keys == sorted(set(keys)) and (7000 * 4 + 1) in keys
    other = CorrectionStore()
    other.load(store.state())
    assert torch.equal(other.pairs()[0], r) and torch.equal(other.pairs()[1], c)
    with pytest.raises(ValueError, match="recorded for 4 classes"):
        other.lookup(torch.tensor([0]), 5)


# --- the custom autograd function ----------------------------------------------------------------------------
def test_rejected_bce_gradcheck_and_plain_formula() -> None:
    g = torch.Generator().manual_seed(11)
    z = torch.randn(5, 7, generator=g, dtype=torch.float64, requires_grad=True)
    y = (torch.rand(5, 7, generator=g) < 0.3).double()
    rejected = torch.tensor([3, 8, 20])
    y.view(-1)[rejected] = 0
    for rej in (rejected, torch.empty(0, dtype=torch.long)):
        assert torch.autograd.gradcheck(lambda x, r=rej: RejectedBCE.apply(x, y, r), (z,))
        weight = torch.ones_like(y)
        weight.view(-1)[rej] = 0
        expected = F.binary_cross_entropy_with_logits(z, y, weight=weight)
        torch.testing.assert_close(RejectedBCE.apply(z, y, rej), expected)
        g1 = torch.autograd.grad(RejectedBCE.apply(z, y, rej), z)[0]
        g2 = torch.autograd.grad(expected, z)[0]
        torch.testing.assert_close(g1, g2)
    # the dispatcher gives the same on both sides of the fused-size threshold
    big = torch.randn(256, 300, dtype=torch.float64, generator=g)  # above FUSED_MIN_NUMEL
    yb = torch.zeros_like(big)
    assert big.numel() >= FUSED_MIN_NUMEL
    rej = torch.arange(0, big.numel(), 97)
    w = torch.ones_like(yb)
    w.view(-1)[rej] = 0
    torch.testing.assert_close(rejected_bce(big, yb, rej), F.binary_cross_entropy_with_logits(big, yb, weight=w))
