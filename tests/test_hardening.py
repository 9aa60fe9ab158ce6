"""Hostile and careless inputs: crafted checkpoints, changed resumes, racing runs, damaged data, interrupts.

Every case must end in one line ``wsml: error: ...`` naming the file or key and exit code 2 (or, for Ctrl-C,
a message that says what is really on disk) - never code run from a file, never a silently different run.
"""

from __future__ import annotations

import errno
import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import cli_error
from engine_helpers import make_feature_index

from wsml.checkpoint import atomic_write, load_checkpoint
from wsml.cli import main
from wsml.config import load_config
from wsml.data.index import DatasetIndex
from wsml.train.engine import train


def _overrides(data: Path, out: Path, name: str, **extra) -> list[str]:
    ov = {"data.path": data, "model.backbone": "linear", "model.pretrained": False, "loss.name": "ll-r",
          "loss.delta_rel": 10, "optim.lr": 0.05, "train.batch_size": 16, "train.epochs": 2, "train.device": "cpu",
          "run.out": out, "run.name": name, "run.quiet": True}
    ov.update(extra)
    return [f"{k}={v}" for k, v in ov.items()]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_feature_index(tmp_path_factory.mktemp("feats"))


@pytest.fixture(scope="module")
def finished(data, tmp_path_factory):
    """A finished 2-epoch run (copied by the tests that damage it)."""
    out = tmp_path_factory.mktemp("runs")
    train(load_config(None, _overrides(data, out, "base")))
    return out / "base"


@pytest.fixture
def run(finished, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(finished, dst)
    return dst




class _Payload:
    """Unpickling this creates the marker file: what a crafted checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def test_crafted_checkpoints_run_no_code_and_are_refused(run, tmp_path, capsys):
    marker = tmp_path / "pwned"
    good = load_checkpoint(run / "last.pt", required=("model",))
    hostile = dict(good, state=_Payload(marker))
    for name in ("best.pt", "last.pt"):
        torch.save(hostile, run / name)
    (tmp_path / "x.png").write_bytes(b"")
    for argv in (["eval", str(run)], ["predict", str(run), str(tmp_path / "x.png")], ["train", "--resume", str(run)],
                 ["find-missing", str(run), "--out", str(tmp_path / "m.csv")]):
        err = cli_error(argv, capsys)
        assert "cannot be read safely" in err and str(run) in err, err
    assert not marker.exists()
    # a truncated file and a foreign one (a plain state_dict) name the file too
    (run / "best.pt").write_bytes((tmp_path / "run" / "last.pt").read_bytes()[:200])
    assert f"checkpoint {run / 'best.pt'} cannot be read safely" in cli_error(["eval", str(run)], capsys)
    torch.save({"weight": torch.zeros(3)}, run / "best.pt")
    assert "is not a wsml checkpoint (no 'model')" in cli_error(["eval", str(run)], capsys)


def test_resume_refuses_a_different_run_and_keeps_config_yaml(run, capsys):
    before = (run / "config.yaml").read_bytes()
    err = cli_error(["train", "--resume", str(run), "loss.name=an", "data.path=elsewhere"], capsys)
    assert "loss.name ('ll-r' -> 'an')" in err and "data.path" in err and "would change the run" in err
    assert "start a new run" in err
    err = cli_error(["train", "--resume", str(run), "train.epochs=1"], capsys)
    assert "already completed 2 epochs" in err
    err = cli_error(["train", "--resume", str(run), "model.options={widths: [3]}"], capsys)
    assert "model.options" in err
    assert (run / "config.yaml").read_bytes() == before  # nothing written by a refused resume
    # a checkpoint from before a setting existed: the setting's default is no change
    from wsml.runs import read_run_config
    from wsml.train.run_dir import check_resume

    stored = load_checkpoint(run / "last.pt")
    del stored["config"]["data"]["on_bad_image"]
    check_resume(read_run_config(run), stored, run, 2)
    # more epochs would stretch a cosine schedule: refused
    stored["config"]["optim"]["scheduler"] = "cosine"
    cfg = read_run_config(run)
    cfg.optim.scheduler, cfg.train.epochs = "cosine", 3
    with pytest.raises(ValueError, match="would change the run planned by optim.scheduler=cosine"):
        check_resume(cfg, stored, run, 3)
    # an edit of config.yaml that changes the run is refused the same way
    (run / "config.yaml").write_text(before.decode().replace("name: ll-r", "name: an"))
    assert "differs from the config stored in" in cli_error(["train", "--resume", str(run)], capsys)
    # allowed: more epochs, quiet, device; config.yaml is rewritten (atomically, with its end marker)
    (run / "config.yaml").write_bytes(before)
    assert main(["train", "--resume", str(run), "train.epochs=3", "train.device=cpu"]) == 0
    text = (run / "config.yaml").read_text()
    assert "epochs: 3" in text and text.endswith("# end of wsml config\n")
    assert load_checkpoint(run / "last.pt")["epoch"] == 3


def test_cut_config_yaml_is_detected_and_resume_restores_it(run, capsys):
    lines = (run / "config.yaml").read_text().splitlines(keepends=True)
    cut = "".join(lines[: len(lines) // 2])  # cut at a line boundary: still valid YAML
    (run / "config.yaml").write_text(cut)
    err = cli_error(["eval", str(run)], capsys)
    assert "config.yaml is incomplete (missing" in err
    assert main(["train", "--resume", str(run)]) == 0  # the checkpoint's config is the reference
    assert "continuing from the config stored in last.pt" in capsys.readouterr().err
    assert main(["eval", str(run)]) == 0


def test_config_yaml_from_older_wsml_versions_stays_readable(run, capsys):
    """A config.yaml written before the end marker existed (wsml 0.1), or before a key was added, still loads:
    the marker tells a whole file from a cut one, and keys added since take their defaults."""
    from wsml.runs import END_MARKER, read_run_config

    text = (run / "config.yaml").read_text()
    legacy = text.replace(END_MARKER + "\n", "").replace("  early_stop_patience: 0\n", "")
    assert legacy != text and "early_stop_patience" not in legacy
    (run / "config.yaml").write_text(legacy)  # 0.1-style: no marker, a key that 0.1 did not have
    assert read_run_config(run).train.early_stop_patience == 0
    assert main(["eval", str(run)]) == 0
    (run / "config.yaml").write_text(legacy.replace("callbacks: []\n", ""))  # cut: the last section is gone
    assert "config.yaml is incomplete (missing callbacks)" in cli_error(["eval", str(run)], capsys)


def test_resume_imports_callback_code_only_from_the_command_line(run, capsys):
    text = (run / "config.yaml").read_text().replace("callbacks: []", "callbacks:\n- os:getcwd")
    (run / "config.yaml").write_text(text)
    err = cli_error(["train", "--resume", str(run), "run.quiet=true"], capsys)
    assert "imports callbacks only from the command line" in err and "os:getcwd" in err
    # named on the command line, it is imported - and refused: a function is not a callback
    err = cli_error(["train", "--resume", str(run), "train.epochs=3", "callbacks=[os:getcwd]"], capsys)
    assert "has none of the callback methods" in err


def test_concurrent_runs_with_one_name_get_distinct_folders(data, tmp_path):
    from wsml.train.run_dir import new_run_dir

    cfg = load_config(None, _overrides(data, tmp_path, "same"))
    start, got = threading.Barrier(8), []

    def claim():
        start.wait()
        got.append(new_run_dir(cfg))

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(p.name for p in got) == sorted(["same"] + [f"same-{i}" for i in range(2, 9)])


def test_overwrite_removes_every_derived_result_and_keeps_review_decisions(data, tmp_path):
    from wsml.train.run_dir import new_run_dir

    cfg = load_config(None, _overrides(data, tmp_path, "again") + ["run.overwrite=true"])
    run = new_run_dir(cfg)
    old = ["summary.json", "thresholds.json", "eval_val.json", "predictions_val.npz", "find_missing.json",
           "best.pt", "predictions_test.chunks/rank0-00000.npy", "review/val-decisions.json"]
    for name in old:
        (run / name).parent.mkdir(exist_ok=True)
        (run / name).write_text("old")
    assert new_run_dir(cfg) == run
    assert sorted(p.name for p in run.iterdir()) == ["review"] and (run / "review/val-decisions.json").is_file()


@pytest.mark.parametrize("name", ["..", "a/b", "../x", "."])
def test_run_name_must_be_one_folder(data, tmp_path, capsys, name):
    out = tmp_path / "runs"
    err = cli_error(["train", *_overrides(data, out, name), "run.overwrite=true"], capsys)
    assert "must be a single folder name" in err
    assert not out.exists() or not any(out.iterdir())


def test_stale_temporaries_are_removed_and_full_disk_is_one_line(run, data, tmp_path, capsys, monkeypatch):
    (run / ".last.pt.abc123.tmp").write_bytes(b"partial")
    assert main(["train", "--resume", str(run), "train.epochs=3"]) == 0
    assert not list(run.glob(".*.tmp"))

    def full_disk(obj, f, *a, **k):
        f.write(b"x")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("wsml.checkpoint.torch.save", full_disk)
    err = cli_error(["train", *_overrides(data, tmp_path / "out", "full")], capsys)
    assert "no space left on device while writing" in err and "best.pt" in err
    assert not list((tmp_path / "out" / "full").glob(".*.tmp"))


def test_state_mismatch_and_wrong_optimizer_state_are_one_line(run, capsys):
    ckpt = load_checkpoint(run / "best.pt")
    ckpt["model"] = {k: torch.zeros(2, 2) for k in ckpt["model"]}
    torch.save(ckpt, run / "best.pt")
    assert "best.pt: its model state does not fit this run" in cli_error(["eval", str(run)], capsys)
    last = load_checkpoint(run / "last.pt")
    last["optimizer"]["param_groups"].append(dict(last["optimizer"]["param_groups"][0], params=[99]))
    torch.save(last, run / "last.pt")
    assert "its optimizer state does not fit" in cli_error(["train", "--resume", str(run), "train.epochs=3"], capsys)


class _InterruptAt:
    """Raise KeyboardInterrupt (Ctrl-C) when wsml writes the named file."""

    def __init__(self, monkeypatch, module: str, func: str, name: str):
        self.real = getattr(__import__(module, fromlist=[func]), func)
        self.name = name
        monkeypatch.setattr(f"{module}.{func}", self)

    def __call__(self, *args):
        if any(isinstance(a, Path) and a.name == self.name for a in args):
            raise KeyboardInterrupt
        return self.real(*args)


def test_interrupt_messages_say_what_is_on_disk(data, tmp_path, capsys, monkeypatch):
    _InterruptAt(monkeypatch, "wsml.train.engine", "save_checkpoint", "last.pt")  # during epoch 1's last.pt write
    with pytest.raises(KeyboardInterrupt):
        train(load_config(None, _overrides(data, tmp_path, "a", **{"run.quiet": False})))
    err = capsys.readouterr().err
    assert "no completed epoch is saved" in err and "wsml train --resume" not in err
    monkeypatch.undo()
    _InterruptAt(monkeypatch, "wsml.train.engine", "save_predictions", "predictions_test.npz")  # final evaluation
    with pytest.raises(KeyboardInterrupt):
        train(load_config(None, _overrides(data, tmp_path, "b")))
    err = capsys.readouterr().err
    assert "during the final test evaluation" in err and "holds epoch 2" in err and "wsml eval" in err
    monkeypatch.undo()
    assert main(["train", "--resume", str(tmp_path / "b")]) == 0  # finishes: summary.json written
    assert json.loads((tmp_path / "b" / "summary.json").read_text())["epochs"] == 2


def test_eval_never_prepares_data(run, tmp_path, capsys, monkeypatch):
    from wsml.runs import read_run_config, write_config

    monkeypatch.chdir(tmp_path)
    cfg = read_run_config(run)
    cfg.data.path, cfg.data.dataset = "data/yeast", "yeast"  # training would prepare it; eval must not
    write_config(cfg, run / "config.yaml")
    assert "is not a prepared data set" in cli_error(["eval", str(run)], capsys)
    assert not (tmp_path / "data").exists()


def test_predict_works_from_the_run_folder_alone(tmp_path, capsys, monkeypatch):
    from engine_helpers import image_overrides, make_image_index
    from PIL import Image

    from wsml.runs import read_run_config, write_config

    data = make_image_index(tmp_path / "quads", n_train=32, n_val=16, n_test=8)
    assert main(["train", *image_overrides(data, tmp_path, **{"run.name": "img", "train.epochs": 1})]) == 0
    run = tmp_path / "img"
    cfg = read_run_config(run)
    cfg.data.path, cfg.data.dataset, cfg.data.root = "data/voc", "voc", None  # needs raw files to prepare
    write_config(cfg, run / "config.yaml")
    shutil.rmtree(data)
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "x.png")
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main(["predict", str(run), str(tmp_path / "x.png")]) == 0
    assert "using 0.5" in capsys.readouterr().err and not (tmp_path / "data").exists()


def test_prepared_data_damage_is_one_line(data, tmp_path, capsys):
    d = tmp_path / "d"
    shutil.copytree(data, d)
    (d / "train" / "labels_obs.npy").unlink()  # would silently train on the full ground truth
    with pytest.raises(FileNotFoundError, match="labels_obs.npy: missing"):
        DatasetIndex.load(d)
    shutil.rmtree(d)
    shutil.copytree(data, d)
    np.save(d / "val" / "labels_full.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="labels_full.npy: not a readable numpy array") as e:
        DatasetIndex.load(d)
    assert "allow_pickle" not in str(e.value)
    manifest = json.loads((d / "manifest.json").read_text())
    del manifest["class_names"]
    (d / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="key 'class_names' is missing"):
        DatasetIndex.load(d)
    manifest = json.loads((data / "manifest.json").read_text())
    manifest["splits"].pop("val")
    (d / "manifest.json").write_text(json.dumps(manifest))
    (d / "val" / "labels_full.npy").unlink()
    err = cli_error(["train", *_overrides(d, tmp_path, "noval")], capsys)
    assert "has no split 'val'" in err


def test_atomic_write_cleans_up_on_any_error(tmp_path):
    with pytest.raises(OSError, match=f"no space left on device while writing {tmp_path / 'f.bin'}"):
        atomic_write(tmp_path / "f.bin", lambda f: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full")))
    assert not list(tmp_path.iterdir())


def test_api_edges_are_value_errors_naming_the_argument():
    from wsml.labels import observe_labels
    from wsml.losses import build_loss
    from wsml.metrics import mean_average_precision

    targets = torch.tensor([[1, 0, 255], [0, 1, 0]], dtype=torch.uint8)
    with pytest.raises(ValueError, match=r"targets contain values \[255\]"):
        build_loss("an")(torch.zeros(2, 3), targets)
    z = torch.randn(128, 160).bfloat16()  # 20480 entries: the sampled selection path
    t = torch.zeros(128, 160, dtype=torch.int8)
    t[:, 0] = 1
    llr = build_loss("ll-r", delta_rel=np.float32(2.0))  # numpy scalar hyper-parameter
    llr.set_epoch(3)
    assert torch.isfinite(llr(z, t, index=torch.arange(128)))
    assert len(llr.last_modified[0]) == int(np.ceil(0.04 * 128 * 160))
    assert build_loss("lsan", ls_coef=np.float64(0.1)).ls_coef == 0.1
    with pytest.raises(ValueError, match="logits are finite but so large"):
        build_loss("an")(torch.full((4, 3), 3e38), torch.zeros(4, 3, dtype=torch.int8))
    with pytest.raises(ValueError, match="scores has no rows"):
        mean_average_precision(np.zeros((0, 3)), np.zeros((0, 3)))
    with pytest.raises(ValueError, match="seed must be an integer"):
        observe_labels(np.eye(3, dtype=np.uint8), seed=None)


def _png_canvas(path: Path, side: int) -> Path:
    """A 1-bit black PNG of side x side pixels (tiny on disk, huge decoded), by the fault benchmark's writer."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("faults", Path(__file__).parents[1] / "benchmarks" / "faults.py")
    faults = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(faults)
    faults.write_png_canvas(path, side)
    return path


def test_decompression_bombs_meet_wsmls_limit_not_pillows_warning(tmp_path):
    """wsml's max_pixels replaces Pillow's bomb check: no DecompressionBombWarning reaches the user (it printed two
    extra lines under `wsml prepare`), and a canvas past Pillow's hard limit is one ValueError naming the file."""
    import warnings

    from wsml.data.image_check import image_problem
    from wsml.data.loading import open_image

    bomb = _png_canvas(tmp_path / "bomb.png", 13_000)  # 169 MP in ~20 KB: over Pillow's warning threshold
    assert image_problem(str(bomb), 64_000_000) == "too many pixels"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning would raise here
        with open_image(str(bomb), max_pixels=None) as im:
            assert im.size == (13_000, 13_000)  # header only: nothing decoded
        with pytest.raises(ValueError, match="megapixels is over the limit of 64 MP"):
            open_image(str(bomb))
    huge = _png_canvas(tmp_path / "huge.png", 14_000)  # 196 MP: past Pillow's hard limit
    with pytest.raises(ValueError, match=r"huge\.png: over \d+ megapixels, Pillow's decompression-bomb limit"):
        open_image(str(huge), max_pixels=None)
