"""wsml.labels: the reference observation protocol, splits, converters, validation and SparseLabels."""

from __future__ import annotations

import numpy as np
import pytest

from wsml.labels import (
    NEG,
    POS,
    UNOBS,
    SparseLabels,
    as_observed,
    from_mask,
    from_unknown_minus_one,
    observe_labels,
    split_train_val,
    subsample,
    validate_full,
    validate_observed,
)

Y3 = np.array(
    [
        [1, 0, 1, 0, 1],  # positives 0 2 4, negatives 1 3
        [0, 1, 0, 0, 0],  # positive 1, negatives 0 2 3 4
        [1, 1, 0, 1, 0],  # positives 0 1 3, negatives 2 4
    ]
)


def explicit_stream(seed: int, num_pos: int, num_neg: int, shuffle_negatives: bool = True) -> np.ndarray:
    """docs/design.md §1 spelled out call by call for Y3: one RandomState, per row shuffle positives then negatives."""
    rng = np.random.RandomState(seed)
    p0, n0 = np.array([0, 2, 4]), np.array([1, 3])
    rng.shuffle(p0)
    if shuffle_negatives:
        rng.shuffle(n0)
    p1, n1 = np.array([1]), np.array([0, 2, 3, 4])
    rng.shuffle(p1)
    if shuffle_negatives:
        rng.shuffle(n1)
    p2, n2 = np.array([0, 1, 3]), np.array([2, 4])
    rng.shuffle(p2)
    if shuffle_negatives:
        rng.shuffle(n2)
    out = np.zeros(Y3.shape, np.int8)
    for i, (p, n) in enumerate([(p0, n0), (p1, n1), (p2, n2)]):
        out[i, p if num_pos == -1 else p[:num_pos]] = POS
        out[i, n if num_neg == -1 else n[:num_neg]] = NEG
    return out


def test_encoding_constants():
    assert (POS, UNOBS, NEG) == (1, 0, -1)


@pytest.mark.parametrize("seed", [1200, 0, 7])
@pytest.mark.parametrize("num_pos,num_neg", [(1, 0), (2, 1), (1, 3), (-1, 0), (0, -1)])
def test_observe_labels_reproduces_reference_stream(seed, num_pos, num_neg):
    got = observe_labels(Y3, num_pos=num_pos, num_neg=num_neg, seed=seed)
    assert got.dtype == np.int8
    np.testing.assert_array_equal(got, explicit_stream(seed, num_pos, num_neg))


def test_negatives_are_shuffled_even_when_none_kept():
    # skipping the negative shuffle when num_neg == 0 changes which positive is kept for some seed
    differs = [
        s for s in range(20) if not np.array_equal(explicit_stream(s, 1, 0), explicit_stream(s, 1, 0, False))
    ]
    assert differs, "test data not sensitive to the negative shuffle"
    for s in differs[:3]:
        np.testing.assert_array_equal(observe_labels(Y3, 1, 0, seed=s), explicit_stream(s, 1, 0))


def test_observe_labels_hand_computed():
    # one positive per row: single-positive keeps exactly it, whatever the random stream
    Y = np.array([[0, 1, 0], [1, 0, 0], [0, 0, 1], [0, 0, 0]])
    np.testing.assert_array_equal(observe_labels(Y, 1, 0, seed=3), Y)
    np.testing.assert_array_equal(observe_labels(Y, 5, 0, seed=3), Y)  # num_pos above the count: all
    np.testing.assert_array_equal(observe_labels(Y, 0, 0, seed=3), np.zeros((4, 3)))
    # -1 = all: the full matrix in wsml's encoding
    np.testing.assert_array_equal(observe_labels(Y3, -1, -1), np.where(Y3 == 1, POS, NEG))
    np.testing.assert_array_equal(observe_labels(Y3, 0, -1), np.where(Y3 == 1, UNOBS, NEG))


def test_observe_labels_counts_and_subsets():
    rng = np.random.default_rng(0)
    Y = (rng.random((300, 12)) < 0.3).astype(np.uint8)
    obs = observe_labels(Y, num_pos=2, num_neg=3, seed=5)
    np.testing.assert_array_equal((obs == POS).sum(1), np.minimum(Y.sum(1), 2))
    np.testing.assert_array_equal((obs == NEG).sum(1), np.minimum((1 - Y).sum(1), 3))
    assert np.all(Y[obs == POS] == 1) and np.all(Y[obs == NEG] == 0)
    np.testing.assert_array_equal(obs, observe_labels(Y, num_pos=2, num_neg=3, seed=5))  # deterministic


def test_observe_labels_errors():
    with pytest.raises(ValueError, match="observed-label matrix"):
        observe_labels(np.array([[1, -1, 0]]))
    with pytest.raises(ValueError, match="num_pos"):
        observe_labels(Y3, num_pos=-2)
    with pytest.raises(ValueError, match="num_neg"):
        observe_labels(Y3, num_neg=1.5)


def test_split_train_val_reference_and_hand_cases():
    for n, frac, seed in [(10, 0.2, 1200), (101, 0.2, 0), (57, 0.35, 9)]:
        tr, va = split_train_val(n, val_frac=frac, seed=seed)
        p = np.random.RandomState(seed).permutation(n)
        n_val = int(round(frac * n))
        np.testing.assert_array_equal(tr, np.sort(p[: n - n_val]))
        np.testing.assert_array_equal(va, np.sort(p[n - n_val :]))
        assert len(va) == n_val and np.array_equal(np.sort(np.r_[tr, va]), np.arange(n))
    tr, va = split_train_val(10, val_frac=0.2)
    assert len(tr) == 8 and len(va) == 2 and np.all(np.diff(tr) > 0)
    tr, va = split_train_val(6, val_frac=0.0)
    assert tr.tolist() == list(range(6)) and va.tolist() == []
    tr, va = split_train_val(0)
    assert len(tr) == len(va) == 0
    for bad in (1.0, -0.1):
        with pytest.raises(ValueError, match="val_frac"):
            split_train_val(10, val_frac=bad)
    with pytest.raises(ValueError, match="n must be"):
        split_train_val(-1)


def test_validate_full_and_observed():
    assert validate_full([[0, 1], [1, 0]]).dtype == np.uint8
    assert validate_full(np.array([[True, False]])).tolist() == [[1, 0]]
    assert validate_full(np.array([[1.0, 0.0]])).tolist() == [[1, 0]]
    with pytest.raises(ValueError, match=r"values \[-1\].*row 0, column 2.*observed-label matrix"):
        validate_full([[1, 0, -1]])
    with pytest.raises(ValueError, match=r"values \[2\]") as err:
        validate_full([[1, 0, 2]])
    assert "observed-label" not in str(err.value)
    with pytest.raises(ValueError, match="NaN"):
        validate_full(np.array([[np.nan, 1.0]]))
    with pytest.raises(ValueError, match="non-integer"):
        validate_full(np.array([[0.5, 1.0]]))
    with pytest.raises(ValueError, match="2-D"):
        validate_full([0, 1])
    obs = validate_observed([[1, 0, -1]])
    assert obs.dtype == np.int8 and obs.tolist() == [[1, 0, -1]]
    with pytest.raises(ValueError, match=r"values \[2, 3\].*row 1, column 0"):
        validate_observed([[1, 0, -1], [2, 3, 0]])


def test_from_unknown_minus_one():
    Y = np.array([[1, 0, -1], [-1, -1, 1]])
    np.testing.assert_array_equal(from_unknown_minus_one(Y), [[POS, NEG, UNOBS], [UNOBS, UNOBS, POS]])
    assert from_unknown_minus_one(Y).dtype == np.int8
    with pytest.raises(ValueError, match=r"values \[2\].*row 1, column 1"):
        from_unknown_minus_one([[1, 0, -1], [0, 2, 1]])
    with pytest.raises(ValueError, match="non-integer"):
        from_unknown_minus_one([[0.5, 1.0]])


def test_from_mask():
    Y = np.array([[1, 0, 1], [0, 0, 1]])
    known = np.array([[True, True, False], [False, True, True]])
    np.testing.assert_array_equal(from_mask(Y, known), [[POS, NEG, UNOBS], [UNOBS, NEG, POS]])
    np.testing.assert_array_equal(from_mask(Y, known.astype(int)), from_mask(Y, known))
    with pytest.raises(ValueError, match="mask shape"):
        from_mask(Y, known[:, :2])
    with pytest.raises(ValueError, match=r"mask: values \[2\]"):
        from_mask(Y, np.where(known, 2, 0))
    with pytest.raises(ValueError, match=r"values \[-1\]"):
        from_mask(Y - 1, known)


def random_observed(n: int, c: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    Y = rng.choice(np.array([POS, UNOBS, NEG], np.int8), size=(n, c), p=[0.1, 0.7, 0.2])
    Y[3] = UNOBS  # an empty row
    return Y


def test_sparse_round_trips_vs_dense(tmp_path):
    Y = random_observed(40, 7, 0)
    sp = SparseLabels.from_dense(Y)
    assert sp.shape == (40, 7) and len(sp) == 40
    np.testing.assert_array_equal(sp.to_dense(), Y)
    rows = np.array([5, 3, 5, 39, 0])  # unordered, repeated, an empty row
    np.testing.assert_array_equal(sp[rows], Y[rows])
    np.testing.assert_array_equal(sp[[-1, -40]], Y[[39, 0]])
    np.testing.assert_array_equal(sp[2:9:3], Y[2:9:3])
    np.testing.assert_array_equal(sp[7], Y[[7]])
    mask = np.arange(40) % 3 == 0
    np.testing.assert_array_equal(sp[mask], Y[mask])
    assert sp[np.array([], int)].shape == (0, 7)
    np.testing.assert_array_equal(sp.take(rows).to_dense(), Y[rows])
    np.testing.assert_array_equal(sp.take([-2]).to_dense(), Y[[38]])
    np.testing.assert_array_equal(sp.known_per_class(), (Y != UNOBS).sum(0))
    np.testing.assert_array_equal(as_observed(sp, rows), Y[rows])
    np.testing.assert_array_equal(as_observed(Y), Y)
    path = tmp_path / "labels.npz"
    sp.save(path)
    back = SparseLabels.load(path)
    assert back.shape == sp.shape
    np.testing.assert_array_equal(back.to_dense(), Y)
    sp.save(tmp_path / "nosuffix")  # written where asked
    np.testing.assert_array_equal(SparseLabels.load(tmp_path / "nosuffix").to_dense(), Y)


def test_sparse_from_coo_matches_dense():
    Y = random_observed(25, 6, 1)
    r, c = np.nonzero(Y)
    perm = np.random.default_rng(2).permutation(len(r))  # any order
    sp = SparseLabels.from_coo(r[perm], c[perm], Y[r, c][perm], Y.shape)
    np.testing.assert_array_equal(sp.to_dense(), Y)
    np.testing.assert_array_equal(sp.indptr, SparseLabels.from_dense(Y).indptr)
    # duplicates: the later triplet wins
    dup = SparseLabels.from_coo([1, 0, 1], [2, 0, 2], [POS, NEG, NEG], (2, 3))
    np.testing.assert_array_equal(dup.to_dense(), [[NEG, 0, 0], [0, 0, NEG]])
    assert SparseLabels.from_coo([], [], [], (3, 2)).to_dense().tolist() == [[0, 0]] * 3


def test_sparse_errors(tmp_path):
    sp = SparseLabels.from_dense([[1, 0], [0, -1]])
    with pytest.raises(IndexError, match="row 2 out of range for 2 rows"):
        sp[[0, 2]]
    with pytest.raises(IndexError, match="row -3"):
        sp.take([-3])
    with pytest.raises(IndexError, match="boolean row mask"):
        sp[np.array([True])]
    with pytest.raises(ValueError, match="row index out of range"):
        SparseLabels.from_coo([0, 2], [0, 0], [1, 1], (2, 2))
    with pytest.raises(ValueError, match="class index out of range"):
        SparseLabels.from_coo([0, 0], [0, 2], [1, 1], (2, 2))
    with pytest.raises(ValueError, match=r"values \[0\]"):
        SparseLabels.from_coo([0], [0], [UNOBS], (1, 1))
    with pytest.raises(ValueError, match="2 rows, 1 cols, 2 values"):
        SparseLabels.from_coo([0, 1], [0], [1, 1], (2, 2))
    with pytest.raises(ValueError, match="row indices must be integers"):
        SparseLabels.from_coo([0.5], [0], [1], (2, 2))
    with pytest.raises(ValueError, match=r"values \[2\]"):
        SparseLabels.from_dense([[2, 0]])
    with pytest.raises(ValueError, match="indptr ends at 1"):
        SparseLabels(np.array([0, 1]), np.array([0, 1]), np.array([1, 1]), 2)
    np.savez(tmp_path / "other.npz", a=np.zeros(2))
    with pytest.raises(ValueError, match="not a SparseLabels file"):
        SparseLabels.load(tmp_path / "other.npz")
    with pytest.raises(FileNotFoundError):
        SparseLabels.load(tmp_path / "missing.npz")


def test_subsample():
    idx = np.array([10, 3, 7, 42, 15, 8, 1, 99, 23, 5])
    got = subsample(idx, 0.3, seed=4)
    expected = np.sort(np.random.RandomState(4).choice(idx, 3, replace=False))
    np.testing.assert_array_equal(got, expected)
    assert set(got) <= set(idx) and np.all(np.diff(got) > 0)
    np.testing.assert_array_equal(subsample(idx, 1.0, seed=4), np.sort(idx))
    assert len(subsample(idx, 0.01, seed=4)) == 1  # at least one row kept
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="subsample fraction"):
            subsample(idx, bad, seed=0)
