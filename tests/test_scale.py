"""Scale (issue 17, ingestion and training side): own-data labels built sparse equal the dense ones, the prepared
folder's sparse files round-trip, feature-row own data, ROLE refuses a per-image state that cannot fit, and LL-Cp
keeps its permanent corrections as sparse keys."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures.adapter_files import jpeg

from wsml.cli import main
from wsml.data import build_dataset
from wsml.data.index import DatasetIndex
from wsml.labels import NEG, POS, SparseLabels, as_full
from wsml.losses import build_loss

ROWS = [["img/0.jpg", "cat;dog", "bird", "train"], ["img/1.jpg", "dog", "", "train"],
        ["img/2.jpg", "bird", "cat", "train"], ["img/3.jpg", "", "dog", "train"], ["img/4.jpg", "eel;cat", "", "train"],
        ["img/5.jpg", "cat", "eel", "val"], ["img/6.jpg", "dog;bird", "", "test"], ["img/7.jpg", "eel", "dog", "test"],
        ["img/8.jpg", "bird;eel", "", "train"], ["img/9.jpg", "dog", "", "val"]]


def _write(path: Path, rows, header=("path", "labels", "negatives", "split")) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def _dense(labels) -> np.ndarray:
    return labels.to_dense() if isinstance(labels, SparseLabels) else np.asarray(labels)


def _reference(rows, names, as_full: bool) -> np.ndarray:
    """The labels of ``rows`` by definition: listed positives 1, listed negatives -1 (full: 0), the rest 0."""
    out = np.zeros((len(rows), len(names)), dtype=np.int8)
    for r, row in enumerate(rows):
        for col, value in ((1, POS), (2, NEG)):
            for n in filter(None, row[col].split(";")):
                out[r, names.index(n)] = value
    return (out == POS).astype(np.uint8) if as_full else out


@pytest.fixture
def own_csv(tmp_path):
    _write(tmp_path / "labels.csv", ROWS)
    _write(tmp_path / "nosplit.csv", [r[:3] for r in ROWS], header=("path", "labels", "negatives"))
    for r in ROWS:
        jpeg(tmp_path / r[0])
    return tmp_path


@pytest.mark.parametrize("options", [{}, {"complete_eval": False}, {"simulate_partial": True, "num_neg": 1},
                                     {"csv": "nosplit.csv", "val_frac": 0.3}])
def test_sparse_and_dense_ingestion_give_identical_labels(own_csv, options):
    sparse = build_dataset("csv", str(own_csv), sparse_labels=True, **options)
    dense = build_dataset("csv", str(own_csv), sparse_labels=False, **options)
    names = dense.class_names
    assert sparse.class_names == names == ["bird", "cat", "dog", "eel"] and sparse.splits.keys() == dense.splits.keys()
    by_path = {r[0]: r for r in ROWS}
    for s in dense.splits:
        d, sp = dense[s], sparse[s]
        assert sp.samples == d.samples
        for what in ("observed", "full"):
            a, b = getattr(d, what), getattr(sp, what)
            assert (a is None) == (b is None)
            if a is None:
                continue
            assert isinstance(a, np.ndarray) and a.dtype == (np.uint8 if what == "full" else np.int8)
            assert isinstance(b, SparseLabels) or (options.get("simulate_partial") and s != "test")
            assert np.array_equal(_dense(b).astype(a.dtype), a)
            if not options.get("simulate_partial"):  # against the definition, row by row
                assert np.array_equal(a, _reference([by_path[p] for p in d.samples], names, what == "full"))
    assert sparse.meta == dense.meta  # statistics, positives per class, label sets: the same numbers


def test_prepared_sparse_folder_round_trips(own_csv, tmp_path):
    index = build_dataset("csv", str(own_csv), sparse_labels=True)
    out = index.save(tmp_path / "prepared")
    files = json.loads((out / "manifest.json").read_text())["splits"]
    assert "labels_obs.npz" in files["train"]["files"] and "labels_full.npz" in files["test"]["files"]
    assert not list(out.glob("*/labels_*.npy"))
    back = DatasetIndex.load(out)
    assert isinstance(back["train"].observed, SparseLabels)
    assert np.array_equal(back["train"].observed.to_dense(), index["train"].observed.to_dense())
    for s in ("val", "test"):  # complete labels: stored and loaded as a SparseLabels of the positives
        assert isinstance(back[s].full, SparseLabels)
        assert np.array_equal(as_full(back[s].full), as_full(index[s].full))
    assert back.meta["stats"] == json.loads(json.dumps(index.meta["stats"]))


def test_feature_rows_for_own_data(tmp_path, capsys):
    rows = [[f"r{i}", ["a", "b", "a;b"][i % 3], ""] for i in range(20)]
    _write(tmp_path / "labels.csv", rows, header=("path", "labels", "negatives"))
    feats = np.arange(20 * 3, dtype=np.float32).reshape(20, 3)
    np.save(tmp_path / "f.npy", feats)
    index = build_dataset("csv", str(tmp_path), features="f.npy")  # no image exists: none is read
    assert index.kind == "features"
    for s in ("train", "val"):  # each row keeps its own feature row through the seeded train/val split
        rows_of = [int(p[1:]) for p in index[s].samples]
        assert np.array_equal(index[s].features, feats[rows_of])
    np.save(tmp_path / "short.npy", feats[:5])
    assert main(["prepare", "csv", "--root", str(tmp_path), "--out", str(tmp_path / "p"), "features=short.npy"]) == 2
    err = capsys.readouterr().err
    assert "short.npy: expected a float matrix with one row per labels-CSV data row (20 rows)" in err


def test_role_refuses_a_state_that_cannot_fit(tmp_path, capsys, monkeypatch):
    rows = [[f"r{i}", ["a", "b"][i % 2], ""] for i in range(10)]
    _write(tmp_path / "labels.csv", rows, header=("path", "labels", "negatives"))
    np.save(tmp_path / "f.npy", np.ones((10, 4), dtype=np.float32))
    assert main(["prepare", "csv", "--root", str(tmp_path), "--out", str(tmp_path / "p"), "features=f.npy"]) == 0
    capsys.readouterr()
    monkeypatch.setattr("wsml.train.builders.device_memory", lambda device: 100)  # bytes: 8 rows x 2 classes need 256
    code = main(["train", "configs/custom/default.yaml", f"data.path={tmp_path / 'p'}", "model.backbone=linear",
                 "model.pretrained=false", "train.scheme=end-to-end", "train.epochs=1", "loss.name=role",
                 "loss.expected_num_pos=1", f"run.out={tmp_path / 'runs'}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "loss 'role' keeps a dense 8 x 2 per-image state (0.0 GiB)" in err[0] and "ll-cp" in err[0]


def test_ll_cp_keeps_its_corrections_sparse():
    loss = build_loss("ll-cp", delta_rel=10.0)
    loss.set_epoch(2)
    gen = torch.Generator().manual_seed(0)
    num_rows, c = 10**9, 50  # row ids of a billion-image data set: a dense N x C store could not exist
    total = 0
    for _ in range(3):
        index = torch.randint(0, num_rows, (16,), generator=gen)
        loss(torch.randn(16, c, generator=gen), torch.zeros(16, c), index=index)
        total += loss.last_modified[0].numel()
    rows, classes = loss.corrections()
    assert 0 < len(rows) <= total and rows.max() >= 2**31 // c  # row ids past what an int32 row · C key holds
    assert loss.get_extra_state()["corrections"]["keys"].numel() == len(rows)  # the checkpointed state: the keys only


def test_folder_and_formatted_sparse_equal_dense(tmp_path):
    from test_fidelity import write_cole_formatted

    tree = {"cat": ["a.jpg", "b.jpg", "c.jpg"], "dog": ["a.jpg", "d.jpg", "f.jpg"], "fox": ["e.png"]}
    for cls, files in tree.items():
        for fn in files:
            jpeg(tmp_path / "tree" / cls / fn, seed=ord(fn[0]))
    cole = tmp_path / "cole"
    write_cole_formatted(cole, cole)
    for name, root, opts in (("folder", "tree", {"val_frac": 0.3}), ("formatted", "cole", {})):
        sparse = build_dataset(name, str(tmp_path / root), sparse_labels=True, **opts)
        dense = build_dataset(name, str(tmp_path / root), sparse_labels=False, **opts)
        assert sparse.splits.keys() == dense.splits.keys() and sparse.meta == dense.meta
        for s in dense.splits:
            for what in ("observed", "full"):
                a, b = getattr(dense[s], what), getattr(sparse[s], what)
                assert (a is None) == (b is None) and (a is None or isinstance(b, SparseLabels))
                assert a is None or np.array_equal(_dense(b).astype(a.dtype), a)


def test_sparse_full_labels_read_like_dense_ones(own_csv):
    """Consumers read full labels through as_full / eval_targets: the same rows whether stored dense or sparse."""
    sparse = build_dataset("csv", str(own_csv), sparse_labels=True)["test"]
    dense = build_dataset("csv", str(own_csv), sparse_labels=False)["test"]
    rows = np.array([1, 0, 1])
    assert np.array_equal(as_full(sparse.full, rows), dense.full[rows]) and as_full(sparse.full).dtype == np.uint8
    assert np.array_equal(sparse.eval_targets()[0], dense.eval_targets()[0])
    assert np.array_equal(sparse.train_targets(), dense.train_targets())
