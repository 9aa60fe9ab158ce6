"""Own data done right (issue 12, and issue 13 items 8-9): partial val recorded and handled honestly, strict label
files, bad images found at prepare time, pixel limit, paths confined to the data root, discoverable options."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from engine_helpers import _full_labels, quadrant_images

from wsml.cli import main
from wsml.data import build_dataset
from wsml.data.loading import load_image
from wsml.metrics import average_precision_per_class, partial_labels_map
from wsml.partial_val import pu_auc_per_class
from wsml.tools.thresholds import best_pu_threshold

ROOT = Path(__file__).resolve().parents[1]
NAMES = ["q0", "q1", "q2", "q3"]


def _png(path: Path, img: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)


def _write(path: Path, header, rows) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def own_folder(folder: Path, n: int = 60, n_test: int = 20, val_rows: int = 0, seed: int = 0) -> Path:
    """Quadrant PNGs + labels.csv: training rows keep one positive, test (and val) rows are complete."""
    rng = np.random.default_rng(seed)
    full = _full_labels(rng, n + n_test, 4)
    imgs = quadrant_images(full, rng)
    rows = []
    for i in range(n + n_test):
        _png(folder / "img" / f"{i}.png", imgs[i])
        split = "test" if i >= n else ("val" if i < val_rows else "train")
        pos = [NAMES[c] for c in np.flatnonzero(full[i])]
        rows.append([f"img/{i}.png", ";".join(pos if split != "train" else pos[:1]), split])
    _write(folder / "labels.csv", ("path", "labels", "split"), rows)
    return folder


# ------------------------------------------------------------------------------------------ metrics and rules


def test_partial_labels_policy_leaves_out_unscorable_classes_and_is_never_100():
    rng = np.random.default_rng(1)
    s = rng.random((30, 3))
    y = (rng.random((30, 3)) < 0.4).astype(np.uint8)
    mask = np.ones((30, 3), bool)
    mask[:, 1] = y[:, 1] == 1  # class 1: only positives counted -> cannot be scored
    r = partial_labels_map(s, y, mask)
    assert r.left_out == [1] and r.num_scored == 2
    assert r.value == pytest.approx(average_precision_per_class(s[:, [0, 2]], y[:, [0, 2]]).mean() * 100)
    only_pos = partial_labels_map(s, y, y == 1)  # single-positive style labels: no negative anywhere
    assert only_pos.value is None and "not available" in only_pos.message and only_pos.left_out == [0, 1, 2]


def test_pu_auc_is_the_auc_of_observed_positives_against_the_rest():
    def roc_auc_score(y, s):  # pairs (positive, other) ordered correctly, ties half
        d = s[y][:, None] - s[~y][None, :]
        return ((d > 0) + 0.5 * (d == 0)).mean()

    rng = np.random.default_rng(2)
    s = np.round(rng.random((50, 3)), 1)  # ties
    pos = rng.random((50, 3)) < 0.3
    pos[:, 2] = False
    auc = pu_auc_per_class(s, pos)
    for c in (0, 1):
        assert auc[c] == pytest.approx(roc_auc_score(pos[:, c], s[:, c]))
    assert np.isnan(auc[2])


def test_pu_threshold_recovers_the_positive_set_from_a_sample_of_its_positives():
    rng = np.random.default_rng(3)
    truth = rng.random(400) < 0.3
    scores = np.where(truth, rng.uniform(0.6, 1.0, 400), rng.uniform(0.0, 0.5, 400))
    observed = truth & (rng.random(400) < 0.3)  # a third of the positives known, nothing else
    thr, _ = best_pu_threshold(scores, observed)
    pred = scores >= thr
    assert not (pred & ~truth).any() and (pred & truth).sum() >= 0.8 * truth.sum()  # F1 from known positives only
    f1_style, _ = best_pu_threshold(scores, truth)  # with every positive known: exactly the positive set
    assert 0.5 < f1_style < 0.6


# ------------------------------------------------------------------------------------------ strict label files


@pytest.mark.parametrize("labels, message", [
    ("?", r"class name '\?' contains '\?'"), ("q1|q2", r"contains '\|'"), ("q1,q2", "contains ','"),
    ("q1;;q2", "empty class name"), (";", "empty class name"),
])
def test_label_slips_are_errors_naming_file_and_line(tmp_path, labels, message):
    _write(tmp_path / "labels.csv", ("path", "labels"), [["y.png", "q1"], ["x.png", labels]])
    with pytest.raises(ValueError, match=r"labels\.csv, line 3: .*" + message):
        build_dataset("csv", str(tmp_path), on_bad_image="ignore")


def test_an_unclosed_quote_and_a_short_row_name_their_line(tmp_path):
    """An unclosed '"' once swallowed the rest of the file into one 'class name' quoted in a huge message."""
    text = 'path,labels,split\na.png,q1,train\nb.png,"q1;q2,train\nc.png,q2,train\nd.png,q1,train\n'
    (tmp_path / "labels.csv").write_text(text)
    with pytest.raises(ValueError, match=r"labels\.csv, line 3: a quoted field runs on to line 5 \(a '\"' not"):
        build_dataset("csv", str(tmp_path), on_bad_image="ignore")
    (tmp_path / "labels.csv").write_text("path,labels,split\na.png,q1,train\nb.png\n")
    with pytest.raises(ValueError, match=r"line 3: split must be one of .*, got no split field \(fewer fields"):
        build_dataset("csv", str(tmp_path), on_bad_image="ignore")


def test_columns_case_insensitive_unknown_ones_and_unseen_classes(tmp_path):
    rows = [["a.png", "q1", "train"], ["b.png", "q2", "train"], ["c.png", "q1;q3", "TEST"]]
    _write(tmp_path / "labels.csv", ("Path", "Labels", "Split"), rows)
    with pytest.raises(ValueError, match=r"class\(es\) \['q3'\] have no positive in the training rows"):
        build_dataset("csv", str(tmp_path), on_bad_image="ignore")
    index = build_dataset("csv", str(tmp_path), on_bad_image="ignore", allow_unseen_classes=True, val_frac=0.0)
    assert index["test"].samples == ["c.png"] and index["test"].full.tolist() == [[1, 0, 1]]  # Split was read
    _write(tmp_path / "labels.csv", ("path", "labels", "negative"), rows[:2])
    with pytest.raises(ValueError, match=r"unknown column\(s\) \['negative'\]; the known columns are .*negatives"):
        build_dataset("csv", str(tmp_path), on_bad_image="ignore")
    assert len(build_dataset("csv", str(tmp_path), on_bad_image="ignore", ignore_columns="negative",
                             val_frac=0.0)["train"]) == 2


def test_predict_wide_output_is_a_labels_csv(tmp_path):
    """``wsml predict --wide`` says it writes a labels CSV; its ``score:<class>`` columns were unknown columns."""
    _write(tmp_path / "p.csv", ("path", "labels", "score:q1", "score:q2"),
           [["a.png", "q1", "0.9", "0.1"], ["b.png", "q2", "0.2", "0.8"]])
    index = build_dataset("csv", str(tmp_path / "p.csv"), on_bad_image="ignore", val_frac=0.0)
    assert index.class_names == ["q1", "q2"] and index["train"].observed.tolist() == [[1, 0], [0, 1]]
    _write(tmp_path / "w.csv", ("path", "q1", "q2", "score:q1"),
           [["a.png", "1", "0", "0.9"], ["b.png", "0", "1", "0.1"]])
    assert build_dataset("csv", str(tmp_path / "w.csv"), format="wide", on_bad_image="ignore",
                         val_frac=0.0).class_names == ["q1", "q2"]


def test_wide_format(tmp_path):
    _write(tmp_path / "w.csv", ("path", "split", "cat", "dog", "fox"),
           [["a.png", "train", "1", "", "0"], ["b.png", "train", "", "1", ""], ["c.png", "test", "1", "0", "1"]])
    index = build_dataset("csv", str(tmp_path / "w.csv"), format="wide", on_bad_image="ignore",
                          allow_unseen_classes=True, val_frac=0.0)
    assert index.class_names == ["cat", "dog", "fox"]
    assert index["train"].observed.tolist() == [[1, 0, -1], [0, 1, 0]]
    assert index["test"].full.tolist() == [[1, 0, 1]]
    _write(tmp_path / "w.csv", ("path", "cat"), [["a.png", "-1"]])
    with pytest.raises(ValueError, match=r"w\.csv, line 2: column 'cat' holds -1.*minus_one=unknown"):
        build_dataset("csv", str(tmp_path / "w.csv"), format="wide", on_bad_image="ignore")


# ------------------------------------------------------------------------------------------ images and paths


def test_bad_images_found_at_prepare_and_pixel_limit(tmp_path):
    own_folder(tmp_path, n=12, n_test=4)
    (tmp_path / "img" / "3.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    _png(tmp_path / "img" / "5.png", np.zeros((1000, 1200), np.uint8))  # 1.2 MP
    with pytest.raises(ValueError, match=r"2 of 16 images .* are bad \(1 cannot decode, 1 too many pixels\): "
                                         r"img/3\.png \(cannot decode\); img/5\.png.*on_bad_image=drop"):
        build_dataset("csv", str(tmp_path), max_pixels=1_000_000, val_frac=0.0)
    index = build_dataset("csv", str(tmp_path), max_pixels=1_000_000, on_bad_image="drop", val_frac=0.0)
    assert "img/3.png" not in index["train"].samples and index.meta["source"]["dropped_bad_images"] == 2
    with pytest.raises(ValueError, match=r"5\.png: 1200x1000 = 1\.2 megapixels is over the limit of 1 MP"):
        load_image(str(tmp_path / "img" / "5.png"), max_pixels=1_000_000)


def test_paths_outside_the_data_root_are_refused(tmp_path):
    _png(tmp_path / "outside.png", np.zeros((8, 8), np.uint8))
    _png(tmp_path / "data" / "in.png", np.zeros((8, 8), np.uint8))
    for p in ("../outside.png", str(tmp_path / "outside.png")):
        _write(tmp_path / "data" / "labels.csv", ("path", "labels"), [["in.png", "a"], [p, "a"]])
        with pytest.raises(ValueError, match="line 3: image path .* is outside the data root .*allow_outside_root"):
            build_dataset("csv", str(tmp_path / "data"))
        index = build_dataset("csv", str(tmp_path / "data"), allow_outside_root=True, val_frac=0.0)
        assert index["train"].samples[1] == p


# ------------------------------------------------------------------------------------------ the whole path


def test_prepare_help_lists_adapter_options(capsys):
    assert main(["prepare", "csv", "--help"]) == 0
    out = capsys.readouterr().out
    for opt in ("format", "ignore_columns", "on_bad_image", "max_pixels", "allow_outside_root", "val_frac"):
        assert f"\n  {opt} " in out
    with pytest.raises(SystemExit):
        main(["prepare", "--help"])
    assert "20% of train" in capsys.readouterr().out
    assert main(["prepare", "folder"]) == 2  # errors name the flag as typed
    assert "--root on the command line" in capsys.readouterr().err
    assert main(["prepare", "csv", "--root", ".", "colour=red"]) == 2
    assert "unknown option(s) ['colour']" in (err := capsys.readouterr().err) and "prepare csv --help` lists" in err
    assert main(["prepare", "yeast", "colour=red"]) == 2  # an adapter without **options: the same message
    assert "yeast: unknown option(s) ['colour']" in (err := capsys.readouterr().err) and "prepare yeast --help" in err


def test_prepare_options_are_typed_before_any_file_is_read(capsys):
    """``num_pos=abc`` once went into the manifest as text, ``seed=foo`` was a traceback and ``max_pixels=abc``
    reported every image as undecodable: an option's value is checked against the adapter's signature first."""
    from wsml.data._io import typed_options
    from wsml.data.custom import build_csv

    for item, message in (("num_pos=abc", "option num_pos must be an integer, got 'abc'"),
                          ("seed=2.5", "option seed must be an integer, got 2.5"),
                          ("val_frac=abc", "option val_frac must be a number"),
                          ("complete_eval=maybe", "option complete_eval must be true or false"),
                          ("max_pixels=abc", "option max_pixels must be an integer")):
        assert main(["prepare", "csv", "--root", "no-such-folder", item]) == 2, item
        err = capsys.readouterr().err
        assert err.startswith(f"wsml: error: csv: {message}") and err.count("\n") == 1, err
    got = typed_options("csv", build_csv, {"max_pixels": "1e8", "val_frac": 0, "num_pos": 2.0, "complete_eval": False,
                                           "classes": "a.txt", "format": "wide"})
    assert got == {"max_pixels": 100_000_000, "val_frac": 0, "num_pos": 2, "complete_eval": False,
                   "classes": "a.txt", "format": "wide"} and isinstance(got["num_pos"], int)


def test_partial_val_is_recorded_warned_and_selected_by_pu_auc(tmp_path, capsys):
    own_folder(tmp_path / "own")
    prep = tmp_path / "prep"
    assert main(["prepare", "csv", "--root", str(tmp_path / "own"), "--out", str(prep)]) == 0
    out, err = capsys.readouterr()
    assert "warning: the val split has partial labels" in err and "split=val" in err
    assert "(positives per split)" in out and "warning: class(es) with fewer than 5" not in err
    assert json.loads((prep / "manifest.json").read_text())["meta"]["label_sets"]["val"] == "partial"
    (tmp_path / "own" / "img" / "75.png").write_bytes(b"not a png any more")  # a test image goes bad after prepare
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["train", str(ROOT / "configs/custom/small-cnn.yaml"), f"data.path={prep}", "data.image_size=16",
                     "model.options={widths: [8, 16]}", "train.epochs=2", "train.batch_size=16",
                     "data.num_workers=0", f"run.out={tmp_path}", "run.name=r", "run.quiet=true"]) == 0
    finally:
        torch.set_num_threads(n)
    err = capsys.readouterr().err
    assert "1 test image(s) could not be read" in err and "wsml eval" in err
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["val_labels"] == "partial" and summary["val_criterion"] == "pu-auc"
    assert 0 < summary["val_score"] <= 100 and summary["val_map"] is None  # single positives: no val mAP
    assert summary["test_images_skipped"] == 1 and summary["num_test"] == 19 and summary["test_map"] > 0
    assert (tmp_path / "r" / "predictions_test.npz").is_file()
    with open(tmp_path / "r" / "metrics.csv") as f:
        assert {r["val_criterion"] for r in csv.DictReader(f)} == {"pu-auc"}


def test_progress_lines_when_not_a_terminal_and_run_folder_line(tmp_path, capsys):
    from wsml.progress import progress, run_folder_line

    assert list(progress(range(3), "epoch 1/2", every_s=0.0)) == [0, 1, 2]
    err = capsys.readouterr().err  # pytest's stderr is not a terminal: plain lines with an ETA
    assert "epoch 1/2: 1/3 batches" in err and "ETA" in err
    assert run_folder_line(tmp_path / "runs" / "x-2", "x") == (
        f"run folder: {tmp_path / 'runs' / 'x-2'} ({tmp_path / 'runs' / 'x'} exists already; run.name=... picks "
        f"another name, run.overwrite=true reuses it)")


def test_delta_rel_auto_matches_the_missing_positives(tmp_path):
    from wsml.config import ConfigError, load_config
    from wsml.data.index import DatasetIndex, Split
    from wsml.losses.delta_auto import auto_delta_rel
    from wsml.train.engine import plan_stages

    full = np.zeros((6, 10), np.uint8)
    full[:, :3] = 1  # 3 positives per complete val row
    obs = np.zeros((8, 10), np.int8)
    obs[:, 0] = 1  # 1 observed per training row -> 2 missing of 10 entries = 20 %
    index = DatasetIndex("d", [str(c) for c in range(10)], {"train": Split(observed=obs), "val": Split(full=full)})
    cfg = load_config(None, ["loss.name=ll-r", "loss.delta_rel=auto", "train.epochs=11"])
    lines = []
    assert auto_delta_rel(cfg, index, log=lines.append) == pytest.approx(2.0)  # (11 - 1) * 2.0 % = 20 %
    assert "3.00 positives per image (6 complete val rows)" in lines[0] and "Δrel = 2.0" in lines[0]
    del index.splits["val"]
    cfg.loss.expected_num_pos = 2.0
    assert auto_delta_rel(cfg, index, log=lines.append) == pytest.approx(1.0)
    cfg.loss.expected_num_pos = None
    assert auto_delta_rel(cfg, index, log=lines.append) == 0.4 and "loss.expected_num_pos=K" in lines[-1]
    with pytest.raises(ConfigError, match="expected a number or 'auto'"):
        load_config(None, ["loss.delta_rel=often"])
    default = load_config(ROOT / "configs/custom/default.yaml")  # the CPU default: LinearInit stage 1 only
    assert [s.name for s in plan_stages(default)] == ["linear"] and default.data.num_workers == -1


def test_training_rows_without_labels_are_counted_not_refused(tmp_path):
    from wsml.data.custom import prepare_notes

    _write(tmp_path / "labels.csv", ("path", "labels"), [["a.png", "q1"], ["b.png", ""], ["c.png", "q1"]])
    index = build_dataset("csv", str(tmp_path), on_bad_image="ignore", val_frac=0.0)
    assert index.meta["unlabelled_train_rows"] == 1
    assert any(n.startswith("warning: 1 training rows have no label") for n in prepare_notes(index))
