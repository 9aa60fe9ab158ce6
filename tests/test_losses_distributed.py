"""LL selection under torch.distributed (2 CPU processes, gloo): the global batch decides, as in one process.

Each rank evaluates its slice (unequal sizes) of one global batch; the union of the ranks' modified entries
must equal the single-process selection on the whole batch, each rank's loss its local mean, and LL-Cp's
corrections must be the same on both ranks and equal to the single process's; ``average_gradients`` (what the
training loop calls for ROLE's estimates) must leave the average of the ranks' estimate gradients on both. The
workers run this file as a script (``python test_losses_distributed.py OUT``) under the suite's DDP launcher
(conftest ``launch_ddp``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from wsml.distributed import all_gather_rows, average_gradients
from wsml.losses import build_loss, reference

# name, loss, hyper-parameters, rows, classes, rows of rank 0, epochs
CASES = [
    ("r-small", "ll-r", {"delta_rel": 5.0}, 9, 40, 5, (2, 3)),
    ("ct-sampled", "ll-ct", {"delta_rel": 0.4}, 70, 500, 40, (5,)),  # 35000 entries: sampled selection path
    ("cp-small", "ll-cp", {"delta_rel": 5.0}, 9, 40, 4, (2, 3, 3)),
    ("cp-abs", "ll-cp", {"schedule": "abs", "r0": 2.0, "delta_abs": 0.4}, 7, 30, 3, (2, 3)),
]


def make_batch(b: int, c: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, c, generator=g) * 2 - 1
    targets = torch.zeros(b, c, dtype=torch.int8)
    targets[torch.arange(b), torch.randint(0, c, (b,), generator=g)] = 1
    targets[0, (targets[0] == 0).nonzero()[:3, 0]] = -1
    return logits, targets, torch.arange(b) * 3 + 100


def run_case(case: tuple, rows: slice) -> dict:
    """Loss values and selections of one case for the batch rows ``rows`` (all rows = single process)."""
    _, name, hparams, b, c, _, epochs = case
    logits, targets, index = make_batch(b, c, seed=b * c)
    loss = build_loss(name, **hparams)
    out = {"values": [], "modified": [], "remembered": []}
    for epoch in epochs:
        loss.set_epoch(epoch)
        out["values"].append(loss(logits[rows], targets[rows], index[rows]).item())
        r, cl = loss.last_modified
        out["modified"].append(sorted(zip(r.tolist(), cl.tolist())))
        if name == "ll-cp":  # remembered after this call (a subset of what was modified: strictly > k-th)
            r, cl = loss.corrections()
            out["remembered"].append(sorted(zip(r.tolist(), cl.tolist())))
    if name == "ll-cp":
        out["corrections"] = out["remembered"][-1]
    return out


def role_grad(rows: slice, sync: bool) -> torch.Tensor:
    """Gradient of ROLE's label estimates after one batch (``rows`` of a 9 x 12 batch); ``sync`` averages it
    over the ranks."""
    logits, targets, index = make_batch(9, 12, seed=5)
    role = build_loss("role", num_samples=130, num_classes=12, expected_num_pos=1.5, seed=3,
                      observed_labels=np.zeros((130, 12), dtype=np.int8))
    role(logits[rows], targets[rows], index[rows]).backward()
    if sync:
        average_gradients([role.label_logits])
    return role.label_logits.grad


def per_entry_losses(case: tuple, single: dict, e: int) -> np.ndarray:
    """Float64 per-entry loss matrix of epoch call ``e`` given the single process's selections (the reference
    implementation ``wsml.losses.reference``)."""
    _, name, _, b, c, _, _ = case
    logits, targets, index = make_batch(b, c, seed=b * c)
    t = targets.clone()
    row_of = {int(r): i for i, r in enumerate(index)}
    earlier = single["remembered"][e - 1] if name == "ll-cp" and e > 0 else []
    for r, cl in earlier:  # LL-Cp: previous corrections are POS
        t[row_of[r], cl] = 1
    sel = torch.tensor([row_of[r] * c + cl for r, cl in single["modified"][e]], dtype=torch.long)
    return reference.per_entry(logits.double(), t, sel, correct=name != "ll-r").numpy()


def worker(out: Path) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo")  # rank, world size and store from the launcher's environment
    rank = dist.get_rank()
    results = {}
    for case in CASES:
        b, split = case[3], case[5]
        results[case[0]] = run_case(case, slice(0, split) if rank == 0 else slice(split, b))
    results["role-grad"] = role_grad(slice(0, 5) if rank == 0 else slice(5, 9), sync=True)
    mine = torch.arange(6.0).reshape(3, 2) if rank == 0 else torch.empty((0, 0))  # a rank with no rows at all
    results["gather-empty"] = all_gather_rows(mine)[0]
    torch.save(results, out / f"rank{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.slow  # starts other processes
@pytest.mark.timeout(60)
def test_global_selection_over_two_processes_equals_one_process(tmp_path: Path, ddp) -> None:
    for p in ddp([os.path.abspath(__file__), str(tmp_path)], nprocs=2, timeout=50):
        assert p.returncode == 0, p.stdout[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for case in CASES:
        key, name, _, b, c, split, epochs = case
        single = run_case(case, slice(0, b))
        r0, r1 = ranks[0][key], ranks[1][key]
        for e in range(len(epochs)):
            assert sorted(r0["modified"][e] + r1["modified"][e]) == single["modified"][e], (key, e)
            assert len(single["modified"][e]) > 0
            per = per_entry_losses(case, single, e)
            assert single["values"][e] == pytest.approx(per.mean(), rel=1e-5)
            # each rank returns the mean over its own B_r·C entries
            assert r0["values"][e] == pytest.approx(per[:split].mean(), rel=1e-5), (key, e)
            assert r1["values"][e] == pytest.approx(per[split:].mean(), rel=1e-5), (key, e)
        if name == "ll-cp":
            assert r0["corrections"] == r1["corrections"] == single["corrections"]
            assert len(single["corrections"]) > len(single["remembered"][0]) > 0
    # ROLE: after average_gradients both ranks hold the average of the two local gradients, as DDP does
    expected = (role_grad(slice(0, 5), sync=False) + role_grad(slice(5, 9), sync=False)) / 2
    torch.testing.assert_close(ranks[0]["role-grad"], expected)
    torch.testing.assert_close(ranks[1]["role-grad"], expected)
    for r in ranks:  # the one variable-size gather: a rank without rows takes the others' shape
        assert r["gather-empty"].tolist() == [[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]]
    assert float(expected[torch.arange(5) * 3 + 100].abs().sum()) > 0


if __name__ == "__main__":
    worker(Path(sys.argv[1]))
