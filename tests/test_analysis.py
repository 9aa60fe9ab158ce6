"""Tests of wsml.analysis: group losses, modification precision, the pointing game and the report."""

from __future__ import annotations

import csv
import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from wsml.analysis import memorization as mem
from wsml.analysis import modification as mod
from wsml.analysis.pointing_game import PointingGame, box_coverage, cam_peaks, point_in_boxes, pointing_game
from wsml.analysis.report import best_epoch, build_report
from wsml.runs import RunFolder, read_metrics


def bce(z: float, t: float) -> float:
    """BCE on a logit, written independently: -(t log σ(z) + (1-t) log(1-σ(z)))."""
    p = 1 / (1 + math.exp(-z))
    return -(t * math.log(p) + (1 - t) * math.log(1 - p))


# ----------------------------------------------------------------------------------------------- memorization

OBS = np.array([[1, 0, 0], [0, 1, -1]], dtype=np.int8)
FULL = np.array([[1, 1, 0], [0, 1, 1]], dtype=np.uint8)
LOGITS = torch.tensor([[2.0, -1.0, 0.5], [-3.0, 1.0, 0.0]])


def test_entry_groups_by_hand():
    g = mem.entry_groups(OBS, FULL)
    # row 0: observed pos, unobserved true pos (fn), unobserved neg (tn); row 1: tn, pos, observed negative (none)
    assert g.tolist() == [[0, 2, 1], [1, 0, -1]]


def test_group_losses_by_hand():
    loss = mem.an_entry_loss(LOGITS, OBS)
    np.testing.assert_allclose(loss[0], [bce(2, 1), bce(-1, 0), bce(0.5, 0)], rtol=1e-6)
    sums, counts = mem.group_loss_sums(loss, mem.entry_groups(OBS, FULL))
    assert counts.tolist() == [2, 2, 1]
    np.testing.assert_allclose(sums, [bce(2, 1) + bce(1, 1), bce(0.5, 0) + bce(-3, 0), bce(-1, 0)], rtol=1e-6)


def test_memorization_callback_epochs_and_peaks(tmp_path):
    cb = mem.MemorizationCallback(bins_per_epoch=2)
    cb.on_train_start(SimpleNamespace(run_dir=tmp_path))
    # two batches of one row each; the fn entry (row 0, class 1) gets its highest loss in epoch 2
    epochs = {1: [(-1.0, 0.5), (-3.0, 1.0)], 2: [(1.0, 0.5), (-4.0, 1.0)], 3: [(0.5, -2.0), (-5.0, 2.0)]}
    out = {}
    for e, rows in epochs.items():
        cb.on_epoch_start(None, e)
        for r, (z_fn, z_other) in enumerate(rows):
            logits = torch.tensor([[3.0, z_fn, z_other]])
            batch = {"observed": torch.tensor(OBS[:1]), "full": torch.tensor(FULL[:1]), "index": torch.tensor([r])}
            cb.on_batch_end(None, batch, logits, None)
        out[e] = cb.on_epoch_end(None, e)
    # epoch 2: fn losses bce(1,0) and bce(-4,0) over 2 entries
    assert out[2]["mem_loss_fn"] == pytest.approx((bce(1, 0) + bce(-4, 0)) / 2, rel=1e-6)
    assert out[2]["mem_loss_pos"] == pytest.approx(bce(3, 1), rel=1e-6)
    curve = mem.load_curve(tmp_path)
    assert len(curve["position"]) == 6 and curve["position"][:2] == [0.5, 1.0]
    assert curve["fn"][2] == pytest.approx(bce(1, 0), rel=1e-5)
    ent = mem.load_entries(tmp_path)
    assert ent["peak_epoch"][0].tolist() == [1, 2, 1] and ent["peak_epoch"][1].tolist() == [1, 1, 3]
    assert ent["history"].shape == (3, 2, 3)
    dist = mem.highest_loss_distribution(ent["groups"], ent["peak_epoch"])
    assert dist["fn"] == {"entries": 2, "warmup_pct": 50.0, "regular_pct": 50.0, "median_peak_epoch": 1.5}
    assert dist["pos"]["warmup_pct"] == 100.0
    assert dist["tn"] == {"entries": 2, "warmup_pct": 50.0, "regular_pct": 50.0, "median_peak_epoch": 2.0}


def test_memorization_callback_without_full_labels_is_inert():
    cb = mem.MemorizationCallback()
    cb.on_train_start(SimpleNamespace(run_dir=None))
    cb.on_epoch_start(None, 1)
    cb.on_batch_end(None, {"observed": torch.tensor(OBS), "index": torch.tensor([0, 1])}, LOGITS, None)
    assert cb.on_epoch_end(None, 1) == {}


def test_only_rank_0_writes_files(tmp_path):
    from wsml.analysis._common import run_dir_of

    assert run_dir_of(SimpleNamespace(rank=1, run_dir=tmp_path)) is None
    assert run_dir_of(SimpleNamespace(rank=0, run_dir=tmp_path)) == tmp_path
    assert run_dir_of({"run_dir": str(tmp_path)}) == tmp_path


def test_loss_peaks():
    pos = [0.5, 1, 2, 3, 4, 5]
    peaks = mem.loss_peaks(pos, {"fn": [0.7, 0.3, 0.5, 0.9, 0.6, 0.1], "tn": [0.7, 0.6, 0.3, 0.2, math.nan, 0.1]})
    fn, tn = peaks["fn"], peaks["tn"]  # the warm-up points (positions <= 1) are ignored
    assert (fn["start_loss"], fn["peak_at"], fn["peak_loss"], fn["final_loss"]) == (0.5, 3.0, 0.9, 0.1)
    assert fn["rise"] == pytest.approx(0.4) and fn["fall"] == pytest.approx(0.8) and fn["rises_then_falls"]
    assert tn["peak_at"] == 2.0 and tn["rise"] == 0.0 and not tn["rises_then_falls"]
    with pytest.raises(ValueError, match="curve 'fn' has 2 points"):
        mem.loss_peaks([1, 2, 3], {"fn": [1, 2]})


# ----------------------------------------------------------------------------------------------- modification


def test_modification_truth_and_counts():
    full = np.array([[1, 0, 1], [0, 0, 1]], dtype=np.uint8)  # batch rows with dataset ids 7 and 3
    truth = mod.modification_truth([3, 7, 7, 3], [2, 0, 1, 2], full, index=np.array([7, 3]))
    assert truth.tolist() == [1, 1, 0, 1]
    assert mod.precision_counts([3, 7, 7, 3], [2, 0, 1, 2], truth, 3) == (3, 2)  # (3,2) counted once
    with pytest.raises(ValueError, match="row id 5 is not in the batch"):
        mod.modification_truth([5], [0], full, index=np.array([7, 3]))
    with pytest.raises(ValueError, match="class id 4 out of range"):
        mod.modification_truth([3], [4], full, index=np.array([7, 3]))
    assert mod.missing_positive_rate(np.array([[1, 0, 0], [0, -1, 0]]), full) == (4, 2)


class FakeLL:
    last_modified = None


def test_modification_callback(tmp_path):
    cb, loss = mod.ModificationCallback(), FakeLL()
    cb.on_train_start(SimpleNamespace(run_dir=tmp_path))
    obs = torch.tensor([[1, 0, 0, 0], [0, 1, 0, 0]], dtype=torch.int8)
    full = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0]], dtype=torch.uint8)  # 6 unobserved, 3 truly positive
    batch = {"observed": obs, "full": full, "index": torch.tensor([10, 11])}
    mods = {1: ([], []), 2: ([10, 11], [1, 3]), 3: ([10, 11, 11], [1, 0, 2])}
    res = {}
    for e, (r, c) in mods.items():
        cb.on_epoch_start(None, e)
        loss.last_modified = (torch.tensor(r, dtype=torch.long), torch.tensor(c, dtype=torch.long))
        cb.on_batch_end(None, batch, None, loss)
        res[e] = cb.on_epoch_end(None, e)
    assert res[1]["mod_count"] == 0 and math.isnan(res[1]["mod_precision"])
    assert res[1]["mod_base_rate"] == pytest.approx(0.5)
    assert (res[2]["mod_count"], res[2]["mod_true"], res[2]["mod_precision"]) == (2, 1, 0.5)
    assert (res[3]["mod_count"], res[3]["mod_true"], res[3]["mod_precision"]) == (3, 3, 1.0)
    # accumulated over epochs: (10,1) (11,3) (11,0) (11,2) -> 4 distinct, 3 truly positive
    assert res[3]["mod_cum_count"] == 4 and res[3]["mod_cum_precision"] == pytest.approx(0.75)
    log = mod.load_modifications(tmp_path)
    assert log["epoch"].tolist() == [2, 2, 3, 3, 3]
    assert mod.modified_by_row(log, 11) == {2: [(3, False)], 3: [(0, True), (2, True)]}


def test_pick_rows_prefers_right_then_one_wrong():
    from wsml.analysis.qualitative import pick_rows

    log = {"row": np.array([5, 5, 7, 9, 9, 2]), "truth": np.array([1, 1, 1, 1, 0, 0])}
    # all right: 5 (2 modifications), 7 (1); with a wrong one: 9 (1 wrong), 2 (1 wrong)
    assert pick_rows(log, n=3, failures=1) == [5, 7, 2]
    assert pick_rows(log, n=5, failures=0) == [5, 7, 2, 9]
    assert pick_rows({"row": np.array([]), "truth": np.array([])}) == []


def test_modification_callback_inert_for_other_losses():
    cb = mod.ModificationCallback()
    cb.on_train_start(SimpleNamespace())
    cb.on_epoch_start(None, 1)
    cb.on_batch_end(None, {"observed": torch.zeros(1, 2), "full": torch.zeros(1, 2)}, None, object())
    assert cb.on_epoch_end(None, 1) == {}


# ----------------------------------------------------------------------------------------------- pointing game


def test_cam_peaks_upsampled_by_hand():
    cams = torch.tensor([[[0.0, 1.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]])
    xs, ys = cam_peaks(cams, (4, 4))
    # bilinear, align_corners=False: output x=3 maps to source 1.25 -> clamped to cell 1: value 1 only at (3, 0)
    assert (xs.tolist(), ys.tolist()) == ([3, 0], [0, 0])  # a constant map: first pixel in row-major order


def test_point_in_boxes_uses_pixel_centres():
    box = np.array([[0, 0, 28, 28]])
    assert point_in_boxes(27, 27, box) and not point_in_boxes(28, 5, box)
    assert point_in_boxes(30, 5, box, tolerance=3)
    assert box_coverage(np.array([[0, 0, 2, 2], [1, 1, 3, 2]]), (4, 4)) == pytest.approx(5 / 16)


def test_pointing_game_per_class_average():
    c0_hit = torch.tensor([[0.0, 1.0], [0.0, 0.0]])  # peak in the top-right quadrant of a 4x4 image
    c0_miss = torch.tensor([[0.0, 0.0], [1.0, 0.0]])  # bottom-left
    zero = torch.zeros(2, 2)
    cams = torch.stack([torch.stack([c0_hit, c0_hit, zero]), torch.stack([c0_miss, zero, c0_hit])])
    full = np.array([[1, 1, 0], [1, 0, 1]])  # image 1 class 2 is present but has no box
    boxes = np.array([[0, 0, 2, 0, 4, 2],   # image 0, class 0: top-right quadrant -> hit
                      [0, 1, 2, 0, 4, 2],   # image 0, class 1: hit
                      [1, 0, 2, 0, 4, 2],   # image 1, class 0: peak bottom-left -> miss
                      [1, 1, 0, 0, 4, 4]])  # image 1, class 1: absent in GT -> not counted
    res = pointing_game(cams, full, boxes, [(4, 4), (4, 4)], class_names=["a", "b", "c"])
    assert res["score"] == pytest.approx(100 * (0.5 + 1.0) / 2)  # class a: 1/2, class b: 1/1
    assert res["overall_hit_rate"] == pytest.approx(100 * 2 / 3)
    assert (res["pairs"], res["hits"], res["no_box"], res["classes_scored"]) == (3, 2, 1, 2)
    assert res["random_score"] == pytest.approx(25.0)
    assert res["per_class"]["a"] == {"hits": 1, "pairs": 2, "rate": 50.0}
    game = PointingGame(3)
    with pytest.raises(ValueError, match="do not match labels"):
        game.update(cams[:, :2], full, boxes, [(4, 4)] * 2)


# ----------------------------------------------------------------------------------------------- report


def _fake_run(folder, loss="ll-ct", epochs=3):
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(f"data:\n  path: nowhere\nloss:\n  name: {loss}\n  delta_rel: 0.2\n")
    with (folder / "metrics.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["epoch", "train_loss", "val_map", "test_map", "mem_loss_pos", "mem_loss_tn", "mem_loss_fn",
                    "mod_count", "mod_true", "mod_precision", "mod_cum_count", "mod_cum_precision", "mod_base_rate"])
        for e in range(1, epochs + 1):
            w.writerow([e, 1 / e, 50 + e, 40 + e, 0.5 / e, 0.4 / e, 0.3 * e, 10 * (e - 1), 8 * (e - 1),
                        "nan" if e == 1 else 0.8, 10 * (e - 1), "" if e == 1 else 0.8, 0.1])
    (folder / "analysis").mkdir()
    (folder / "analysis" / "pointing_game.json").write_text(json.dumps({"score": 61.5, "random_score": 30.0,
                                                                        "pairs": 12}))
    return folder


def test_report_markdown_and_html(tmp_path):
    run = _fake_run(tmp_path / "run1")
    assert read_metrics(run / "metrics.csv")["mod_cum_precision"][0] != read_metrics(run / "metrics.csv")[
        "mod_cum_precision"][0]  # empty -> NaN
    md = build_report([run], tmp_path / "out" / "report.md")
    text = md.read_text()
    assert "| run1 | ll-ct | 0.2 | 3 | 3 | 53.00 (mAP) | 43.00 |" in text
    assert "Memorization" in text and "Precision of modification" in text and "| ll-ct Δrel=0.2 (run1) | 61.50" in text
    pngs = list((tmp_path / "out" / "report_files").glob("*.png"))
    assert len(pngs) >= 3 and all(p.stat().st_size > 1000 for p in pngs)
    html = build_report([run], tmp_path / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(pngs) and "<table>" in html


def test_report_shows_the_epoch_training_kept_and_what_picked_it(tmp_path):
    """With partial val labels the epoch is picked by PU-AUC: the report once showed the val_map column's maximum
    (100.00 on a few known negatives) at another epoch than the one whose test mAP it printed."""
    run = _fake_run(tmp_path / "run1")
    (run / "summary.json").write_text(json.dumps({"best_epoch": 2, "val_map": 100.0, "val_score": 77.5,
                                                  "val_criterion": "pu-auc", "test_map": 41.0}))
    assert best_epoch(RunFolder(run)) == (2, 77.5, "pu-auc", 41.0)  # the table shows "77.50 (PU-AUC)"
    (run / "summary.json").unlink()  # still training: the best so far by the same rule (here the val_map column)
    assert best_epoch(RunFolder(run)) == (3, 53.0, "map", 43.0)


def test_report_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_report([tmp_path / "missing"], tmp_path / "r.md")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no metrics.csv"):
        build_report([tmp_path / "empty"], tmp_path / "r.md")


# ----------------------------------------------------------------------------------------------- sweeps, CLI


def test_parse_methods_and_sweep_with_fake_training(tmp_path):
    from wsml.analysis.sweeps import parse_methods, run_sweep

    methods = parse_methods(["AN:loss.name=an", "LL-R:loss.name=ll-r,loss.delta_rel=2"])
    assert methods == {"AN": ["loss.name=an"], "LL-R": ["loss.name=ll-r", "loss.delta_rel=2"]}
    with pytest.raises(ValueError, match="LABEL:key=value"):
        parse_methods(["no-colon"])
    seen = []

    def fake_train(cfg):  # test mAP = 10 × Δrel (+1 for LL-R) so the table is checkable
        seen.append((cfg.loss.name, cfg.loss.delta_rel, cfg.run.name))
        return {"test_map": 10 * cfg.loss.delta_rel + (cfg.loss.name == "ll-r"), "val_map": 1.0, "best_epoch": 2}

    sw = run_sweep("loss.delta_rel", [0.5, 1.0], methods, tmp_path / "sw", overrides=["train.epochs=1"],
                   train_fn=fake_train, log=lambda *a: None)
    assert sw["series"] == {"AN": [5.0, 10.0], "LL-R": [6.0, 11.0]}
    assert seen[0] == ("an", 0.5, "AN-delta_rel0.5") and len(seen) == 4
    assert (tmp_path / "sw" / "sweep.png").stat().st_size > 1000
    text = build_report([tmp_path / "sw"], tmp_path / "sw.md").read_text()
    assert "| 1.0 | 10.00 | 11.00 |" in text


def test_cli_report_and_errors(tmp_path, capsys):
    from wsml.cli import main

    run = _fake_run(tmp_path / "run1")
    assert main(["report", str(run), "--out", str(tmp_path / "r.html")]) == 0
    assert (tmp_path / "r.html").read_text().startswith("<!DOCTYPE html>")
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "wsml: error: run folder" in capsys.readouterr().err
    assert main(["analyze", "precision", str(run), "--out", str(tmp_path / "p.png")]) == 0
    assert "base rate (truly positive among unobserved): 10.00%" in capsys.readouterr().out
    assert main(["analyze", "memorization", str(run)]) == 0  # from the mem_loss_* columns of metrics.csv
    assert " fn: loss after epoch 1 0.6000 -> peak 0.9000 at epoch 3.00 -> final 0.9000" in capsys.readouterr().out
    (tmp_path / "bare").mkdir()
    (tmp_path / "bare" / "metrics.csv").write_text("epoch,val_map\n1,50\n")
    assert main(["analyze", "memorization", str(tmp_path / "bare")]) == 2
    assert "no mem_loss_* columns" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------- a real tiny run


def _quads_with_boxes(folder):
    """engine_helpers' 16x16 quadrant images (class c lights quadrant c) plus the quadrants as boxes."""
    from engine_helpers import make_image_index

    from wsml.data.index import DatasetIndex

    make_image_index(folder)
    index = DatasetIndex.load(folder)
    for s in index.splits.values():
        r, c = np.nonzero(s.full)
        qy, qx = c // 2, c % 2
        s.boxes = np.stack([r, c, 8 * qx, 8 * qy, 8 * qx + 8, 8 * qy + 8], 1).astype(np.float32)
    index.save(folder)
    return folder


def test_analyses_on_a_real_tiny_run(tmp_path):
    from engine_helpers import image_config

    from wsml.analysis.cams import evaluate_pointing_game
    from wsml.train.engine import train

    torch.set_num_threads(1)
    data = _quads_with_boxes(tmp_path / "quads")
    cbs = "[memorization, modification, memorization_eval]"
    cbs = cbs.replace("memorization,", "wsml.analysis.memorization:MemorizationCallback,")
    cbs = cbs.replace("modification", "wsml.analysis.modification:ModificationCallback")
    runs = {}
    for loss in ("an", "ll-ct"):
        train(image_config(data, tmp_path, **{"loss.name": loss, "loss.delta_rel": 5.0, "run.name": loss,
                                              "callbacks": cbs}))
        runs[loss] = tmp_path / loss
    met = read_metrics(runs["an"] / "metrics.csv")
    # under AN every entry is pos, tn or fn: the group means, weighted by group sizes, give the training loss
    full = np.load(data / "train" / "labels_full.npy")
    obs = np.load(data / "train" / "labels_obs.npy")
    n = np.bincount(mem.entry_groups(obs, full).ravel() + 1, minlength=4)[1:]
    for e in range(3):
        mean = sum(n[k] * met[f"mem_loss_{g}"][e] for k, g in enumerate(mem.GROUPS)) / full.size
        assert mean == pytest.approx(met["train_loss"][e], rel=1e-4)
    # the eval-mode pass (Table 1 option) re-scores every training entry once per epoch with the final weights
    ev = mem.memorization_summary(runs["an"], eval_mode=True)
    assert ev["epochs"] == 3 and sum(d["entries"] for d in ev["table1"].values()) == int(n.sum())
    assert met["mem_eval_loss_fn"][-1] != pytest.approx(met["mem_loss_fn"][-1], rel=1e-3)
    assert "mod_precision" not in met  # AN modifies nothing: the modification callback stays silent
    ll = read_metrics(runs["ll-ct"] / "metrics.csv")
    assert ll["mod_count"] == ll["num_modified"] and ll["mod_count"][1] > 0  # each row once per epoch
    unobs = obs == 0
    assert ll["mod_base_rate"][0] == pytest.approx((unobs & (full == 1)).sum() / unobs.sum())
    log = mod.load_modifications(runs["ll-ct"])
    assert log["truth"].tolist() == full[log["row"], log["cls"]].tolist()
    assert ll["mod_true"][2] == int(log["truth"][log["epoch"] == 3].sum())
    n_fn = int((unobs & (full == 1)).sum())
    assert ll["mod_oracle_precision"][2] == pytest.approx(min(1.0, n_fn / ll["mod_count"][2]))
    pg = evaluate_pointing_game(runs["ll-ct"], device="cpu")
    test = np.load(data / "test" / "labels_full.npy")
    assert pg["pairs"] == int(test.sum()) and pg["no_box"] == 0 and 0 <= pg["score"] <= 100
    assert pg["random_score"] == pytest.approx(25.0)  # one quadrant of four
    from wsml.analysis.cams import cam_examples, cam_overlay_figure

    ex = cam_examples(runs["an"], [0, 1], classes="gt", device="cpu")
    assert [(e["row"], e["class"]) for e in ex] == [(r, c) for r in (0, 1) for c in np.nonzero(test[r])[0]]
    assert ex[0]["cam"].shape == (16, 16) and ex[0]["gt"]
    ex = cam_examples(runs["an"], [0, 1], classes=[3, 2], device="cpu")
    assert [(e["row"], e["class"], e["gt"]) for e in ex] == [(0, 3, bool(test[0, 3])), (1, 2, bool(test[1, 2]))]
    png = cam_overlay_figure({"AN": runs["an"], "LL-Ct": runs["ll-ct"]}, [0, 1], tmp_path / "c.png",
                             device="cpu", classes="predicted")
    assert png.stat().st_size > 1000
    text = build_report(list(runs.values()), tmp_path / "report.md").read_text()
    for section in ("## Runs", "Memorization", "Precision of modification", "Qualitative", "Pointing Game"):
        assert section in text
