"""The `wsml` command: help, one-line errors with exit code 2, train/eval/predict, Ctrl-C and --resume."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import cli_error
from engine_helpers import image_overrides, make_image_index

from wsml.checkpoint import load_checkpoint
from wsml.cli import main

TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_image_index(tmp_path_factory.mktemp("quads"))


@pytest.mark.parametrize("command", ["prepare", "train", "eval", "predict"])
def test_help_has_examples(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert f"usage: wsml {command}" in out and "examples:" in out and f"wsml {command} " in out




def test_bad_configs_and_paths_give_one_line_errors(tmp_path, capsys, data):
    assert "unknown config key 'optim.lrr'; valid keys in 'optim'" in cli_error(["train", "optim.lrr=1"], capsys)
    assert "'train.epochs': expected int, got 'ten'" in cli_error(["train", "train.epochs=ten"], capsys)
    assert "config file nope.yaml does not exist" in cli_error(["train", "nope.yaml"], capsys)
    (tmp_path / "bad.yaml").write_text("loss: {name: ll-x}\n")
    err = cli_error(["train", str(tmp_path / "bad.yaml"), f"data.path={data}", "model.backbone=small_cnn",
                  "model.pretrained=false", f"run.out={tmp_path}"], capsys)
    assert "unknown loss 'll-x'; available:" in err
    err = cli_error(["train", f"data.path={tmp_path / 'none'}"], capsys)
    assert "is not a prepared data set (no manifest.json): run `wsml prepare" in err
    err = cli_error(["train", f"data.path={data}", "model.backbone=small_cnn", "model.pretrained=false",
                  "model.options={depth: 3}", f"run.out={tmp_path}"], capsys)
    assert "model.options for backbone 'small_cnn'" in err
    assert "is not a run folder (no config.yaml)" in cli_error(["eval", str(tmp_path)], capsys)
    assert "not a resumable run folder" in cli_error(["train", "--resume", str(tmp_path)], capsys)
    assert "unknown data set 'imagenet'; available:" in cli_error(["prepare", "imagenet"], capsys)
    assert "root folder" in cli_error(["prepare", "voc", "--root", str(tmp_path / "nothing")], capsys)
    assert "image nope.png does not exist" in cli_error(["predict", str(tmp_path), "nope.png"], capsys)


def test_train_eval_predict(tmp_path, capsys, data):
    from PIL import Image

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["train", *image_overrides(data, tmp_path, **{"run.name": "cli"})]) == 0
        run = tmp_path / "cli"
        summary = json.loads((run / "summary.json").read_text())
        capsys.readouterr()
        assert main(["eval", str(run), "--split", "test"]) == 0
        assert f"test mAP {summary['test_map']:.2f} over 37 samples" in capsys.readouterr().out
        assert json.loads((run / "eval_test.json").read_text())["map"] == pytest.approx(summary["test_map"])
        # predict on image files: quadrant 0 lit -> class q0 should score highest
        img = np.zeros((16, 16), np.uint8)
        img[:8, :8] = 200
        Image.fromarray(img).save(tmp_path / "q0.png")
        img = np.zeros((16, 16), np.uint8)
        img[8:, 8:] = 200
        Image.fromarray(img).save(tmp_path / "q3.png")
        out = tmp_path / "pred.csv"
        assert main(["predict", str(run), str(tmp_path / "q0.png"), str(tmp_path / "q3.png"), "--top-k", "2",
                     "--out", str(out)]) == 0
        printed = capsys.readouterr().out
        assert "q0.png: q0 " in printed and "q3.png: q3 " in printed
        with open(out) as f:
            rows = list(csv.DictReader(f))
        assert [(Path(r["image"]).name, r["rank"]) for r in rows] == [("q0.png", "1"), ("q0.png", "2"),
                                                                       ("q3.png", "1"), ("q3.png", "2")]
        assert rows[0]["class"] == "q0" and float(rows[0]["score"]) >= float(rows[1]["score"])
        assert main(["predict", str(run), str(tmp_path / "q0.png"), "--out", str(tmp_path / "p.json")]) == 0
        assert json.loads((tmp_path / "p.json").read_text())[0]["top"][0]["class"] == "q0"
        # predict needs only the run folder: the checkpoint knows the classes and the input format; without
        # the data set (and no thresholds.json yet) the labels use threshold 0.5
        cfg = (run / "config.yaml").read_text().replace(str(data), str(tmp_path / "gone"))
        (run / "config.yaml").write_text(cfg)
        (run / "thresholds.json").unlink()
        assert main(["predict", str(run), str(tmp_path / "q3.png"), "--top-k", "1"]) == 0
        captured = capsys.readouterr()
        assert "q3.png: q3 " in captured.out and "note: no per-class thresholds" in captured.err
    finally:
        torch.set_num_threads(n)


@pytest.mark.slow  # starts other processes
@pytest.mark.timeout(120)
def test_ctrl_c_leaves_a_resumable_run(tmp_path, data, child_env):
    from conftest import default_sigint

    env = child_env()
    args = image_overrides(data, tmp_path, **{"run.name": "int", "train.epochs": 6,
                                              "callbacks": "[engine_helpers:SlowBatches]"})
    # default_sigint: under a non-interactive shell's background job the child would inherit SIGINT ignored
    proc = subprocess.Popen([sys.executable, "-m", "wsml.cli", "train", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)
    metrics = tmp_path / "int" / "metrics.csv"
    deadline = time.time() + 90
    while time.time() < deadline and proc.poll() is None:
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= 2:  # header + epoch 1
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)  # epoch 2 is running (~0.6 s per epoch)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert "wsml train --resume" in err and "Traceback" not in err
    done = load_checkpoint(tmp_path / "int" / "last.pt")["epoch"]
    assert 1 <= done < 6 and not (tmp_path / "int" / "summary.json").exists()
    resumed = subprocess.run([sys.executable, "-m", "wsml.cli", "train", "--resume", str(tmp_path / "int"),
                              "callbacks=[]"], env=env, capture_output=True, text=True, timeout=60)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    with open(metrics) as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [1, 2, 3, 4, 5, 6]
    assert json.loads((tmp_path / "int" / "summary.json").read_text())["epochs"] == 6


def test_prepare_prints_statistics_and_train_uses_the_folder(tmp_path, capsys):
    pytest.importorskip("river")
    out = tmp_path / "yeast"
    assert main(["prepare", "yeast", "--out", str(out), "seed=1200"]) == 0
    printed = capsys.readouterr().out
    assert f"prepared yeast -> {out}  (14 classes, kind features)" in printed
    assert "train: 1200 samples" in printed and "1.000 observed pos/sample" in printed
    assert "test : 917 samples" in printed
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["train", str(TESTS.parent / "configs" / "yeast" / "ll-r.yaml"), f"data.path={out}",
                     "train.epochs=2", f"run.out={tmp_path}", "run.quiet=true"]) == 0
    finally:
        torch.set_num_threads(n)
    summary = json.loads((tmp_path / "yeast-ll-r" / "summary.json").read_text())
    assert summary["num_test"] == 917 and summary["epochs"] == 2


def test_demo_table_compares_with_naive_an(tmp_path):
    from wsml.tools.demo import results_table

    for m, test, val, best in (("an", 70.0, 71.5, 8), ("ll-r", 74.25, 75.0, 7)):
        (tmp_path / m).mkdir()
        (tmp_path / m / "summary.json").write_text(json.dumps(
            {"test_map": test, "val_map": val, "best_epoch": best, "epochs": 8, "wall_time_s": 10.0}))
    lines = results_table(["an", "ll-r"], tmp_path, {"an": 100.4}).splitlines()
    assert lines[2] == "| Naive AN | 70.00 | 71.50 | 8/8 |  | 100 s |"
    assert lines[3] == "| LL-R | 74.25 | 75.00 | 7/8 | +4.25 | 10 s |"


def test_demo_finds_its_configs():
    """`make demo` trains configs/fashion/<method>.yaml from the repository root (broke once in a package move)."""
    from wsml.config import load_config
    from wsml.tools.demo import CONFIGS

    for method in ("base", "an", "ll-r", "ll-ct"):
        assert load_config(CONFIGS / f"{method}.yaml", []).data.path
