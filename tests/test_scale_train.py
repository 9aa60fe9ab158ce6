"""Training-time val and test scoring of splits too large for N × C in memory (issue 17): scores go to chunk files,
rank 0 evaluates a block of classes at a time, and every number equals the dense path's."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from engine_helpers import _full_labels

from wsml.data.index import DatasetIndex, Split
from wsml.labels import SparseLabels, observe_labels
from wsml.runs import RunFolder


def _index(folder: Path, partial: bool) -> Path:
    """Feature rows x = full @ W + noise; complete test labels are sparse; with ``partial``, val and test keep
    observed labels only (recorded as partial) and the data set has OpenImages-style class groups."""
    rng = np.random.default_rng(5)
    c, w = 7, rng.normal(size=(7, 10)).astype(np.float32)
    splits = {}
    for name, n in (("train", 50), ("val", 31), ("test", 29)):
        full = _full_labels(rng, n, c)
        x = (full @ w + 0.5 * rng.normal(size=(n, 10))).astype(np.float32)
        obs = observe_labels(full, num_pos=1, num_neg=2, seed=7) if name == "train" or partial else None
        if name == "test" and not partial:
            full = SparseLabels.from_dense(full)  # complete labels kept sparse, as prepare stores them at scale
        splits[name] = Split(full=None if partial and name != "train" else full, observed=obs, features=x)
    meta = {"label_sets": {"val": "partial", "test": "partial"}, "known_per_class": [9, 3, 5, 1, 7, 2, 4]}
    DatasetIndex("feats", [f"c{i}" for i in range(c)], splits, kind="features", meta=meta if partial else {}).save(
        folder)
    return folder


def _train(data: Path, out: Path, name: str) -> tuple[dict, list]:
    from wsml.config import load_config
    from wsml.train.engine import train

    train(load_config(None, [f"data.path={data}", "model.backbone=linear", "model.pretrained=false",
                             "loss.name=ll-r", "train.epochs=2", "train.device=cpu", f"run.out={out}",
                             f"run.name={name}", "run.quiet=true"]))
    summary = json.loads((out / name / "summary.json").read_text())
    with open(out / name / "metrics.csv") as f:
        history = [{k: v for k, v in r.items() if k != "time_s"} for r in csv.DictReader(f)]
    return {k: v for k, v in summary.items() if k not in ("run_dir", "wall_time_s")}, history


@pytest.mark.parametrize("partial", [False, True], ids=["complete-val", "partial-val"])
def test_blocked_val_and_test_equal_the_dense_ones(tmp_path, monkeypatch, partial):
    import wsml.evaluation as ev
    from wsml.metrics_blocked import ScoreChunks

    data = _index(tmp_path / "data", partial)
    dense = _train(data, tmp_path, "dense")
    monkeypatch.setattr(ev, "DENSE_PREDICTIONS", 0)  # every split counts as too large to hold

    def gather(*args, **kwargs):
        raise AssertionError("N x C scores gathered")

    monkeypatch.setattr(ev, "predict_split", gather)
    monkeypatch.setattr("wsml.train.engine.predict_split", gather)
    blocked = _train(data, tmp_path, "blocked")
    assert blocked == dense  # val criterion (mAP or PU-AUC) every epoch, test mAP, policy, AP per class, groups
    assert dense[0]["val_criterion"] == ("pu-auc" if partial else "map")
    assert ("test_group_map" in dense[0]) == partial and dense[0]["num_test"] == 29
    saved = np.load(tmp_path / "dense" / "predictions_test.npz", allow_pickle=False)
    chunks = ScoreChunks(tmp_path / "blocked" / "predictions_test.chunks")
    np.testing.assert_array_equal(chunks.rows, saved["rows"])
    np.testing.assert_array_equal(chunks.to_dense(), saved["scores"])
    assert not (tmp_path / "blocked" / "predictions_test.npz").exists()
    with pytest.raises(FileNotFoundError, match=r"predictions_test\.chunks/ \(read them .*ScoreChunks"):
        RunFolder(tmp_path / "blocked").predictions("test")
    assert not list((tmp_path / "blocked").glob(".scores_*"))  # scratch folders removed


def _blocked_worker(data: str, out: str) -> None:
    import wsml.evaluation as ev
    from wsml.config import load_config
    from wsml.distributed import cleanup
    from wsml.train.engine import train

    ev.DENSE_PREDICTIONS = 0  # every rank scores its shard to disk; rank 0 evaluates
    train(load_config(None, [f"data.path={data}", "model.backbone=linear", "model.pretrained=false", "loss.name=an",
                             "train.epochs=1", "train.device=cpu", f"run.out={out}", "run.name=ddp",
                             "run.quiet=true"]))
    cleanup()


def test_blocked_scoring_under_two_processes_counts_every_row_once(tmp_path, ddp):
    from wsml.evaluation import evaluate_run

    data = _index(tmp_path / "data", partial=False)
    assert ddp(_blocked_worker, nprocs=2, args=(str(data), str(tmp_path)), timeout=100) == [0, 0]
    run = tmp_path / "ddp"
    summary = json.loads((run / "summary.json").read_text())
    test = evaluate_run(run, "test", device="cpu", write=False)[0]  # one process, every row once
    val = evaluate_run(run, "val", device="cpu", write=False)[0]
    assert summary["world_size"] == 2 and summary["num_test"] == test["num_samples"] == 29
    assert summary["test_map"] == pytest.approx(test["map"], abs=1e-9)
    assert summary["val_map"] == pytest.approx(val["map"], abs=1e-9)  # one epoch: best.pt is the scored model
    assert not list(run.glob(".scores_*")) and (run / "predictions_test.chunks").is_dir()
