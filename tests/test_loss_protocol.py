"""The loss protocol, checked for every registered loss (``available_losses()``) with its ``example_hparams``: a
new loss is tested here without editing this file.

Per loss: three epochs of random batches in the engine's order (``set_epoch``, batches, then the end-of-epoch
training-set scores for losses that ask for them) give a finite scalar and a finite gradient; a state_dict saved
and loaded as a checkpoint (``torch.load(weights_only=True)``) into a fresh instance gives the same loss on the
next batch; and malformed batches (a target value 2, wrong shape, NaN logits, wrong dtypes, short index) are
ValueErrors naming the value or position, at epoch 1 and with state at epoch 3, that leave the state unchanged.
"""

from __future__ import annotations

import io

import pytest
import torch

from wsml.losses import PartialLoss, available_losses, build_loss

B, C = 16, 8  # example_hparams' num_samples / num_classes fit this batch (row ids 0..15)


def example_hparams(name: str) -> dict:
    """``example_hparams`` of the registered class named ``name`` (found among PartialLoss's subclasses)."""
    todo = [PartialLoss]
    while todo:
        cls = todo.pop()
        if cls.__dict__.get("loss_name") == name:
            return cls.example_hparams
        todo.extend(cls.__subclasses__())
    raise AssertionError(f"no PartialLoss subclass is registered as {name!r}")


def random_batch(seed: int, fully_observed: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits [B, C] and observed labels: >= 1 POS per row, some NEG, the rest UNOBS (NEG when fully observed)."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, C, generator=g) * 2
    targets = torch.randint(-1, 2, (B, C), generator=g, dtype=torch.int8) * (torch.rand(B, C, generator=g) < 0.3)
    targets[torch.arange(B), torch.randint(0, C, (B,), generator=g)] = 1
    if fully_observed:
        targets[targets == 0] = -1
    return logits, targets


def train_epochs(loss_fn, epochs: range, index: torch.Tensor, full: bool) -> None:
    for epoch in epochs:
        loss_fn.set_epoch(epoch)
        for step in range(2):
            z, t = random_batch(100 * epoch + step, full)
            z.requires_grad_(True)
            value = loss_fn(z, t, index=index)
            value.backward()
            assert value.dim() == 0 and bool(torch.isfinite(value)), (epoch, float(value))
            assert z.grad is not None and bool(torch.isfinite(z.grad).all()), epoch
        wants = getattr(loss_fn, "wants_train_scores", None)
        if wants is not None and wants(epoch):  # EM+APL, Curriculum: eval-mode scores of the training set
            z, t = random_batch(7 * epoch, full)
            loss_fn.on_train_scores(torch.sigmoid(z), index, t)


def assert_bad_inputs_rejected(loss_fn, index: torch.Tensor, full: bool) -> None:
    """Every malformed batch is a ValueError naming what is wrong (and where), raised before any state changes."""
    z, t = random_batch(5, full)
    bad = t.clone()
    bad[2, 4] = 2
    with pytest.raises(ValueError, match=r"values \[2\] outside.*row 2, class 4"):
        loss_fn(z, bad, index=index)
    with pytest.raises(ValueError, match=rf"shape \({B}, 4\) does not match logits shape \({B}, {C}\)"):
        loss_fn(z, t[:, :4], index=index)
    for value in (float("nan"), float("inf"), -float("inf")):
        zz = z.clone()
        zz[1, 3] = value
        with pytest.raises(ValueError, match=r"NaN or inf, first at row 1, class 3"):
            loss_fn(zz, t, index=index)
    with pytest.raises(ValueError, match="floating-point"):
        loss_fn(t, t, index=index)
    with pytest.raises(ValueError, match="got dtype torch.bool"):
        loss_fn(z, t > 0, index=index)
    with pytest.raises(ValueError, match=f"index has 5 entries but the batch has {B} rows"):
        loss_fn(z, t, index=index[:5])


@pytest.mark.parametrize("name", available_losses())
def test_every_registered_loss_follows_the_protocol(name: str) -> None:
    hparams = example_hparams(name)
    loss_fn = build_loss(name, **hparams)
    full = not loss_fn.allow_unobserved
    index = torch.arange(B)
    assert_bad_inputs_rejected(build_loss(name, **hparams), index, full)  # epoch 1
    train_epochs(loss_fn, range(1, 4), index, full)
    buf = io.BytesIO()
    torch.save(loss_fn.state_dict(), buf)
    buf.seek(0)
    fresh = build_loss(name, **hparams)
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    assert fresh.epoch == loss_fn.epoch == 3
    assert_bad_inputs_rejected(loss_fn, index, full)  # epoch 3, with state: rejected batches leave it unchanged
    z, t = random_batch(999, full)
    torch.testing.assert_close(fresh(z, t, index=index), loss_fn(z, t, index=index), rtol=1e-6, atol=0)


def test_hyper_parameters_accept_numpy_scalars_and_reject_booleans() -> None:
    import numpy as np

    assert build_loss("ll-r", delta_rel=np.float32(0.5)).delta_rel == 0.5
    assert build_loss("role", num_samples=np.int64(16), num_classes=np.int32(8), expected_num_pos=np.float64(1.5),
                      lr_mult=np.float32(2.0)).num_samples == 16
    bad = [("ll-r", "delta_rel", True), ("lsan", "ls_coef", False), ("epr", "expected_num_pos", True),
           ("role", "num_classes", True), ("asl", "detach_weight", 1), ("ll-cp", "global_selection", 1)]
    for name, key, value in bad:
        with pytest.raises(ValueError, match=f"{key} must be"):
            build_loss(name, **{**example_hparams(name), key: value})
