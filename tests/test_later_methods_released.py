"""Later methods as their authors ran them (issue: ASL's detached focusing weight, IMCL, Curriculum labelling's
rounds, EM+APL's eval-mode pseudo-labelling). Each check is a small hand-derived case; sources are cited per test."""

import numpy as np
import pytest
import torch

from wsml.losses import build_loss

torch.set_num_threads(1)


def sig(z):
    return 1.0 / (1.0 + np.exp(-z))


# ------------------------------------------------------------------------------------------ ASL


def test_asl_default_gradient_is_the_released_detached_weight_formula():
    """Alibaba-MIIL/ASL src/loss_functions/losses.py lines 38-48 compute the focusing weight under
    ``torch.set_grad_enabled(False)`` and train.py line 93 uses ``disable_torch_grad_focal_loss=True``, γ+ = 0,
    γ− = 4, m = 0.05 (the Hill/SPLC code's ASL, src/loss_functions/losses.py lines 186-195, does the same).
    With w detached: d/dz[−w log p] = −w (1 − p) for POS, d/dz[−w log(1 − p + m)] = w p (1 − p) / (1 − p + m) for
    negatives with p > m (0 where the clamp at 1 binds). Mean over B·C entries."""
    z = np.array([[2.0, -1.0, 0.5, 0.03], [-2.0, 0.0, 1.5, -4.0]])
    t = np.array([[1, 0, -1, 0], [0, 1, 0, -1]])
    for gp, gn, m in [(0.0, 4.0, 0.05), (1.0, 2.0, 0.2), (2.0, 3.0, 0.0)]:
        p = sig(z)
        pm = np.maximum(p - m, 0.0)
        g_pos = -((1 - p) ** gp) * (1 - p)
        g_neg = np.where(p > m, pm**gn * p * (1 - p) / (1 - pm), 0.0)
        ref = np.where(t == 1, g_pos, g_neg) / z.size
        zt = torch.tensor(z, requires_grad=True)
        build_loss("asl", gamma_pos=gp, gamma_neg=gn, clip=m)(zt, torch.tensor(t)).backward()
        assert np.allclose(zt.grad.numpy(), ref, atol=1e-6, rtol=0)
        # the paper's maths (weight differentiated too) is kept as an option and differs
        zp = torch.tensor(z, requires_grad=True)
        build_loss("asl", gamma_pos=gp, gamma_neg=gn, clip=m, detach_weight=False)(zp, torch.tensor(t)).backward()
        assert not np.allclose(zp.grad.numpy(), ref, atol=1e-6)


def test_asl_released_log_clamp():
    """ASL losses.py lines 33-34: log(p.clamp(min=1e-8)); a positive at z = −25 then gets no gradient, the exact
    log-sigmoid (eps=0) gives −1/(B·C)."""
    t = torch.tensor([[1]])
    z = torch.tensor([[-25.0]], dtype=torch.float64, requires_grad=True)
    loss = build_loss("asl")(z, t)
    loss.backward()
    assert float(loss.detach()) == pytest.approx(-np.log(1e-8)) and float(z.grad) == 0.0
    z2 = torch.tensor([[-25.0]], dtype=torch.float64, requires_grad=True)
    build_loss("asl", eps=0.0)(z2, t).backward()
    assert float(z2.grad) == pytest.approx(-1.0, rel=1e-9)
