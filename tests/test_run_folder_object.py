"""RunFolder: the one reader of a run folder (config, metrics, summary, checkpoints, model, data set, predictions),
and its one-line errors naming the file that is missing or damaged."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from conftest import cli_error
from engine_helpers import make_feature_index

from wsml.config import Config, load_config
from wsml.evaluation import evaluate_run, run_split_scores
from wsml.runs import RunFolder
from wsml.tools.thresholds import thresholded_metrics
from wsml.train.engine import train

EPOCHS = 2


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """``proj/feats`` (a prepared data set) and ``proj/runs/r`` (a finished 2-epoch run trained on it)."""
    proj = tmp_path_factory.mktemp("proj")
    data = make_feature_index(proj / "feats")
    ov = {"data.path": data, "model.backbone": "linear", "model.pretrained": False, "loss.name": "ll-r",
          "optim.lr": 0.05, "train.batch_size": 16, "train.epochs": EPOCHS, "train.device": "cpu",
          "run.out": proj / "runs", "run.name": "r", "run.quiet": True}
    train(load_config(None, [f"{k}={v}" for k, v in ov.items()]))
    return proj


@pytest.fixture
def run(project, tmp_path):
    dst = tmp_path / "runs" / "r"
    shutil.copytree(project / "runs" / "r", dst)
    return RunFolder(dst)


def test_reads_every_part_of_a_finished_run(run, project):
    assert isinstance(run.config, Config) and run.config.loss.name == "ll-r" and run.loss_name == "ll-r"
    assert [m["epoch"] for m in run.metrics] == [1.0, 2.0] and run.column("epoch") == [1.0, 2.0]
    assert run.summary["best_epoch"] in (1, 2) and run.summary["epochs"] == EPOCHS
    assert run.best_pt.is_file() and run.last_pt.is_file() and not run.best_stage1_pt.exists()
    assert run.checkpoint("best")["epoch"] == run.summary["best_epoch"]
    assert run.dataset.name == "feats" and run.data_path == project / "feats"
    scores, rows = run.predictions("test")
    assert scores.shape == (len(run.dataset["test"]), 6) and (rows == np.arange(len(rows))).all()
    model = run.model("cpu")
    assert not model.training and run.model("cpu") is model  # loaded once
    again, again_rows = run_split_scores(run, "test", "cpu")  # the best checkpoint's weights, really loaded
    np.testing.assert_allclose(again, scores, rtol=1e-5, atol=1e-6)
    result, s, r = evaluate_run(run, "test", device="cpu", write=False)  # arrays between functions
    assert result["map"] == pytest.approx(run.summary["test_map"], abs=1e-4) and (s == again).all()
    run.file("predictions_test.npz").unlink()  # thresholded metrics take the arrays, not a file written before
    t = thresholded_metrics(run, "test", s, r, device="cpu")
    assert 0 <= t["macro_f1"] <= 100 and len(t["f1_per_class"]) == 6
    assert RunFolder(run.path).predictions("val")[0].shape == (len(run.dataset["val"]), 6)  # the val scoring's record


def test_data_set_found_relative_to_the_run_folders_parents(run, project, tmp_path, monkeypatch):
    shutil.copytree(project / "feats", tmp_path / "feats")
    text = run.file("config.yaml").read_text().replace(str(project / "feats"), "feats")
    run.file("config.yaml").write_text(text)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # data.path "feats" is not under the current folder
    moved = RunFolder(run.path)
    assert moved.data_path.resolve() == (tmp_path / "feats").resolve() and moved.dataset.name == "feats"
    (tmp_path / "feats" / "manifest.json").unlink()
    with pytest.raises(FileNotFoundError, match="data.path feats of .*config.yaml is not a prepared data set"):
        _ = RunFolder(run.path).dataset


@pytest.mark.parametrize("name, damage, error, message", [
    ("config.yaml", None, FileNotFoundError, "is not a run folder \\(no config.yaml\\)"),
    ("config.yaml", b"data: [unclosed\n", ValueError, "config.yaml: invalid YAML"),
    ("metrics.csv", b"\xff\xfe\x00garbage", ValueError, "metrics.csv is damaged"),
    ("metrics.csv", None, FileNotFoundError, "no metrics.csv - not a training run folder"),
    ("summary.json", None, FileNotFoundError, "summary.json does not exist: the run has not finished"),
    ("summary.json", b'{"best_epoch": ', ValueError, "summary.json: invalid JSON"),
    ("summary.json", b"[1, 2]", ValueError, "summary.json: expected a JSON object, got list"),
    ("predictions_test.npz", b"PK\x03\x04 cut", ValueError, "predictions_test.npz is damaged"),
    ("predictions_test.npz", None, FileNotFoundError, "predictions_test.npz does not exist: run `wsml eval"),
    ("best.pt", b"not a checkpoint", ValueError, "best.pt cannot be read safely"),
    ("last.pt", None, FileNotFoundError, "last.pt does not exist"),
])
def test_missing_or_damaged_file_is_one_error_naming_it(run, name, damage, error, message):
    path = run.file(name)
    if damage is None:
        path.unlink()
    else:
        path.write_bytes(damage)
    read = {"config.yaml": lambda r: r.config, "metrics.csv": lambda r: r.metrics, "summary.json": lambda r: r.summary,
            "predictions_test.npz": lambda r: r.predictions("test"), "best.pt": lambda r: r.model("cpu"),
            "last.pt": lambda r: r.checkpoint("last")}[name]
    with pytest.raises(error, match=message) as e:
        read(RunFolder(run.path))
    assert str(run.path) in str(e.value) and "\n" not in str(e.value)


def test_cli_reports_a_missing_data_set_in_one_line(run, project, tmp_path, capsys):
    text = run.file("config.yaml").read_text()
    run.file("config.yaml").write_text(text.replace(str(project / "feats"), str(tmp_path / "gone")))
    err = cli_error(["eval", str(run.path)], capsys)
    assert "config.yaml is not a prepared data set (no manifest.json)" in err and "gone" in err


def test_delta_rel_auto_is_recorded_and_read_back(project, tmp_path):
    """loss.delta_rel=auto: summary.json keeps the Δrel training chose, and RunFolder reports that number."""
    ov = {"data.path": project / "feats", "model.backbone": "linear", "model.pretrained": False, "loss.name": "ll-r",
          "loss.delta_rel": "auto", "train.batch_size": 16, "train.epochs": 1, "train.device": "cpu",
          "run.out": tmp_path, "run.name": "auto", "run.quiet": True}
    summary = train(load_config(None, [f"{k}={v}" for k, v in ov.items()]))
    run = RunFolder(tmp_path / "auto")
    assert run.config.loss.delta_rel == "auto" and isinstance(summary["delta_rel"], float)
    assert run.delta_rel == summary["delta_rel"] and f"Δrel={summary['delta_rel']}" in run.label


def test_eval_on_val_scores_val_once(run, monkeypatch, capsys):
    """`wsml eval --split val` on a fresh run: the val scores it computes also choose the thresholds."""
    import wsml.evaluation as E
    from wsml.cli import main

    real, splits = E.evaluate_run, []
    monkeypatch.setattr(E, "evaluate_run", lambda r, split="test", **kw: splits.append(split) or real(r, split, **kw))
    assert not run.file("thresholds.json").exists()
    assert main(["eval", str(run.path), "--split", "val", "--device", "cpu"]) == 0
    assert splits == ["val"] and run.file("thresholds.json").is_file()
    assert "with the val thresholds: macro F1" in capsys.readouterr().out
