"""wsml.metrics: AP/mAP against sklearn (ties, empty classes, masks), group mAP, validation."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from wsml.labels import SparseLabels
from wsml.metrics import (
    average_precision_per_class,
    class_groups,
    group_mean_average_precision,
    mean_average_precision,
)


def sklearn_ap(scores: np.ndarray, labels: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Independent reference: one sklearn call per class on the counted entries; 0 without positives."""
    out = np.zeros(scores.shape[1])
    for c in range(scores.shape[1]):
        keep = np.ones(len(scores), bool) if mask is None else mask[:, c]
        y, s = labels[keep, c], scores[keep, c]
        if y.sum() > 0:
            out[c] = average_precision_score(y, s)
    return out


@pytest.mark.parametrize("seed", range(6))
def test_matches_sklearn_with_many_ties(seed):
    rng = np.random.default_rng(seed)
    n, c = int(rng.integers(20, 300)), int(rng.integers(1, 12))
    dtype = (np.float32, np.float64)[seed % 2]
    scores = np.round(rng.random((n, c)), 1).astype(dtype)  # 11 distinct values: ties everywhere
    labels = (rng.random((n, c)) < rng.uniform(0.05, 0.6)).astype(np.int64)
    labels[:, 0] = 0  # an empty class
    if c > 1:
        labels[:, 1] = 1  # an all-positive class
    ap = average_precision_per_class(scores, labels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns on the empty class (and returns 0 too)
        np.testing.assert_allclose(ap, sklearn_ap(scores, labels), atol=1e-9)
        assert average_precision_score(labels[:, 0], scores[:, 0]) == 0.0
    assert ap[0] == 0.0
    assert mean_average_precision(scores, labels) == pytest.approx(ap.mean() * 100, abs=1e-9)


def test_hand_worked_ties_and_row_order():
    # thresholds 0.9: TP 1 of K 1 (R 1/2); 0.8 (one pos, one neg tied): TP 2 of K 3 (R 1) -> AP = 1/2 + 1/2 * 2/3
    scores = np.array([[0.9], [0.8], [0.8], [0.1]])
    labels = np.array([[1], [0], [1], [0]])
    assert average_precision_per_class(scores, labels)[0] == pytest.approx(5 / 6, abs=1e-12)
    for perm in ([3, 2, 1, 0], [2, 0, 3, 1], [1, 2, 0, 3]):  # ties are grouped: row order never matters
        assert average_precision_per_class(scores[perm], labels[perm])[0] == pytest.approx(5 / 6, abs=1e-12)


def test_mask_removes_entries():
    rng = np.random.default_rng(7)
    n, c = 200, 9
    scores = np.round(rng.random((n, c)), 1)
    labels = rng.random((n, c)) < 0.2
    mask = rng.random((n, c)) < 0.6
    mask[:, 2] = False  # no counted entry at all
    mask[:, 3] &= ~labels[:, 3]  # counted entries but no counted positive
    ap = average_precision_per_class(scores, labels, mask)
    np.testing.assert_allclose(ap, sklearn_ap(scores, labels, mask), atol=1e-9)
    assert ap[2] == 0.0 and ap[3] == 0.0
    # whatever sits in removed entries does not matter
    scores2, labels2 = scores.copy(), labels.copy()
    scores2[~mask] = rng.random(int((~mask).sum())) * 5 - 2
    labels2[~mask] = ~labels2[~mask]
    np.testing.assert_allclose(average_precision_per_class(scores2, labels2, mask), ap, atol=1e-12)
    # reproduction policy: class 2 (no counted entry) is left out of the mean; class 3 (no positive) counts as 0
    assert mean_average_precision(scores, labels, mask) == pytest.approx(np.delete(ap, 2).mean() * 100, abs=1e-9)


def test_infinite_scores_and_masked_minus_inf():
    # ±inf are valid scores: same AP as a finite monotone stand-in; masked entries also at -inf are ignored
    scores = np.array([[np.inf], [1.0], [-np.inf], [-np.inf], [-np.inf], [0.5]])
    labels = np.array([[1], [0], [1], [0], [1], [1]])
    mask = np.array([[True], [True], [True], [True], [False], [False]])
    finite = np.nan_to_num(scores, posinf=1e30, neginf=-1e30)
    assert average_precision_per_class(scores, labels, mask)[0] == pytest.approx(0.75, abs=1e-12)
    assert average_precision_per_class(scores, labels, mask)[0] == pytest.approx(
        sklearn_ap(finite, labels, mask)[0], abs=1e-12
    )
    assert average_precision_per_class(scores, labels)[0] == pytest.approx(sklearn_ap(finite, labels)[0], abs=1e-12)


def test_torch_inputs_and_dtypes():
    rng = np.random.default_rng(3)
    scores = np.round(rng.random((64, 5)), 2).astype(np.float32)
    labels = rng.random((64, 5)) < 0.3
    ref = sklearn_ap(scores, labels)
    np.testing.assert_allclose(average_precision_per_class(torch.from_numpy(scores), torch.from_numpy(labels)), ref,
                               atol=1e-9)
    half = torch.from_numpy(scores).half()  # fp16 values are compared exactly as given
    np.testing.assert_allclose(average_precision_per_class(half, torch.from_numpy(labels).float()),
                               sklearn_ap(half.float().numpy(), labels), atol=1e-9)
    ints = np.round(scores.astype(np.float64) * 100).astype(np.int64)
    np.testing.assert_allclose(average_precision_per_class(ints, labels.astype(np.uint8)), ref, atol=1e-9)
    assert average_precision_per_class(scores[:, 0], labels[:, 0]).shape == (1,)  # 1-D: one class
    assert average_precision_per_class(np.zeros((0, 3)), np.zeros((0, 3))).tolist() == [0.0, 0.0, 0.0]


def test_inputs_not_modified():
    scores = np.asfortranarray(np.array([[0.3, 0.1], [0.2, 0.9], [0.5, 0.4]]))
    before = scores.copy()
    average_precision_per_class(scores, np.array([[1, 0], [0, 1], [1, 1]]), mask=np.ones((3, 2), bool))
    np.testing.assert_array_equal(scores, before)


def test_validation_errors():
    s = np.random.default_rng(0).random((4, 3))
    y = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 0]])
    with pytest.raises(ValueError, match=r"labels shape \(4, 2\) does not match scores shape \(4, 3\)"):
        average_precision_per_class(s, y[:, :2])
    with pytest.raises(ValueError, match="observed-label matrix.*mask"):
        average_precision_per_class(s, y - (y == 0))  # {1, -1}: observed labels passed by mistake
    with pytest.raises(ValueError, match=r"values \[2\].*row 1, column 2"):
        bad = y.copy()
        bad[1, 2] = 2
        average_precision_per_class(s, bad)
    with pytest.raises(ValueError, match=r"\[0\.5\]"):
        average_precision_per_class(s, y * 0.5)
    with pytest.raises(ValueError, match="NaN.*row 2, column 0"):
        nan = s.copy()
        nan[2, 0] = np.nan
        average_precision_per_class(nan, y)
    with pytest.raises(ValueError, match="mask shape"):
        average_precision_per_class(s, y, mask=np.ones((3, 3), bool))
    with pytest.raises(ValueError, match="mask must be"):
        average_precision_per_class(s, y, mask=np.full((4, 3), 2))
    with pytest.raises(ValueError, match="matrix"):
        average_precision_per_class(s[None], y[None])
    with pytest.raises(ValueError, match="dtype"):
        average_precision_per_class(np.full((4, 3), "a"), y)
    with pytest.raises(ValueError, match="no classes"):
        mean_average_precision(np.zeros((4, 0)), np.zeros((4, 0)))


def test_class_groups_stable_and_uneven():
    known = np.array([5, 3, 3, 9, 0, 7, 1, 8, 2, 6])
    # ascending, ties in class-id order: 4(0) 6(1) 8(2) 1(3) 2(3) 0(5) 9(6) 5(7) 7(8) 3(9)
    expected = [[4, 6], [8, 1], [2, 0], [9, 5], [7, 3]]
    assert [g.tolist() for g in class_groups(known)] == expected
    assert [g.tolist() for g in class_groups(known, num_groups=3)] == [[4, 6, 8, 1], [2, 0, 9], [5, 7, 3]]
    with pytest.raises(ValueError, match="num_groups"):
        class_groups(known, num_groups=11)
    with pytest.raises(ValueError, match="non-negative"):
        class_groups(known - 1)


def test_group_map_hand_made():
    rng = np.random.default_rng(11)
    n, c = 120, 10
    scores = np.round(rng.random((n, c)), 1)
    labels = rng.random((n, c)) < np.linspace(0.05, 0.5, c)
    ap = sklearn_ap(scores, labels) * 100
    known = np.array([5, 3, 3, 9, 0, 7, 1, 8, 2, 6])
    groups = [[4, 6], [8, 1], [2, 0], [9, 5], [7, 3]]
    out = group_mean_average_precision(scores, labels, known)
    assert list(out) == ["G1", "G2", "G3", "G4", "G5", "all"]
    for i, g in enumerate(groups):
        assert out[f"G{i + 1}"] == pytest.approx(ap[g].mean(), abs=1e-7)
    assert out["all"] == pytest.approx(ap.mean(), abs=1e-7)
    # known counts straight from sparse observed labels: class k known in known[k] rows
    obs = np.zeros((10, c), np.int8)
    for k in range(c):
        obs[: known[k], k] = np.where(np.arange(known[k]) % 2, 1, -1)
    sparse = SparseLabels.from_dense(obs)
    assert group_mean_average_precision(scores, labels, sparse) == out
    with pytest.raises(ValueError, match="known_counts has 9 classes but scores have 10"):
        group_mean_average_precision(scores, labels, known[:9], num_groups=3)
