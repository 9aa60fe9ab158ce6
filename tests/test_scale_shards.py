"""find-missing's streaming top-k equals the dense ranking; eval and find-missing under 2 gloo processes (each
scoring its shard to disk, rank 0 merging) equal one process (issue 17)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from wsml.labels import NEG, POS, UNOBS, SparseLabels
from wsml.tools.find_missing import rank_missing


def _dense_ranking(observed, thr, score, flags, k):
    """The ranking as one [N, C] computation: candidates, then (score desc, row, class), then the first k."""
    candidate = (observed == UNOBS) & np.isfinite(score)
    if k is None:
        candidate &= flags.any(axis=0)
    rows, classes = np.nonzero(candidate)
    s = score[rows, classes]
    order = np.lexsort((classes, rows, -s))[:k]
    return rows[order], classes[order], s[order]


@pytest.mark.parametrize("k", [1, 7, 60, 10**6, None])
def test_streaming_top_k_equals_the_dense_ranking(k):
    rng = np.random.default_rng(3)
    n, c = 83, 11
    observed = rng.choice([POS, UNOBS, UNOBS, UNOBS, NEG], size=(n, c)).astype(np.int8)
    model = (np.round(rng.random((n, c)) * 10) / 10).astype(np.float32)  # heavy ties across chunks
    oof = (np.round(rng.random((n, c)) * 10) / 10).astype(np.float32)
    model[5, 3] = np.nan  # an unscored entry is never a candidate
    corrected = rng.random((n, c)) < 0.05
    thr = rng.random(c)
    oof_thr = rng.random((n, c))  # per row: the threshold of the fold model that scored it
    score = 0.5 * (model + oof)
    flags = np.stack([model >= thr, oof >= oof_thr, corrected])
    want = _dense_ranking(observed, thr, score, flags, k)
    for chunk_rows, obs in ((1, observed), (9, SparseLabels.from_dense(observed)), (1000, observed)):
        rows, classes, s, sources = rank_missing(obs, thr, model, oof, corrected, "mean", k, oof_thr,
                                                 chunk_rows=chunk_rows)  # sparse labels: densified per chunk
        np.testing.assert_array_equal(rows, want[0])
        np.testing.assert_array_equal(classes, want[1])
        np.testing.assert_array_equal(s, want[2])
        expect = [";".join(name for name, f in zip(("model", "oof", "ll-cp"), flags[:, r, cc]) if f)
                  for r, cc in zip(rows, classes)]
        assert sources == expect


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    from engine_helpers import make_feature_index

    from wsml.config import load_config
    from wsml.tools.thresholds import ensure_thresholds
    from wsml.train.engine import train

    tmp = tmp_path_factory.mktemp("shards")
    data = make_feature_index(tmp / "data", n_train=45, n_val=23, n_test=37)  # odd: padded shards
    train(load_config(None, [f"data.path={data}", "model.backbone=linear", "model.pretrained=false",
                             "loss.name=ll-r", "train.epochs=1", "train.device=cpu", f"run.out={tmp}", "run.name=r",
                             "run.quiet=true"]))
    ensure_thresholds(tmp / "r", "cpu")  # thresholds.json: the ranks only read it
    return tmp / "r"


def _sharded_worker(run: str, out: str) -> None:
    from wsml.distributed import cleanup, init_distributed
    from wsml.evaluation import evaluate_run
    from wsml.tools.find_missing import find_missing

    info = init_distributed("cpu")
    result = {"eval": evaluate_run(run, "test", device="cpu", write=False)[0],
              "top": find_missing(run, k=12, device="cpu"), "flagged": find_missing(run, device="cpu")}
    if info.is_main:
        Path(out).write_text(json.dumps(result))
    cleanup()


def test_two_processes_equal_one(run, tmp_path, ddp):
    from wsml.evaluation import evaluate_run
    from wsml.tools.find_missing import find_missing

    one = {"eval": evaluate_run(run, "test", device="cpu", write=False)[0],
           "top": find_missing(run, k=12, device="cpu"), "flagged": find_missing(run, device="cpu")}
    assert ddp(_sharded_worker, nprocs=2, args=(str(run), str(tmp_path / "two.json")), timeout=100) == [0, 0]
    two = json.loads((tmp_path / "two.json").read_text())
    assert two["eval"]["num_samples"] == 37 and len(two["top"]) == 12 and one["flagged"]
    assert two["eval"]["map"] == pytest.approx(one["eval"]["map"], abs=1e-6)
    assert two["eval"]["ap_per_class"] == pytest.approx(one["eval"]["ap_per_class"], abs=1e-4)
    for key in ("top", "flagged"):  # the same pairs in the same order (scores to float32 rounding)
        assert [(r["row"], r["class"], r["sources"]) for r in two[key]] == \
            [(r["row"], r["class"], r["sources"]) for r in one[key]]
        assert [r["score"] for r in two[key]] == pytest.approx([r["score"] for r in one[key]], abs=1e-6)
    assert not list(run.glob(".scores_*")) and not (run / "predictions_test.chunks").exists()  # scratch removed


def test_folds_refused_where_dense_out_of_fold_scores_would_not_fit(run, monkeypatch):
    import wsml.tools.find_missing as fm

    monkeypatch.setattr(fm, "OOF_MAX_ENTRIES", 100)  # the run's 45 x 6 training entries count as too many
    with pytest.raises(ValueError, match=r"--folds keeps .* \(45 x 6: .*no --folds\), which stream"):
        fm.find_missing(run, k=3, folds=2, device="cpu")


def test_large_eval_keeps_chunked_predictions(run, tmp_path, monkeypatch, capsys):
    import shutil

    import wsml.evaluation as ev
    from wsml.cli import main
    from wsml.metrics_blocked import ScoreChunks
    from wsml.tools.thresholds import ensure_thresholds

    big = tmp_path / "big"
    shutil.copytree(run, big)
    small, scores, rows = ev.evaluate_run(big, "test", device="cpu")
    (big / "thresholds.json").unlink()  # chosen again below, from chunked val scores
    want_thr = ensure_thresholds(big, "cpu")
    (big / "thresholds.json").unlink()
    monkeypatch.setattr(ev, "DENSE_PREDICTIONS", 0)  # every split counts as too large to hold
    assert main(["eval", str(big), "--device", "cpu"]) == 0
    assert "per-class F1 at the val thresholds is not computed" in capsys.readouterr().out
    stored = json.loads((big / "eval_test.json").read_text())
    assert stored.pop("predictions").startswith("predictions_test.chunks/") and stored == small
    assert not (big / "predictions_test.npz").exists()  # no stale dense file beside the chunks
    chunks = ScoreChunks(big / "predictions_test.chunks")
    np.testing.assert_array_equal(chunks.rows, rows)
    np.testing.assert_array_equal(chunks.to_dense(), scores)
    got_thr = ensure_thresholds(big, "cpu")  # val scored again, kept in chunks, thresholds a block at a time
    assert (big / "predictions_val.chunks").is_dir()
    assert {k: got_thr[k] for k in ("thresholds", "f1", "num_pos", "source")} == \
        {k: want_thr[k] for k in ("thresholds", "f1", "num_pos", "source")}
