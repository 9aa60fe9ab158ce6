"""DDP under torchrun (2 CPU processes, gloo) equals one process with the same global batch."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from engine_helpers import make_feature_index

from wsml.checkpoint import load_checkpoint
from wsml.config import load_config
from wsml.train.engine import train

TESTS = Path(__file__).resolve().parent


def _overrides(data: Path, out: Path, name: str) -> list[str]:
    # global batch 16 (8 per process), LL-R with Δrel = 10 %/epoch: 10 then 20 rejections per 16x6 batch
    return [f"data.path={data}", "model.backbone=linear", "model.pretrained=false", "loss.name=ll-r",
            "loss.delta_rel=10", "optim.name=sgd", "optim.lr=0.05", "train.batch_size=16", "train.epochs=3",
            "train.device=cpu", f"run.out={out}", f"run.name={name}", "run.quiet=true",
            "callbacks=[engine_helpers:SelectionRecorder]"]


def _rows(run: Path) -> list[dict]:
    with open(run / "metrics.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow  # starts other processes
@pytest.mark.timeout(120)
def test_two_process_ddp_matches_one_process(tmp_path, monkeypatch, ddp, child_env):
    data = make_feature_index(tmp_path / "data")  # 64 train rows, val and test 37 rows (odd: padded shards)
    (tmp_path / "rec2").mkdir()
    env = child_env(WSML_TEST_RECORD_DIR=str(tmp_path / "rec2"))
    for proc in ddp(["-m", "wsml.cli", "train", *_overrides(data, tmp_path, "ddp")], env=env):
        assert proc.returncode == 0, proc.stdout[-3000:]

    monkeypatch.setenv("WSML_TEST_RECORD_DIR", str(tmp_path / "rec1"))
    (tmp_path / "rec1").mkdir()
    single = train(load_config(None, _overrides(data, tmp_path, "single")))

    # the same LL selections, batch by batch: rank 0 + rank 1 of DDP = the one process's global batch
    one = json.loads((tmp_path / "rec1" / "sel-rank0.json").read_text())
    r0, r1 = (json.loads((tmp_path / "rec2" / f"sel-rank{r}.json").read_text()) for r in (0, 1))
    assert one.keys() == r0.keys() == r1.keys() == {"1", "2", "3"}
    for epoch in one:
        assert len(one[epoch]) == len(r0[epoch]) == len(r1[epoch]) == 4  # 64 rows / global batch 16
        for b, pairs in enumerate(one[epoch]):
            assert sorted(map(tuple, r0[epoch][b] + r1[epoch][b])) == sorted(map(tuple, pairs)), (epoch, b)
    assert [len(sum(one[e], [])) for e in ("1", "2", "3")] == [0, 4 * 10, 4 * 20]

    a, b = _rows(tmp_path / "single"), _rows(tmp_path / "ddp")
    assert [r["num_modified"] for r in a] == [r["num_modified"] for r in b] == ["0", "40", "80"]
    for ra, rb in zip(a, b):
        assert float(ra["train_loss"]) == pytest.approx(float(rb["train_loss"]), rel=1e-5)
        assert float(ra["val_map"]) == pytest.approx(float(rb["val_map"]), abs=1e-6)
    wa = load_checkpoint(tmp_path / "single" / "last.pt")["model"]
    wb = load_checkpoint(tmp_path / "ddp" / "last.pt")["model"]
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-5, atol=1e-6)

    # evaluation counts every test sample once although 37 rows are sharded 19 + 19 (one padded duplicate)
    pred = np.load(tmp_path / "ddp" / "predictions_test.npz")
    assert pred["rows"].tolist() == list(range(37))
    ddp = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert ddp["num_test"] == 37 and ddp["world_size"] == 2
    assert ddp["test_map"] == pytest.approx(single["test_map"], abs=1e-6)
    # only rank 0 wrote files: one run folder, no stray copies
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(("ddp", "single"))) == ["ddp", "single"]


@pytest.mark.slow  # starts other processes
@pytest.mark.timeout(120)
def test_role_estimates_stay_identical_across_ranks(tmp_path, ddp, child_env):
    # ROLE's label-estimate matrix is not a DDP parameter: the engine averages its gradients over ranks
    data = make_feature_index(tmp_path / "data")
    rec = tmp_path / "rec"
    rec.mkdir()
    overrides = [o for o in _overrides(data, tmp_path, "role") if not o.startswith(("loss.", "callbacks", "train.ep"))]
    argv = ["-m", "wsml.cli", "train", *overrides, "loss.name=role", "loss.expected_num_pos=2", "train.epochs=2",
            "callbacks=[engine_helpers:LossStateDigest]"]
    for proc in ddp(argv, env=child_env(WSML_TEST_RECORD_DIR=str(rec))):
        assert proc.returncode == 0, proc.stdout[-3000:]
    r0, r1 = (json.loads((rec / f"loss-rank{r}.json").read_text()) for r in (0, 1))
    assert r0 == r1 and r0["1"] != r0["2"]  # same estimates on both ranks, and they do change


def _ddp_left_behind(data: str, out: str) -> None:
    import gc

    from torch.nn.parallel import DistributedDataParallel

    gc.disable()  # only the engine's own collection may free the run's reference cycles
    overrides = [o for o in _overrides(Path(data), Path(out), "gc") if not o.startswith("callbacks")]
    train(load_config(None, overrides))
    alive = sum(isinstance(o, DistributedDataParallel) for o in gc.get_objects())
    raise SystemExit(3 if alive else 0)


@pytest.mark.slow  # starts other processes
@pytest.mark.timeout(120)
def test_no_ddp_model_outlives_the_process_group(tmp_path, ddp):
    # a DDP model left in a reference cycle would drop the last reference to the gloo group during the
    # interpreter's exit, where gloo's threads can abort the process: the engine collects it first
    data = make_feature_index(tmp_path / "data")
    assert ddp(_ddp_left_behind, nprocs=2, args=(str(data), str(tmp_path)), timeout=100) == [0, 0]
