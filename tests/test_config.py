"""Config layering (defaults <- YAML with include <- key=value), validation errors, the shipped configs."""

from __future__ import annotations

from pathlib import Path

import pytest

from wsml.config import Config, ConfigError, from_dict, load_config, parse_overrides, read_yaml
from wsml.losses import build_loss

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def test_defaults_are_the_papers_end_to_end_setting():
    cfg = Config()
    assert (cfg.model.backbone, cfg.data.image_size) == ("resnet50", 448)
    assert (cfg.train.batch_size, cfg.train.epochs) == (16, 10)
    assert cfg.optim.head_lr_mult == 10 and cfg.train.linear_epochs == 25 and cfg.train.scheme == "end-to-end"


def test_include_merges_relative_files_then_overrides_win(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "base.yaml").write_text("optim: {name: adam, lr: 1.0e-5}\ntrain: {epochs: 4, batch_size: 8}\n")
    (tmp_path / "sub" / "mix.yaml").write_text("train: {scheme: linearinit}\n")
    (tmp_path / "sub" / "run.yaml").write_text("include: [../base.yaml, mix.yaml]\ntrain: {epochs: 6}\n"
                                               "loss: {name: ll-r, delta_rel: 0.4}\n")
    cfg = load_config(tmp_path / "sub" / "run.yaml", ["optim.lr=5e-3", "train.batch_size=32", "callbacks=[a, b]",
                                                      "model.options={widths: [8, 16]}"])
    assert cfg.optim.name == "adam" and cfg.optim.lr == 5e-3  # "5e-3" is a string in YAML 1.1: coerced
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.train.scheme) == (6, 32, "linearinit")
    assert cfg.loss.hparams() == {"delta_rel": 0.4} and cfg.callbacks == ["a", "b"]
    assert cfg.model.options == {"widths": [8, 16]}
    assert load_config(tmp_path / "sub" / "run.yaml", ["model.options={a: 1}", "model.options.b=2"]).model.options \
        == {"a": 1, "b": 2}
    (tmp_path / "opts.yaml").write_text("model: {options: {widths: [8]}}\n")
    assert load_config(tmp_path / "opts.yaml", ["model.options={}"]).model.options == {}  # {} clears
    # the resolved config round-trips through config.yaml
    cfg.save(tmp_path / "resolved.yaml")
    assert from_dict(read_yaml(tmp_path / "resolved.yaml")) == cfg


def test_overrides_parse_yaml_scalars_into_nested_sections():
    assert parse_overrides(["a.b.c=1", "a.b.d=x", "e=[1, 2]", "f=", "g=null"]) == {
        "a": {"b": {"c": 1, "d": "x"}}, "e": [1, 2], "f": "", "g": None}
    with pytest.raises(ConfigError, match="not of the form key=value"):
        parse_overrides(["optim.lr"])


def test_unknown_keys_list_the_valid_ones():
    with pytest.raises(ConfigError, match=r"unknown config key 'optim\.lrr'; valid keys in 'optim': name, lr, "):
        load_config(None, ["optim.lrr=0.1"])
    with pytest.raises(ConfigError, match=r"unknown config key 'trian'; valid keys: data, model, loss, optim, train"):
        load_config(None, ["trian.epochs=3"])


@pytest.mark.parametrize("override,message", [
    ("optim.lr=fast", "config key 'optim.lr': expected float, got 'fast' (str)"),
    ("train.epochs=2.5", "config key 'train.epochs': expected int, got 2.5 (float)"),
    ("train.deterministic=maybe", "config key 'train.deterministic': expected bool, got 'maybe'"),
    ("optim.name=rmsprop", "config key 'optim.name': 'rmsprop' is not one of sgd, adam, adamw"),
    ("train.scheme=linear", "'train.scheme': 'linear' is not one of end-to-end, linearinit"),
    ("train.epochs=0", "'train.epochs': 0 must be >= 1"),
    ("optim.lr=0", "'optim.lr': 0.0 must be > 0"),
    ("optim=3", "optim: expected a mapping, got 3"),
])
def test_wrong_values_name_key_and_value(override, message):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    assert message in str(e.value)


def test_yaml_errors_name_the_file(tmp_path):
    (tmp_path / "bad.yaml").write_text("train: [epochs: 3\n")
    with pytest.raises(ConfigError, match="bad.yaml: invalid YAML"):
        load_config(tmp_path / "bad.yaml")
    (tmp_path / "a.yaml").write_text("include: b.yaml\n")
    (tmp_path / "b.yaml").write_text("include: a.yaml\n")
    with pytest.raises(ConfigError, match="include cycle"):
        load_config(tmp_path / "a.yaml")
    with pytest.raises(FileNotFoundError, match="config file .*missing.yaml does not exist"):
        load_config(tmp_path / "missing.yaml")


# the authors' best settings (README of the reference code's issue tracker), written out independently
PAPER = {"voc": ("sgd", 5e-3, (0.2, 0.2, 0.1), 1.5), "coco": ("adam", 1e-5, (0.4, 0.2, 0.2), 2.9),
         "nus": ("adam", 1e-5, (0.4, 0.2, 0.2), 1.9), "cub": ("adam", 7.5e-5, (0.4, 0.4, 0.2), 31.4)}
LOSSES = ["an", "iu", "wan", "lsan", "epr", "role", "full", "ll-r", "ll-ct", "ll-cp"]


@pytest.mark.parametrize("dataset", sorted(PAPER))
def test_paper_configs(dataset):
    opt, lr, deltas, k = PAPER[dataset]
    for scheme in ("", "linearinit/"):
        for loss in LOSSES:
            cfg = load_config(CONFIGS / dataset / f"{scheme}{loss}.yaml")
            assert (cfg.model.backbone, cfg.model.pretrained, cfg.data.image_size) == ("resnet50", True, 448)
            assert (cfg.train.batch_size, cfg.train.epochs, cfg.optim.head_lr_mult) == (16, 10, 10)
            assert (cfg.optim.name, cfg.optim.lr, cfg.loss.name) == (opt, lr, loss)
            assert cfg.train.scheme == ("linearinit" if scheme else "end-to-end")
            assert cfg.train.linear_epochs == 25
            if loss.startswith("ll-"):
                assert cfg.loss.delta_rel == deltas[["ll-r", "ll-ct", "ll-cp"].index(loss)]
            if loss in ("epr", "role"):
                assert cfg.loss.expected_num_pos == k
            assert cfg.run.name == f"{dataset}-{loss}" + ("-linearinit" if scheme else "")
            assert cfg.data.path == f"data/{dataset}" + ("-full" if loss == "full" else "")


def test_openimages_and_cpu_configs_load_and_build_their_losses():
    oi = load_config(CONFIGS / "openimages" / "ll-r.yaml")
    assert (oi.model.backbone, oi.data.image_size, oi.train.batch_size, oi.train.epochs, oi.optim.lr) == (
        "resnet101", 224, 288, 20, 2e-5)
    assert oi.loss.delta_rel in (0.005, 0.01)
    for path in sorted(CONFIGS.rglob("*.yaml")):
        cfg = load_config(path)
        hp = cfg.loss.hparams()
        if cfg.loss.name in ("role", "em-apl"):  # sizes come from the data set
            hp.update(num_samples=10, num_classes=4)
        if hp.get("delta_rel") == "auto":  # resolved from the data set at training time (wsml.losses.delta_auto)
            hp["delta_rel"] = 0.4
        build_loss(cfg.loss.name, **hp)  # every shipped loss section is valid for its loss
