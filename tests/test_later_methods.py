"""Later methods and the paper's remaining baselines: ASL, Hill, SPLC, EM, EM+APL, Curriculum labelling, iu-smooth.
Every loss is checked against an independent NumPy formula on small hand-chosen tensors (BoostLU: test_boostlu)."""

import math

import numpy as np
import pytest
import torch

from wsml.losses import build_loss

Z = np.array([[2.0, -1.0, 0.5, 2.8, -0.2], [-2.0, 0.0, 1.5, -0.3, 4.0], [0.7, 2.5, -3.0, 1.0, 0.1]])
T = np.array([[1, 0, -1, 0, 0], [0, 1, 0, -1, 0], [0, 0, 0, 1, -1]])


def sig(z):
    return 1.0 / (1.0 + np.exp(-z))


def run(loss_fn, z=Z, t=T, index=None, epoch=None):
    if epoch is not None:
        loss_fn.set_epoch(epoch)
    idx = None if index is None else torch.as_tensor(index, dtype=torch.long)
    return float(loss_fn(torch.tensor(z, dtype=torch.float64), torch.tensor(t, dtype=torch.int8), index=idx))


# ------------------------------------------------------------------------------------------ ASL


@pytest.mark.parametrize("gp,gn,m", [(0.0, 4.0, 0.05), (1.0, 2.0, 0.2), (0.5, 0.5, 0.0)])
def test_asl_matches_formula(gp, gn, m):
    p = sig(Z)
    pm = np.maximum(p - m, 0.0)
    ref = np.where(T == 1, -((1 - p) ** gp) * np.log(p), -(pm**gn) * np.log(1 - pm))
    assert run(build_loss("ASL", gamma_pos=gp, gamma_neg=gn, clip=m)) == pytest.approx(ref.mean(), rel=1e-10)


def test_asl_without_focusing_is_an_and_gradients_stay_finite():
    plain = build_loss("asl", gamma_pos=0.0, gamma_neg=0.0, clip=0.0)
    assert run(plain) == pytest.approx(run(build_loss("an")), rel=1e-12)
    z = torch.tensor([[40.0, -40.0, 0.01]], requires_grad=True)  # σ saturates; 0 < γ < 1 must not give NaN
    build_loss("asl", gamma_pos=0.5, gamma_neg=0.5, clip=0.05)(z, torch.tensor([[1, 0, 0]])).backward()
    assert torch.isfinite(z.grad).all()


# ------------------------------------------------------------------------------------------ Hill / SPLC


def focal_margin(z, m=1.0, g=2.0):
    pm = sig(z - m)
    return -((1 - pm) ** g) * np.log(pm)


def test_hill_matches_formula():
    p = sig(Z)
    ref = np.where(T == 1, focal_margin(Z), (1.5 - p) * p**2)
    assert run(build_loss("hill")) == pytest.approx(ref.mean(), rel=1e-10)
    p = sig(Z)
    ref = np.where(T == 1, focal_margin(Z, 0.5, 1.0), (2.0 - p) * p**2)
    assert run(build_loss("hill", lamb=2.0, margin=0.5, gamma=1.0)) == pytest.approx(ref.mean(), rel=1e-10)


def test_splc_corrects_confident_unobserved_from_epoch_2():
    p = sig(Z)
    neg = -(p**2) * np.log(1 - p)
    before = np.where(T == 1, focal_margin(Z), neg)
    corrected = (T == 0) & (p > 0.6)
    # UNOBS with p > 0.6: (0,3), (1,2), (1,4), (2,0), (2,1); the NEG entry (0,2) has p = 0.62 but stays negative
    assert corrected.sum() == 5 and p[0, 2] > 0.6
    after = np.where(T == 1, focal_margin(Z), np.where(corrected, -((1 - p) ** 2) * np.log(p), neg))
    loss = build_loss("splc")
    assert run(loss, epoch=1, index=[7, 8, 9]) == pytest.approx(before.mean(), rel=1e-10)
    assert loss.num_modified_epoch == 0
    assert run(loss, epoch=2, index=[7, 8, 9]) == pytest.approx(after.mean(), rel=1e-10)
    assert loss.num_modified_epoch == 5
    rows, classes = loss.last_modified
    assert sorted(zip(rows.tolist(), classes.tolist())) == [(7, 3), (8, 2), (8, 4), (9, 0), (9, 1)]
    # per batch, no memory: a batch where nothing is confident is not corrected
    assert run(loss, z=-np.abs(Z), index=[7, 8, 9]) == pytest.approx(
        np.where(T == 1, focal_margin(-np.abs(Z)), -(sig(-np.abs(Z)) ** 2) * np.log(1 - sig(-np.abs(Z)))).mean())
    late = build_loss("splc", tau=0.9, start_epoch=3)
    assert run(late, epoch=2) == pytest.approx(before.mean(), rel=1e-10)


# ------------------------------------------------------------------------------------------ EM / EM+APL


def em_ref(z, t, alpha):
    p = sig(z)
    ent = -(p * np.log(p) + (1 - p) * np.log(1 - p))
    return np.where(t == 1, -np.log(p), np.where(t == -1, -np.log(1 - p), -alpha * ent))


def test_em_matches_formula():
    assert run(build_loss("em", alpha=0.2)) == pytest.approx(em_ref(Z, T, 0.2).mean(), rel=1e-10)
    assert run(build_loss("EM")) == pytest.approx(em_ref(Z, T, 0.1).mean(), rel=1e-10)


def apl_batches():
    # 6 images, 2 classes; class 0 observed POS in row 0, class 1 in row 1: U_c = 5 per class
    t = np.zeros((6, 2), dtype=int)
    t[0, 0] = t[1, 1] = 1
    z = np.array([[3.0, -1.0], [-2.0, 2.0], [-0.5, -3.0], [1.0, -0.1], [-4.0, 0.5], [0.2, -2.5]])
    return z, t


def test_em_apl_pseudo_labels_schedule_loss_and_state():
    z, t = apl_batches()
    loss = build_loss("em-apl", num_samples=6, num_classes=2, alpha=0.1, beta=0.5, warmup_epoch=1, num_epochs=3,
                      pseudo_source="train")
    loss.set_epoch(1)
    run(loss, z[:3], t[:3], index=[0, 1, 2])
    run(loss, z[3:], t[3:], index=[3, 4, 5])
    assert loss.pseudo_labels()[0].numel() == 0
    loss.set_epoch(2)  # n_c = floor(0.9 · 5 / (3 − 1)) = 2 lowest-scored UNOBS per class
    rows, classes, soft = loss.pseudo_labels()
    got = {(r, c): s for r, c, s in zip(rows.tolist(), classes.tolist(), soft.tolist())}
    assert set(got) == {(4, 0), (1, 0), (2, 1), (5, 1)}
    for (r, c), s in got.items():
        assert s == pytest.approx(sig(z[r, c]), rel=1e-6)
    # epoch 2: pseudo-labelled entries get β·BCE(z, s), the rest EM
    z2 = z + 0.3
    ref = em_ref(z2, t, 0.1)
    p2 = sig(z2)
    for (r, c), s in got.items():
        ref[r, c] = 0.5 * -(s * np.log(p2[r, c]) + (1 - s) * np.log(1 - p2[r, c]))
    assert run(loss, z2, t, index=range(6)) == pytest.approx(ref.mean(), rel=1e-6)
    assert loss.num_modified_epoch == 4
    # checkpoint / resume keeps the pseudo-labels and the epoch-2 predictions
    clone = build_loss("em-apl", num_samples=6, num_classes=2, alpha=0.1, beta=0.5, warmup_epoch=1, num_epochs=3,
                      pseudo_source="train")
    clone.load_state_dict(loss.state_dict())
    assert clone.epoch == 2 and run(clone, z2, t, index=range(6)) == pytest.approx(ref.mean(), rel=1e-6)
    clone.set_epoch(3)  # second round: two more per class among the rest, from the epoch-2 predictions
    rows, classes, _ = clone.pseudo_labels()
    assert len(rows) == 8
    assert {(4, 0), (1, 0), (2, 1), (5, 1), (2, 0), (5, 0), (3, 1), (0, 1)} == set(zip(rows.tolist(),
                                                                                      classes.tolist()))


def test_em_apl_waits_for_warmup():
    z, t = apl_batches()
    loss = build_loss("em-apl", num_samples=6, num_classes=2, warmup_epoch=2, num_epochs=4, pseudo_source="train")
    run(loss, z, t, index=range(6), epoch=1)
    loss.set_epoch(2)
    assert loss.pseudo_labels()[0].numel() == 0
    run(loss, z, t, index=range(6))
    loss.set_epoch(3)  # floor(0.9 · 5 / 2) = 2 per class
    assert loss.pseudo_labels()[0].numel() == 4
    for epoch in (4, 5, 6):  # rounds after epochs 2 and 3 only (num_epochs − warmup_epoch = 2)
        run(loss, z, t, index=range(6))
        loss.set_epoch(epoch)
        assert loss.pseudo_labels()[0].numel() == 8


# ------------------------------------------------------------------------------------------ Curriculum


def partial_bce_ref(z, t, gamma=1.0):
    a = -4.0 / (1.0 - 0.1**gamma)
    b = 1.0 - a
    known = t != 0
    g = a * (known.mean(1)) ** gamma + b
    bce = np.where(t == 1, -np.log(sig(z)), -np.log(1 - sig(z))) * known
    return (g * bce.sum(1)).sum() / z.size


@pytest.mark.parametrize("gamma", [1.0, 2.0])
def test_partial_bce_normalisation(gamma):
    from wsml.losses.curriculum import partial_bce_weights

    a, b = partial_bce_weights(gamma)
    assert a + b == pytest.approx(1.0) and a * 0.1**gamma + b == pytest.approx(5.0)
    if gamma == 1.0:
        assert (a, b) == pytest.approx((-40 / 9, 49 / 9))
    loss = build_loss("curriculum", gamma=gamma)
    assert run(loss, index=[0, 1, 2], epoch=1) == pytest.approx(partial_bce_ref(Z, T, gamma), rel=1e-10)


# ------------------------------------------------------------------------------------------ iu-smooth (not IMCL)


def iu_smooth_ref(z, t, lam_l, lam_i, k):
    p = sig(z)
    B, C = z.shape
    bce = (np.where(t == 1, -np.log(p), -np.log(1 - p)) * (t != 0)).sum()
    P = (t == 1).astype(float)
    N = P.T @ P
    A = np.zeros((C, C))
    for c in range(C):
        for d in range(C):
            if c != d and N[c, c] > 0 and N[d, d] > 0:
                A[c, d] = N[c, d] / math.sqrt(N[c, c] * N[d, d])
    lab = sum(A[c, d] * (p[b, c] - p[b, d]) ** 2 for b in range(B) for c in range(C) for d in range(C))
    zn = z / np.linalg.norm(z, axis=1, keepdims=True)
    S = zn @ zn.T
    W = np.zeros((B, B))
    for i in range(B):
        others = sorted((j for j in range(B) if j != i), key=lambda j: -S[i, j])[:k]
        for j in others:
            W[i, j] = max(S[i, j], 0.0)
    W = 0.5 * (W + W.T)
    img = sum(W[i, j] * ((p[i] - p[j]) ** 2).sum() for i in range(B) for j in range(B))
    return (bce + lam_l * lab + lam_i * img) / z.size


def test_iu_smooth_matches_formula_and_imcl_is_refused():
    z = np.array([[2.0, 1.0, -1.0], [1.5, 0.5, -2.0], [-1.0, 2.0, 0.3], [0.2, -0.7, 1.1]])
    t = np.array([[1, 1, 0], [1, 0, -1], [0, 1, 1], [-1, 1, 0]])
    loss = build_loss("iu-smooth", num_classes=3, lambda_label=0.7, lambda_image=0.3, num_neighbors=2)
    # label graph in float32
    assert run(loss, z, t, epoch=1) == pytest.approx(iu_smooth_ref(z, t, 0.7, 0.3, 2), rel=1e-6)
    A = loss.label_graph()
    assert A[0, 1] == pytest.approx(1 / math.sqrt(2 * 3))  # N01 = 1, N00 = 2, N11 = 3 and A[0, 2] == 0 and A[1, 1] == 0
    # the label graph keeps accumulating (and is saved): a second identical batch leaves A unchanged
    run(loss, z, t)
    assert torch.allclose(loss.label_graph(), A)
    clone = build_loss("iu-smooth", num_classes=3)
    clone.load_state_dict(loss.state_dict())
    assert torch.allclose(clone.label_graph(), A)
    assert run(build_loss("iu-smooth", num_classes=3, lambda_label=0, lambda_image=0), z, t) == pytest.approx(
        run(build_loss("iu"), z, t), rel=1e-12)
    with pytest.raises(ValueError, match="does not implement IMCL"):
        build_loss("IMCL")


# ------------------------------------------------------------------------------------------ all methods


CASES = {
    "asl": {}, "hill": {}, "splc": {}, "em": {}, "em+apl": {"num_samples": 20, "num_classes": 5, "warmup_epoch": 1,
                                                        "pseudo_source": "train"},
    "curriculum": {"round_epochs": 5}, "iu-smooth": {"num_classes": 5},
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_same_call_signature_and_finite_gradients(name):
    loss_fn = build_loss(name, **CASES[name])
    torch.manual_seed(1)
    for epoch in (1, 2, 3):
        loss_fn.set_epoch(epoch)
        z = torch.randn(4, 5, requires_grad=True)
        t = torch.tensor(T.tolist() + [[0, 0, 1, 0, 0]], dtype=torch.int8)
        out = loss_fn(z, t, index=torch.tensor([0, 5, 9, 19]))
        out.backward()
        assert out.ndim == 0 and torch.isfinite(out) and torch.isfinite(z.grad).all()
    with pytest.raises(ValueError, match="outside"):
        loss_fn(torch.zeros(1, 5), torch.full((1, 5), 2), index=torch.tensor([0]))


@pytest.mark.parametrize("name,hp,msg", [
    ("asl", {"clip": 1.0}, "clip"), ("asl", {"gamma_neg": -1}, "gamma_neg"), ("asl", {"gamma": 1}, "unknown"),
    ("hill", {"lamb": 0.5}, "lamb"), ("hill", {"margin": float("nan")}, "margin"),
    ("splc", {"tau": 1.5}, "tau"), ("splc", {"start_epoch": 0}, "start_epoch"), ("em", {"alpha": -0.1}, "alpha"),
    ("em-apl", {"num_samples": 4, "num_classes": 2, "warmup_epoch": 10}, "num_epochs"),
    ("em-apl", {"num_classes": 2}, "needs hyper-parameter"), ("em-apl", {"num_samples": 4, "num_classes": 2,
                                                                          "neg_proportion": 2}, "neg_proportion"),
    ("curriculum", {"theta": 1.5}, "theta"), ("curriculum", {"gamma": 0}, "gamma"),
    ("curriculum", {"start_epoch": True}, "start_epoch"), ("iu-smooth", {"num_classes": 0}, "num_classes"),
    ("iu-smooth", {"num_classes": 3, "num_neighbors": 0}, "num_neighbors"),
])
def test_bad_hyper_parameters(name, hp, msg):
    with pytest.raises(ValueError, match=msg):
        build_loss(name, **hp)


def test_bad_batches():
    z, t = torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.int8)
    with pytest.raises(ValueError, match="needs index"):
        build_loss("curriculum")(z, t)
    with pytest.raises(ValueError, match="index values"):
        build_loss("em-apl", num_samples=2, num_classes=3)(z, t, index=torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="3 classes"):
        build_loss("iu-smooth", num_classes=3)(torch.zeros(2, 4), torch.zeros(2, 4, dtype=torch.int8))
