"""A practitioner's path: own images + labels CSV -> prepare -> train -> predict with val thresholds -> eval ->
find the labels the annotators missed. Plus the threshold rule and the ranking, checked against brute force."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from wsml.cli import main
from wsml.labels import NEG, POS, UNOBS
from wsml.tools.find_missing import rank_missing
from wsml.tools.oof import fold_assignment
from wsml.tools.thresholds import apply_thresholds, best_f1_threshold, choose_thresholds

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["blue", "green", "red", "white"]  # sorted: the class order build_csv gives
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (40, 60, 230), "white": (235, 235, 235)}
CORNER = {"red": (0, 0), "green": (0, 1), "blue": (1, 0), "white": (1, 1)}


def _image(names: list[str], rng: np.random.Generator) -> np.ndarray:
    """32x32 RGB noise with a coloured square in the class's quadrant for each class present."""
    img = rng.integers(0, 40, (32, 32, 3)).astype(np.uint8)
    for n in names:
        r, q = CORNER[n]
        img[r * 16 + 3:r * 16 + 13, q * 16 + 3:q * 16 + 13] = COLOURS[n]
    return img


@pytest.fixture(scope="module")
def own_data(tmp_path_factory) -> Path:
    """90 PNG files + labels.csv (path,labels,negatives,split): training rows keep one positive (every third
    row all of them) and sometimes one explicit negative; val/test rows are complete."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("own")
    (folder / "img").mkdir()
    rng = np.random.default_rng(0)
    lines = ["path,labels,negatives,split"]
    for i in range(90):
        present = [c for c in CLASSES if rng.random() < 0.45] or [CLASSES[i % 4]]
        Image.fromarray(_image(present, rng)).save(folder / "img" / f"{i:03d}.png")
        split = "train" if i < 60 else ("val" if i < 75 else "test")
        given = present if (split != "train" or i % 3 == 0) else present[:1]
        absent = [c for c in CLASSES if c not in present]
        neg = absent[:1] if split == "train" and i % 4 == 0 else []
        lines.append(f"img/{i:03d}.png,{';'.join(given)},{';'.join(neg)},{split}")
    (folder / "labels.csv").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture(scope="module")
def run(own_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["prepare", "csv", "--root", str(own_data), "--out", str(out / "prep")]) == 0
        assert main(["train", str(ROOT / "configs/custom/small-cnn.yaml"), f"data.path={out / 'prep'}",
                     "data.image_size=32", "model.options={widths: [8, 16]}", "train.epochs=4",
                     "train.batch_size=16", "optim.lr=3e-3", "loss.delta_rel=5", f"run.out={out}",
                     "run.name=mine", "run.quiet=true"]) == 0
    finally:
        torch.set_num_threads(n)
    return out / "mine"


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _brute_f1(s: np.ndarray, y: np.ndarray) -> float:
    best = 0.0
    for t in np.unique(s):
        p = s >= t
        best = max(best, 2 * (p & y).sum() / (p.sum() + y.sum()))
    return best


def test_best_f1_threshold_matches_brute_force():
    rng = np.random.default_rng(3)
    for trial in range(30):
        n = int(rng.integers(2, 40))
        s = np.round(rng.random(n), 1 if trial % 2 else 4)  # coarse rounding: many ties
        y = rng.random(n) < 0.4
        if not y.any():
            assert best_f1_threshold(s, y) == (0.5, pytest.approx(float("nan"), nan_ok=True))
            continue
        thr, f1 = best_f1_threshold(s, y)
        p = s >= thr
        assert f1 == pytest.approx(_brute_f1(s, y))
        assert 2 * (p & y).sum() / (p.sum() + y.sum()) == pytest.approx(f1)  # the rule reproduces the F1
    # by hand: scores .9 .8 .3 .2, labels 1 0 1 0 -> keep the top 3 (F1 = 0.8), threshold midway .3/.2
    assert best_f1_threshold(np.array([.9, .8, .3, .2]), np.array([1, 0, 1, 0])) == (pytest.approx(.25), .8)
    out = choose_thresholds(np.array([[.9, .1], [.2, .3]]), np.array([[1, 0], [0, 0]]))
    assert out["source"] == ["f1", "default"] and out["thresholds"][1] == 0.5
    assert apply_thresholds(np.array([[.9, .5]]), out["thresholds"]).tolist() == [[1, 1]]


def test_rank_missing_by_hand():
    obs = np.array([[POS, UNOBS, UNOBS], [UNOBS, NEG, POS]], dtype=np.int8)
    model = np.array([[.9, .8, .1], [.6, .99, .2]])
    oof = np.array([[.5, .3, .7], [.4, .9, .9]])
    corrected = np.zeros((2, 3), bool)
    corrected[0, 2] = True
    # flagged by model (>= .5): (0,1) .8, (1,0) .6; by ll-cp: (0,2). Observed POS/NEG entries never appear.
    rows, cls, s, src = rank_missing(obs, [.5, .5, .5], model=model, oof=None, corrected=corrected)
    assert list(zip(rows, cls)) == [(0, 1), (1, 0), (0, 2)] and src == ["model", "model", "ll-cp"]
    rows, cls, s, src = rank_missing(obs, [.5, .5, .5], model=model, oof=oof, rank_by="mean", k=2)
    assert list(zip(rows, cls)) == [(0, 1), (1, 0)] and s.tolist() == pytest.approx([.55, .5])
    assert src == ["model", "model"]
    assert rank_missing(obs, [.5] * 3, oof=oof, k=3)[1].tolist() == [2, 0, 1]  # auto -> oof (alone): .7 .4 .3
    rows, cls, s, src = rank_missing(obs, [.5] * 3, model=model, oof=oof, oof_thresholds=[[.5, .5, .5], [.3, .5, .5]])
    assert list(zip(rows, cls)) == [(0, 1), (1, 0), (0, 2)] and s.tolist() == pytest.approx([.55, .5, .4])  # mean
    assert src == ["model", "model;oof", "oof"]  # row 1 flagged by its own OOF threshold .3
    with pytest.raises(ValueError, match="out-of-fold"):
        rank_missing(obs, [.5] * 3, model=model, rank_by="oof")


def test_fold_assignment_partitions_rows():
    f = fold_assignment(10, 3, seed=1)
    assert sorted(np.bincount(f).tolist()) == [3, 3, 4]
    assert (fold_assignment(10, 3, seed=1) == f).all()
    with pytest.raises(ValueError, match="at least 2 folds"):
        fold_assignment(10, 1)


def test_predict_with_thresholds(run, own_data, tmp_path, capsys):
    imgs = [str(own_data / "img" / f"{i:03d}.png") for i in (80, 81, 82)]
    out = tmp_path / "preds.csv"
    assert main(["predict", str(run), *imgs, "--top-k", "0", "--out", str(out)]) == 0
    thr = json.loads((run / "thresholds.json").read_text())
    assert thr["class_names"] == CLASSES and thr["split"] == "val"
    # the thresholds are the val-F1 optimum of the run's val predictions (recomputed here by brute force)
    pred = np.load(run / "predictions_val.npz")
    val_labels = {r["path"]: r["labels"].split(";") for r in _rows(own_data / "labels.csv") if r["split"] == "val"}
    y = np.array([[c in lab for c in CLASSES] for lab in val_labels.values()])[pred["rows"]]
    for c in range(4):
        assert thr["f1"][c] == pytest.approx(_brute_f1(pred["scores"][:, c], y[:, c]), abs=1e-6)
    rows = _rows(out)
    assert list(rows[0]) == ["image", "rank", "class", "score", "threshold", "predicted"]
    assert len(rows) == 3 * 4 and {r["image"] for r in rows} == set(imgs)
    for r in rows:
        score, t = float(r["score"]), float(r["threshold"])
        assert 0.0 <= score <= 1.0 and t == pytest.approx(thr["thresholds"][CLASSES.index(r["class"])], abs=1e-6)
        assert r["predicted"] == str(int(score >= t))
    wide = tmp_path / "preds_wide.csv"
    assert main(["predict", str(run), *imgs, "--wide", "--out", str(wide)]) == 0
    for r, img in zip(_rows(wide), imgs):
        expect = {c for c in CLASSES if float(r[f"score:{c}"]) >= thr["thresholds"][CLASSES.index(c)] - 1e-6}
        assert set(filter(None, r["labels"].split(";"))) == expect
        assert (wide.parent / r["path"]).resolve() == Path(img).resolve()  # a labels CSV: relative to its folder
    assert main(["predict", str(run), imgs[0], "--out", str(tmp_path / "p.json")]) == 0
    rec = json.loads((tmp_path / "p.json").read_text())[0]
    assert set(rec["labels"]) == {c for c in CLASSES if rec["scores"][c] >= rec["thresholds"][c]}


def test_eval_reports_thresholded_f1(run, capsys):
    assert main(["eval", str(run)]) == 0
    printed = capsys.readouterr().out
    assert "test mAP" in printed and "macro F1" in printed
    result = json.loads((run / "eval_test.json").read_text())
    assert 0 <= result["macro_f1"] <= 100
    per_class = {r["class"]: r for r in result["per_class"]}  # AP and F1 per class, printed and stored
    assert list(per_class) == CLASSES and all(0 <= r["ap"] <= 100 for r in per_class.values())
    assert all(f"  {c} " in printed for c in CLASSES) and "threshold" in printed


def test_find_missing(run, own_data, tmp_path, capsys):
    table = {r["path"]: r for r in _rows(own_data / "labels.csv") if r["split"] == "train"}
    out = tmp_path / "missing.csv"
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["find-missing", str(run), "--out", str(out), "--folds", "2", "--oof-epochs", "1"]) == 0
    finally:
        torch.set_num_threads(n)
    rows = _rows(out)
    thr = json.loads((run / "thresholds.json").read_text())["thresholds"]
    oof = np.load(run / "oof" / "scores.npz")
    assert list(rows[0]) == ["rank", "row", "image", "class", "score", "model_score", "oof_score", "an_loss",
                             "threshold", "sources"]
    assert [int(r["rank"]) for r in rows] == list(range(1, len(rows) + 1))
    scores = [float(r["score"]) for r in rows]
    assert scores == sorted(scores, reverse=True)
    for r in rows:
        given = table[r["image"]]
        assert r["class"] not in given["labels"].split(";") + given["negatives"].split(";")  # only unobserved
        c = CLASSES.index(r["class"])
        mean = (float(r["model_score"]) + float(r["oof_score"])) / 2  # --folds: ranked by the mean of both
        assert float(r["score"]) == pytest.approx(mean, abs=2e-6)
        assert float(r["an_loss"]) == pytest.approx(-np.log(1 - float(r["score"])), rel=1e-4)
        flags = set(filter(None, r["sources"].split(";")))
        assert flags and ("model" in flags) == (float(r["model_score"]) >= thr[c] - 1e-6)
        fold_thr = oof["fold_thresholds"][oof["fold_of"][int(r["row"])], c]  # the fold model's own threshold
        assert ("oof" in flags) == (float(r["oof_score"]) >= fold_thr - 1e-6)
    top = tmp_path / "top5.csv"
    assert main(["find-missing", str(run), "--out", str(top), "--k", "5"]) == 0  # in-sample scores, no folds
    assert [r["rank"] for r in _rows(top)] == ["1", "2", "3", "4", "5"]
    captured = capsys.readouterr()
    assert "wrote 5 ranked pairs" in captured.out and "warning" not in captured.err  # LL-R: no warning
    an_run = tmp_path / "an-run"  # the same run relabelled as Naive AN: its in-sample scores are memorised
    shutil.copytree(run, an_run)
    cfg = (an_run / "config.yaml").read_text()
    (an_run / "config.yaml").write_text(cfg.replace("name: ll-r", "name: an", 1))
    assert main(["find-missing", str(an_run), "--out", str(top), "--k", "5"]) == 0
    assert "loss 'an', not an LL method" in capsys.readouterr().err
    from wsml.analysis.report import build_report

    text = build_report([run, an_run], tmp_path / "report.md").read_text()  # Δrel only where the loss has it
    assert "| mine | ll-r | 5.0 |" in text and "| an-run | an | – |" in text
    assert "## Evaluation and find-missing" in text and "ranked pairs" in text


def test_predict_streams_batches_with_the_same_output(run, own_data, tmp_path):
    from wsml.runs import RunFolder
    from wsml.tools.prediction_files import (
        PredictionWriter,
        prediction_records,
        run_image_score_batches,
        run_image_scores,
        write_predictions,
    )

    imgs = [str(own_data / "img" / f"{i:03d}.png") for i in range(80, 87)]
    batches = list(run_image_score_batches(RunFolder(run), imgs, CLASSES[::-1], batch=3))  # columns in this order
    assert [p for p, _ in batches] == [imgs[:3], imgs[3:6], imgs[6:]]
    scores = np.concatenate([s for _, s in batches])
    np.testing.assert_array_equal(scores, run_image_scores(RunFolder(run), imgs, CLASSES[::-1]))
    records = prediction_records(imgs, scores, CLASSES[::-1], [.5] * 4, top_k=2)
    for name, wide in (("a.csv", False), ("b.csv", True), ("c.json", False)):
        whole = write_predictions(tmp_path / f"whole_{name}", records, CLASSES[::-1], wide)
        w = PredictionWriter(tmp_path / name, CLASSES[::-1], wide)
        for i in range(0, 7, 3):
            w.write(records[i:i + 3])
        assert (tmp_path / f"{name}.partial").is_file() and not (tmp_path / name).exists()  # until close()
        assert w.close().read_bytes() == whole.read_bytes()
    assert (tmp_path / "whole_c.json").read_text() == json.dumps(records, indent=2) + "\n"  # the layout it had


def test_predict_accepts_a_folder(run, own_data, tmp_path):
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(own_data / "img" / "080.png", folder / "a.png")
    shutil.copy(own_data / "img" / "081.png", folder / "sub" / "b.png")
    (folder / "notes.txt").write_text("not an image")
    assert main(["predict", str(run), str(folder), "--out", str(tmp_path / "p.csv"), "--top-k", "1"]) == 0
    assert [r["image"] for r in _rows(tmp_path / "p.csv")] == [str(folder / "a.png"), str(folder / "sub" / "b.png")]


def test_predict_stops_at_a_bad_image_or_skips_it_when_asked(run, own_data, tmp_path, capsys):
    from conftest import cli_error

    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(own_data / "img" / "080.png", folder / "a.png")
    (folder / "b.png").write_bytes(b"not a png")
    shutil.copy(own_data / "img" / "081.png", folder / "c.png")
    out = tmp_path / "p.csv"
    assert "b.png: cannot decode image" in cli_error(["predict", str(run), str(folder), "--out", str(out)], capsys)
    assert main(["predict", str(run), str(folder), "--out", str(out), "--top-k", "1", "--skip-bad-images"]) == 0
    assert [r["image"] for r in _rows(out)] == [str(folder / "a.png"), str(folder / "c.png")]
    err = capsys.readouterr().err
    assert err.startswith("warning: 1 of 3 image(s) could not be read") and "b.png: cannot decode" in err


def test_csv_without_split_column_trains_without_test(own_data, tmp_path, capsys):
    """The common case: no split column -> 20 % of the rows become val, no test split; training still ends
    with a summary (no test mAP) and predict works."""
    rows = _rows(own_data / "labels.csv")
    (own_data / "nosplit.csv").write_text("path,labels\n" + "".join(f"{r['path']},{r['labels']}\n" for r in rows))
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["prepare", "csv", "--root", str(own_data), "csv=nosplit.csv", "--out", str(tmp_path / "p")]) == 0
        assert main(["train", str(ROOT / "configs/custom/small-cnn.yaml"), f"data.path={tmp_path / 'p'}",
                     "data.image_size=32", "model.options={widths: [8]}", "train.epochs=1", f"run.out={tmp_path}",
                     "run.name=nosplit", "run.quiet=true"]) == 0
        summary = json.loads((tmp_path / "nosplit" / "summary.json").read_text())
        assert "test_map" not in summary and summary["best_epoch"] == 1
        img = str(own_data / "img" / "000.png")
        assert main(["predict", str(tmp_path / "nosplit"), img, "--out", str(tmp_path / "p.csv")]) == 0
        assert len(_rows(tmp_path / "p.csv")) == 4
        thr = json.loads((tmp_path / "nosplit" / "thresholds.json").read_text())  # partial val: the PU rule
        assert thr["criterion"].startswith("PU rule") and set(thr["source"]) <= {"pu", "default"}
        assert summary["val_labels"] == "partial" and summary["val_criterion"] == "pu-auc"
        capsys.readouterr()
        assert main(["eval", str(tmp_path / "nosplit")]) == 2  # no test split: says what to do instead
        assert "has no split 'test' (has: train, val); give --split val" in capsys.readouterr().err
    finally:
        torch.set_num_threads(n)


def test_per_class_lines_keep_columns_aligned_for_classes_left_out():
    from wsml.tools.thresholds import per_class_lines

    lines = per_class_lines([{"class": "a", "ap": None, "f1": 50.0, "threshold": 0.5},
                             {"class": "b", "ap": 100.0, "f1": None, "threshold": 0.25}])
    assert lines[1] == "  a           -   50.00  0.5000" and lines[2] == "  b      100.00       -  0.2500"
