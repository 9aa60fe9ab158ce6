"""The training engine: learning beats chance, LinearInit trains from the feature cache, resume is exact."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import torch
from engine_helpers import image_config, make_image_index

from wsml.checkpoint import load_checkpoint
from wsml.train.callbacks import Callback, build_callbacks, register_callback
from wsml.train.engine import plan_stages, train


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_image_index(tmp_path_factory.mktemp("quads"))


def _rows(run_dir):
    with open(run_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))


def test_training_beats_chance_and_writes_the_run_folder(data, tmp_path):
    summary = train(image_config(data, tmp_path, **{"loss.name": "ll-r", "loss.delta_rel": 5.0,
                                                    "run.name": "r", "train.epochs": 4}))
    run = tmp_path / "r"
    for f in ("config.yaml", "metrics.csv", "best.pt", "last.pt", "predictions_test.npz", "summary.json"):
        assert (run / f).is_file(), f
    test = np.load(data / "test" / "labels_full.npy")
    chance = 100 * test.mean()  # the mAP of random scores is about the mean class prevalence
    assert summary["test_map"] > chance + 25, (summary, chance)
    rows = _rows(run)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert set(rows[0]) >= {"epoch", "stage", "train_loss", "val_map", "num_modified", "lr", "time_s"}
    # LL-R modifies nothing in epoch 1; from epoch t it rejects ceil((t-1)*Δrel/100 * B*C) per batch
    # (96 rows = 6 full batches of 16 x 4 classes): epoch 2 -> 6 * ceil(0.05 * 64) = 24, epoch 3 -> 6 * 7 = 42
    assert [int(r["num_modified"]) for r in rows[:3]] == [0, 24, 42]
    best = max(rows, key=lambda r: float(r["val_map"]))
    saved = json.loads((run / "summary.json").read_text())
    assert saved["best_epoch"] == int(best["epoch"]) == load_checkpoint(run / "best.pt")["epoch"]
    assert saved["val_map"] == pytest.approx(float(best["val_map"]))
    pred = np.load(run / "predictions_test.npz")
    assert pred["scores"].shape == (37, 4) and pred["rows"].tolist() == list(range(37))
    from wsml.metrics import mean_average_precision
    assert mean_average_precision(pred["scores"], test) == pytest.approx(saved["test_map"])


class BackboneCalls(Callback):
    """Counts backbone forward passes during each epoch."""

    def __init__(self):
        self.calls, self.per_epoch, self.handle = 0, {}, None

    def on_train_start(self, ctx):
        self.handle = ctx.model.backbone.register_forward_hook(lambda *a: setattr(self, "calls", self.calls + 1))

    def on_epoch_start(self, ctx, epoch):
        self.start = self.calls

    def on_epoch_end(self, ctx, epoch):
        self.per_epoch[epoch] = (ctx.stage, self.calls - self.start)
        return {"backbone_calls": self.calls - self.start}


def test_linearinit_trains_stage1_from_the_feature_cache(data, tmp_path):
    cfg = image_config(data, tmp_path, **{"train.scheme": "linearinit", "train.linear_epochs": 3, "train.epochs": 1,
                                          "run.name": "li"})
    assert [(s.name, s.first, s.last, s.cached) for s in plan_stages(cfg)] == [
        ("linear", 1, 3, True), ("finetune", 4, 4, False)]
    counter = BackboneCalls()
    summary = train(cfg, callbacks=[counter])
    # the backbone ran only to fill the cache before epoch 1: never during the stage-1 epochs
    assert [counter.per_epoch[e] for e in (1, 2, 3)] == [("linear", 0)] * 3
    stage, calls = counter.per_epoch[4]
    assert stage == "finetune" and calls == 6 + 2  # 96/16 training batches + 40/32 -> 2 val batches
    cache = list((tmp_path / "li" / "features").glob("*.features.npy"))
    assert len(cache) == 2  # train and val
    rows = _rows(tmp_path / "li")
    assert [r["stage"] for r in rows] == ["linear"] * 3 + ["finetune"]
    assert [r["backbone_calls"] for r in rows] == ["0", "0", "0", "8"]
    assert summary["best_epoch"] in (1, 2, 3, 4)


class StopAt(Callback):
    """Raises KeyboardInterrupt (as Ctrl-C would) in the middle of epoch ``epoch``."""

    def __init__(self, epoch):
        self.epoch, self.batches = epoch, 0

    def on_batch_end(self, ctx, batch, logits, loss_fn):
        if ctx.epoch == self.epoch:
            self.batches += 1
            if self.batches == 2:
                raise KeyboardInterrupt


def _same(a, b) -> bool:
    """Exact recursive equality of (nested) state dicts holding tensors."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _final_state(run):
    return load_checkpoint(run / "last.pt")


@pytest.mark.parametrize("scheme,stop", [("end-to-end", 3), ("linearinit", 3)])
def test_interrupted_and_resumed_run_equals_uninterrupted(data, tmp_path, scheme, stop):
    # LL-Cp keeps permanent corrections in its state: resuming must restore them exactly
    extra = {"loss.name": "ll-cp", "loss.delta_rel": 3.0, "train.scheme": scheme, "train.linear_epochs": 2,
             "train.epochs": 3 if scheme == "end-to-end" else 2, "optim.scheduler": "cosine",
             "train.stage2_loss": "continue", "callbacks": ["memorization", "modification"]}
    full = train(image_config(data, tmp_path, **extra, **{"run.name": "full"}))
    cut = image_config(data, tmp_path, **extra, **{"run.name": "cut"})
    with pytest.raises(KeyboardInterrupt):
        train(cut, callbacks=[StopAt(stop)])
    assert load_checkpoint(tmp_path / "cut" / "last.pt")["epoch"] == stop - 1  # the last completed epoch
    assert len(_rows(tmp_path / "cut")) == stop - 1
    if scheme == "linearinit":  # killed after stage 2's first best.pt write, before its last.pt: the resume at the
        shutil.copyfile(tmp_path / "full" / "best.pt", tmp_path / "cut" / "best.pt")  # boundary must not start there
    before = load_checkpoint(tmp_path / "cut" / "last.pt")["state"]["elapsed_s"]
    resumed = train(cut, resume=tmp_path / "cut")
    assert resumed["wall_time_s"] >= before > 0  # the wall time includes the part before the interruption

    drop = ("time_s",)
    a = [{k: v for k, v in r.items() if k not in drop} for r in _rows(tmp_path / "full")]
    b = [{k: v for k, v in r.items() if k not in drop} for r in _rows(tmp_path / "cut")]
    assert a == b  # exact, every column
    assert int(a[-1]["num_modified"]) > 0  # LL-Cp did record corrections before the interruption
    sa, sb = _final_state(tmp_path / "full"), _final_state(tmp_path / "cut")
    for k, v in sa["model"].items():
        assert torch.equal(v, sb["model"][k]), k
    assert _same(sa["loss"], sb["loss"])
    assert resumed["test_map"] == full["test_map"] and resumed["best_epoch"] == full["best_epoch"]
    # the analysis callbacks continue too: Table 1's peaks, the modification log and its accumulated counts
    assert "mod_cum_count" in a[0] and "mem_loss_fn" in a[0]
    for name in ("memorization_entries.npz", "modifications.npz", "memorization_curve.csv"):
        fa, fb = tmp_path / "full" / name, tmp_path / "cut" / name
        if name.endswith(".csv"):
            assert fa.read_text() == fb.read_text(), name
            continue
        with np.load(fa) as za, np.load(fb) as zb:
            assert za.files == zb.files and all(np.array_equal(za[k], zb[k]) for k in za.files), name


def test_callbacks_resolve_by_name_and_path():
    @register_callback("unit-test-counter")
    class Counter(Callback):
        pass

    got = build_callbacks(["unit-test-counter", "test_engine:BackboneCalls"])
    assert type(got[0]).__name__ == "Counter" and type(got[1]).__name__ == "BackboneCalls"
    with pytest.raises(ValueError, match="unknown callback 'nope'; available: .*unit-test-counter"):
        build_callbacks(["nope"])


def test_openimages_style_group_map_in_the_summary(tmp_path):
    from engine_helpers import make_feature_index

    from wsml.config import load_config
    from wsml.data import DatasetIndex
    from wsml.metrics import average_precision_per_class

    folder = make_feature_index(tmp_path / "feats")
    index = DatasetIndex.load(folder)
    index.meta["known_per_class"] = [5, 1, 4, 2, 6, 3]  # groups by ascending count: {1,3}, {5}, {2}, {0}, {4}
    index.save(folder)
    s = train(load_config(None, [f"data.path={folder}", "model.backbone=linear", "model.pretrained=false",
                                 "train.epochs=2", f"run.out={tmp_path}", "run.name=g", "run.quiet=true"]))
    pred = np.load(tmp_path / "g" / "predictions_test.npz")
    ap = 100 * average_precision_per_class(pred["scores"], index["test"].full)
    g = s["test_group_map"]
    assert g["G1"] == pytest.approx((ap[1] + ap[3]) / 2) and g["G5"] == pytest.approx(ap[4])
    assert g["all"] == pytest.approx(s["test_map"])


def test_resume_refuses_a_memorization_log_it_cannot_continue(tmp_path):
    from types import SimpleNamespace

    from wsml.analysis.memorization import MemorizationCallback

    ctx = SimpleNamespace(run_dir=tmp_path, epoch=2)
    with pytest.raises(ValueError, match="memorization_entries.npz is missing: .* after epoch 2"):
        MemorizationCallback().on_train_start(ctx)
    np.savez(tmp_path / "memorization_entries.npz", groups=np.zeros((3, 2), np.int8),
             peak_epoch=np.ones((3, 2), np.int16), last_epoch=np.int64(2))  # an older file: no peak_loss
    with pytest.raises(ValueError, match="has no peak_loss"):
        MemorizationCallback().on_train_start(ctx)


def test_resume_refuses_a_modification_log_it_cannot_continue(tmp_path):
    from types import SimpleNamespace

    from wsml.analysis.modification import ModificationCallback

    ll = SimpleNamespace(modifies_labels=True)
    with pytest.raises(ValueError, match="modifications.npz is missing: .* after epoch 3"):
        ModificationCallback().on_train_start(SimpleNamespace(run_dir=tmp_path, epoch=3, loss_fn=ll))
    ModificationCallback().on_train_start(SimpleNamespace(run_dir=tmp_path, epoch=3, loss_fn=object()))  # inert
