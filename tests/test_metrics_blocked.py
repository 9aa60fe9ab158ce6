"""Blocked evaluation from score chunks (wsml.metrics_blocked) equals the dense metrics exactly (issue 17)."""

from __future__ import annotations

import numpy as np
import pytest

from wsml.data import DatasetIndex, Split
from wsml.labels import SparseLabels
from wsml.metrics import (
    average_precision_per_class,
    group_map_from_ap,
    group_mean_average_precision,
    partial_labels_map,
)
from wsml.metrics_blocked import (
    ClassTargets,
    ScoreChunks,
    ScoreChunkWriter,
    ap_per_class_blocked,
    map_blocked,
    partial_labels_map_blocked,
    score_split_blocked,
)


def _data(seed: int = 0, n: int = 300, c: int = 23):
    rng = np.random.default_rng(seed)
    scores = (np.round(rng.random((n, c)) * 20) / 20).astype(np.float32)  # many ties
    full = rng.random((n, c)) < np.linspace(0.0, 0.6, c)  # class 0: no positive
    obs = np.where(rng.random((n, c)) < 0.5, np.where(full, 1, -1), 0).astype(np.int8)
    obs[:, 4] = 0  # no counted entry
    obs[:, 5] = np.where(obs[:, 5] != 0, -1, 0)  # only negatives known
    return scores, full, obs


def _write_shards(folder, scores: np.ndarray, world: int = 2, chunk_rows: int = 40) -> None:
    """Shards as DistributedSampler deals them (padded with repeated rows), each rank's own chunk files."""
    n = len(scores)
    per = -(-n // world)
    order = np.concatenate([np.arange(n), np.arange(per * world - n)])
    for rank in range(world):
        rows = order[rank::world]
        w = ScoreChunkWriter(folder, scores.shape[1], rank, chunk_rows=chunk_rows)
        for i in range(0, len(rows), 17):  # batches of 17
            w.append(scores[rows[i:i + 17]], rows[i:i + 17])
        w.close()


def test_chunks_round_trip_and_deduplicate(tmp_path):
    scores, _, _ = _data()
    _write_shards(tmp_path, scores, world=3)
    store = ScoreChunks(tmp_path)
    assert store.rows.tolist() == list(range(len(scores)))
    np.testing.assert_array_equal(store.to_dense(), scores)
    got = np.zeros_like(scores)
    for rows, s in store.row_chunks():
        got[rows] = s
    np.testing.assert_array_equal(got, scores)
    with pytest.raises(FileNotFoundError, match="no score chunks"):
        ScoreChunks(tmp_path / "empty")


@pytest.mark.parametrize("block_bytes", [300 * 40 * 4, 2**30])  # blocks of 4 classes; one block
def test_blocked_metrics_equal_dense(tmp_path, block_bytes):
    scores, full, obs = _data()
    _write_shards(tmp_path, scores)
    store = ScoreChunks(tmp_path)
    ap = ap_per_class_blocked(store, ClassTargets.full(full.astype(np.uint8), store.rows), block_bytes)
    np.testing.assert_array_equal(ap, average_precision_per_class(scores, full))
    known = np.arange(scores.shape[1]) % 6
    for o in (obs, SparseLabels.from_dense(obs)):
        t = ClassTargets.observed(o, store.rows)
        ap = ap_per_class_blocked(store, t, block_bytes)
        np.testing.assert_array_equal(ap, average_precision_per_class(scores, obs == 1, obs != 0))
        assert partial_labels_map_blocked(ap, t) == partial_labels_map(scores, obs == 1, obs != 0)
        dense = group_mean_average_precision(scores, obs == 1, known, num_groups=4, mask=obs != 0)
        assert str(group_map_from_ap(ap, t.any_counted(), known, 4)) == str(dense)  # NaN-safe equality
        assert map_blocked(ap, t.any_counted()) == dense["all"]


@pytest.mark.parametrize("partial", [False, True])
def test_score_split_blocked_equals_the_dense_score_split(tmp_path, partial):
    from wsml.evaluation import split_group_map
    from wsml.partial_val import score_split

    scores, full, obs = _data(1, n=120, c=9)
    splits = {"test": Split(full=full.astype(np.uint8), observed=obs), "val": Split(observed=obs),
              "sparse": Split(observed=SparseLabels.from_dense(obs))}
    meta = {"known_per_class": list(range(9)), "label_sets": {s: "partial" if partial else "complete" for s in splits}}
    index = DatasetIndex("t", [f"c{i}" for i in range(9)], splits, kind="features", meta=meta)
    rows = np.arange(120)[::-1]  # any row order: both sides sort by row id
    w = ScoreChunkWriter(tmp_path, 9)
    w.append(scores[rows], rows)
    w.close()
    ScoreChunkWriter(tmp_path, 9, rank=1).close()  # an empty shard writes nothing
    store = ScoreChunks(tmp_path)
    for name in splits:
        want = {**score_split(index, name, scores, np.arange(120)),
                "group_map": split_group_map(index, name, scores, np.arange(120))}
        assert str(score_split_blocked(index, name, store, block_bytes=120 * 40 * 2)) == str(want), name


def test_blocked_nan_scores_are_refused(tmp_path):
    scores, full, _ = _data(n=50, c=9)
    scores[7, 2] = np.nan
    w = ScoreChunkWriter(tmp_path, 9)
    w.append(scores, np.arange(50))
    w.close()
    with pytest.raises(ValueError, match="NaN, first at row 7, column 2"):
        ap_per_class_blocked(ScoreChunks(tmp_path), ClassTargets.full(full, np.arange(50)))
