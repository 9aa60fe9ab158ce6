"""wsml.losses: registry, input validation and the baseline losses (Full, AN, IU, WAN, LSAN, EPR, ROLE).

Expected values come from independent float64 numpy formulas (docs/design.md §2, Cole et al. 2021).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from wsml.losses import available_losses, build_loss, register_loss
from wsml.losses.base import PartialLoss


def np_bce(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-entry BCE on logits, float64: max(z, 0) − z·y + log(1 + e^−|z|)."""
    z = z.astype(np.float64)
    return np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z.astype(np.float64)))


def batch(b: int = 6, c: int = 5, seed: int = 0, neg: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, c, generator=g, dtype=torch.float64) * 2
    targets = torch.zeros(b, c, dtype=torch.int8)
    targets[torch.arange(b), torch.randint(0, c, (b,), generator=g)] = 1
    if neg:
        targets[0, (targets[0] == 0).nonzero()[0]] = -1
        targets[3, (targets[3] == 0).nonzero()[:2, 0]] = -1
    return logits, targets


# --- registry ------------------------------------------------------------------------------------------------
def test_available_losses_lists_every_name_of_the_design() -> None:
    names = available_losses()
    assert names == sorted(names)
    assert {"full", "an", "iu", "wan", "lsan", "epr", "role", "ll-r", "ll-ct", "ll-cp"} <= set(names)


@pytest.mark.parametrize(
    "alias, canonical",
    [("BCE", "full"), ("Naive-AN", "an"), ("assume_negative", "an"), ("naive-iu", "iu"), ("Ignore-Unobserved", "iu"),
     ("AN-LS", "lsan"), ("LL-R", "ll-r"), ("ll_ct", "ll-ct"), ("LL-Cp", "ll-cp"), ("WAN", "wan")],
)
def test_names_are_case_insensitive_with_aliases(alias: str, canonical: str) -> None:
    assert build_loss(alias).loss_name == canonical


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ValueError, match=r"unknown loss 'll-x'.*ll-ct.*ll-r"):
        build_loss("ll-x")


@pytest.mark.parametrize(
    "name, hparams, pattern",
    [
        ("ll-r", {"delta": 0.2}, r"unknown hyper-parameter\(s\) delta .*valid: delta_rel, schedule"),
        ("an", {"ls_coef": 0.1}, r"unknown hyper-parameter.*ls_coef.*\(none\)"),
        ("ll-r", {"delta_rel": -0.1}, r"delta_rel must be in \[0.0, 100.0\]"),
        ("ll-ct", {"schedule": "linear"}, r"schedule must be one of rel, abs, got 'linear'"),
        ("ll-r", {"schedule": "abs", "r0": 1.0}, r"needs r0 and delta_abs"),
        ("ll-r", {"r0": 1.0}, r"only apply to schedule='abs'"),
        ("ll-cp", {"schedule": "abs", "r0": 1.0, "delta_abs": -1}, r"delta_abs must be in \[0.0"),
        ("lsan", {"ls_coef": 0.7}, r"ls_coef must be in \[0, 0.5\), got 0.7"),
        ("epr", {}, r"needs hyper-parameter\(s\): expected_num_pos"),
        ("epr", {"expected_num_pos": 0}, r"expected_num_pos must be in \(0, inf\) \(VOC 1.5.*got 0"),
        ("role", {"num_samples": 4}, r"needs hyper-parameter\(s\): expected_num_pos, num_classes"),
        ("ll-cp", {"reference_cp_bug": "yes"}, r"reference_cp_bug must be True or False"),
    ],
)
def test_bad_hyper_parameters_are_named(name: str, hparams: dict, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        build_loss(name, **hparams)


def test_register_loss_decorator_adds_and_rejects_conflicts() -> None:
    # the test loss is removed again afterwards by conftest._clean_registries
    @register_loss("test-double-an", aliases=("test-dan",))
    class DoubleAN(PartialLoss):
        def __init__(self, *, factor: float = 2.0) -> None:
            super().__init__()
            self.factor = factor

        def compute(self, logits, targets, index):  # noqa: ANN001, ANN202
            return self.factor * torch.nn.functional.binary_cross_entropy_with_logits(
                logits, targets.clamp(min=0).to(logits.dtype))

    z, t = batch()
    loss = build_loss("TEST_DAN", factor=3.0)(z, t)
    assert float(loss) == pytest.approx(3 * float(build_loss("an")(z, t)))
    assert "test-double-an" in available_losses()
    with pytest.raises(ValueError, match="already registered"):
        register_loss("other", aliases=("test-dan",))(DoubleAN)


# --- validation (per loss: tests/test_loss_protocol.py, over available_losses()) ------------------------------
def test_float_targets_must_be_integral() -> None:
    z, t = batch()
    tt = t.double()
    assert float(build_loss("an")(z, tt)) == pytest.approx(float(build_loss("an")(z, t)))
    tt[0, 0] = 0.5
    with pytest.raises(ValueError, match=r"values \[0.5\]"):
        build_loss("an")(z, tt)


def test_set_epoch_is_one_based() -> None:
    loss = build_loss("ll-r")
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="1-based"):
            loss.set_epoch(bad)
    loss.set_epoch(np.int64(4))
    assert loss.epoch == 4
    fresh = build_loss("ll-r")
    fresh.load_state_dict(loss.state_dict())
    assert fresh.epoch == 4


# --- baseline values -----------------------------------------------------------------------------------------
def test_full_rejects_unobserved_and_matches_bce() -> None:
    z, t = batch()
    with pytest.raises(ValueError, match=r"needs fully observed targets but got UNOBS \(0\) entries"):
        build_loss("full")(z, t)
    full = torch.where(t == 0, torch.tensor(-1, dtype=torch.int8), t)
    expected = np_bce(z.numpy(), (full.numpy() == 1)).mean()
    assert float(build_loss("bce")(z, full)) == pytest.approx(expected, rel=1e-12)


def test_an_iu_wan_lsan_match_numpy() -> None:
    z, t = batch(8, 7, seed=3)
    zn, tn = z.numpy(), t.numpy()
    pos = (tn == 1).astype(float)
    per = np_bce(zn, pos)
    assert float(build_loss("an")(z, t)) == pytest.approx(per.mean(), rel=1e-12)
    assert float(build_loss("iu")(z, t)) == pytest.approx((per * (tn != 0)).sum() / tn.size, rel=1e-12)
    wan = np.where(tn == 0, per / (7 - 1), per)
    assert float(build_loss("wan")(z, t)) == pytest.approx(wan.mean(), rel=1e-12)
    eps = 0.1
    soft = np.where(tn == 1, 1 - eps, eps)
    lsan = soft * np_bce(zn, np.ones_like(soft)) + (1 - soft) * np_bce(zn, np.zeros_like(soft))
    assert float(build_loss("lsan")(z, t)) == pytest.approx(lsan.mean(), rel=1e-12)
    assert float(build_loss("lsan", ls_coef=0.2)(z, t)) != pytest.approx(lsan.mean(), rel=1e-6)


def test_bce_by_hand() -> None:
    # one entry per case, value by hand: BCE(0, y) = log 2 for any y; BCE(z, 1) = log(1 + e^-z)
    z = torch.tensor([[0.0, 2.0, -1.0]])
    t = torch.tensor([[1, 0, -1]], dtype=torch.int8)
    expected_an = (math.log(2) + math.log(1 + math.exp(2)) + math.log(1 + math.exp(-1))) / 3
    assert float(build_loss("an")(z, t)) == pytest.approx(expected_an, rel=1e-6)
    expected_iu = (math.log(2) + math.log(1 + math.exp(-1))) / 3
    assert float(build_loss("iu")(z, t)) == pytest.approx(expected_iu, rel=1e-6)


def test_epr_matches_numpy() -> None:
    z, t = batch(5, 6, seed=4, neg=False)
    zn, tn = z.numpy(), t.numpy()
    p = sigmoid(zn)
    expected = np_bce(zn, np.ones_like(zn))[tn == 1].sum() / zn.size + (p.sum(1).mean() - 2.9) ** 2 / 6**2
    assert float(build_loss("epr", expected_num_pos=2.9)(z, t)) == pytest.approx(expected, rel=1e-12)


def test_gradients_of_baselines_match_autograd_of_plain_formula() -> None:
    z, t = batch(4, 5, seed=5)
    for name in ("an", "iu", "wan", "lsan"):
        zz = z.clone().requires_grad_(True)
        build_loss(name)(zz, t).backward()
        y = (t == 1).double()
        z2 = z.clone().requires_grad_(True)
        per = torch.nn.functional.binary_cross_entropy_with_logits(z2, y, reduction="none")
        if name == "iu":
            per = per * (t != 0)
        elif name == "wan":
            per = torch.where(t == 0, per / 4, per)
        elif name == "lsan":
            per = torch.nn.functional.binary_cross_entropy_with_logits(z2, y * 0.8 + 0.1, reduction="none")
        per.mean().backward()
        torch.testing.assert_close(zz.grad, z2.grad)


# --- ROLE ----------------------------------------------------------------------------------------------------
def np_role(zn: np.ndarray, gn: np.ndarray, tn: np.ndarray, k: float) -> float:
    c = zn.shape[1]
    y = (tn == 1).astype(float)
    obs = (tn != 0).astype(float)
    pf, pg = sigmoid(zn), sigmoid(gn)
    observed = (np_bce(zn, y) + np_bce(gn, y)) * obs
    cross = pg * np_bce(zn, np.ones_like(zn)) + (1 - pg) * np_bce(zn, np.zeros_like(zn))
    cross += pf * np_bce(gn, np.ones_like(gn)) + (1 - pf) * np_bce(gn, np.zeros_like(gn))
    reg = ((pf.sum(1).mean() - k) ** 2 + (pg.sum(1).mean() - k) ** 2) / c**2
    return 0.5 * (observed + cross).sum() / zn.size + 0.5 * reg


def test_role_init_value_state_and_param_group() -> None:
    n, c = 10, 5
    role = build_loss("role", num_samples=n, num_classes=c, expected_num_pos=1.5, seed=1)
    est = role.estimated_labels()
    assert est.shape == (n, c) and bool(((est > 0.4) & (est < 0.6)).all())
    z, t = batch(4, c, seed=6)
    idx = torch.tensor([7, 2, 9, 0])
    g_before = role.label_logits.detach()[idx].clone()
    zz = z.float().requires_grad_(True)
    loss = role(zz, t, idx)
    # the batch rows were initialised on first sight: POS -> 0.995, NEG -> 0.005, UNOBS kept
    p = role.estimated_labels()[idx]
    assert torch.allclose(p[t == 1], torch.tensor(0.995)) and torch.allclose(p[t == -1], torch.tensor(0.005))
    torch.testing.assert_close(role.label_logits.detach()[idx][t == 0], g_before[t == 0])
    gn = role.label_logits.detach()[idx].double().numpy()
    assert loss.item() == pytest.approx(np_role(zz.detach().double().numpy(), gn, t.numpy(), 1.5), rel=1e-5)
    loss.backward()
    assert zz.grad is not None and role.label_logits.grad is not None
    assert bool((role.label_logits.grad[idx] != 0).any()) and float(role.label_logits.grad[1].abs().sum()) == 0
    groups = role.extra_param_groups(1e-4)
    assert groups[0]["params"][0] is role.label_logits and groups[0]["lr"] == pytest.approx(1e-3)
    assert build_loss("an").extra_param_groups(1e-4) == []
    fresh = build_loss("role", num_samples=n, num_classes=c, expected_num_pos=1.5, seed=2)
    fresh.load_state_dict(role.state_dict())
    torch.testing.assert_close(fresh.label_logits, role.label_logits)
    assert bool(fresh.initialized[idx].all()) and not bool(fresh.initialized[1])


def test_role_eager_init_and_index_checks() -> None:
    obs = np.zeros((3, 4), dtype=np.int8)
    obs[0, 1], obs[2, 3], obs[1, 0] = 1, 1, -1
    role = build_loss("role", num_samples=3, num_classes=4, expected_num_pos=1.0, observed_labels=obs)
    p = role.estimated_labels()
    assert float(p[0, 1]) == pytest.approx(0.995) and float(p[1, 0]) == pytest.approx(0.005)
    z = torch.zeros(2, 4)
    t = torch.zeros(2, 4, dtype=torch.int8)
    with pytest.raises(ValueError, match="needs index"):
        role(z, t)
    with pytest.raises(ValueError, match=r"index values must be in \[0, 3\), got range \[1, 3\]"):
        role(z, t, torch.tensor([1, 3]))
    with pytest.raises(ValueError, match="built for 4 classes"):
        role(torch.zeros(2, 5), torch.zeros(2, 5, dtype=torch.int8), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"observed_labels shape \(3, 4\)"):
        build_loss("role", num_samples=4, num_classes=4, expected_num_pos=1.0, observed_labels=obs)
