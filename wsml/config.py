"""Training configuration: dataclasses ← YAML files (with ``include``) ← ``key=value`` overrides.

A config is built in three layers, later ones winning:

1. the dataclass defaults below (the paper's end-to-end setting: ResNet-50, 448 px, batch 16, 10 epochs);
2. a YAML file; ``include: other.yaml`` (or a list) is merged first, relative to the including file,
   so that ``configs/voc/ll-r.yaml`` only says what differs from ``configs/voc/base.yaml``;
3. ``section.key=value`` overrides from the command line, values parsed as YAML scalars
   (``optim.lr=1e-4``, ``train.amp=off``, ``callbacks=[memorization]``).

Mappings merge key by key (an included ``data:`` section is completed, not replaced); an empty mapping
clears (``model.options={}``).

Unknown keys are errors that list the valid ones; wrong types are errors naming key and value.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import yaml

from wsml._types import PathLike

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULERS = ("none", "cosine", "step")
SCHEMES = ("end-to-end", "linearinit")
AMP_MODES = ("auto", "bf16", "fp16", "off")
DEVICES = ("auto", "cpu", "cuda")
STAGE2_LOSS = ("restart", "continue")


class ConfigError(ValueError):
    """A bad configuration: unknown key, wrong type or invalid value (the message says which)."""


@dataclass
class DataConfig:
    """Which prepared data set to train on and how its samples are loaded."""

    path: str = "data/fashion-mosaic"  # folder written by `wsml prepare`
    dataset: str = ""  # adapter name: when set and `path` is not prepared yet, it is prepared first
    root: Optional[str] = None  # raw files the adapter reads (VOCdevkit, COCO, ...)
    options: dict = field(default_factory=dict)  # adapter options, e.g. {num_pos: 1, seed: 1200}
    image_size: int = 448
    num_workers: int = 0  # loader processes; -1 = min(CPU cores, 4)
    on_bad_image: str = "error"  # an unreadable image while training: "error" (stop, naming it) or "skip" (warn)
    max_pixels: int = 64_000_000  # images with more pixels are refused before decoding (decompression bombs)


@dataclass
class ModelConfig:
    """The network: a backbone name understood by wsml.models.create_model, plus a linear head."""

    backbone: str = "resnet50"
    pretrained: bool = True
    weights: Optional[str] = None  # a local weights file instead of the built-in pretrained weights
    dropout: float = 0.0
    options: dict = field(default_factory=dict)  # backbone keyword arguments, e.g. {widths: [16, 32, 64, 128]}
    boostlu_alpha: Optional[float] = None  # BoostLU (Kim et al. 2023): boost the positive CAM by α (paper: 5)
    require_weights: str = ""  # "imagenet1k_v1": only torchvision's V1 ResNet file (SHA-256 checked; paper configs)


@dataclass
class LossConfig:
    """The loss (wsml.losses.build_loss) and its hyper-parameters; unset (null) ones keep the loss default."""

    name: str = "an"
    delta_rel: Union[float, str, None] = None  # LL-R/Ct/Cp: Δrel, % of the batch's entries per epoch, or "auto"
    schedule: Optional[str] = None  # LL-*: "rel" (default) or "abs"
    r0: Optional[float] = None  # LL-* absolute variant: R(t) = r0 - t * delta_abs
    delta_abs: Optional[float] = None
    ls_coef: Optional[float] = None  # LSAN label smoothing ε
    expected_num_pos: Optional[float] = None  # EPR / ROLE: expected positives per image
    extra: dict = field(default_factory=dict)  # any other keyword the loss accepts

    def hparams(self) -> dict:
        """Keyword arguments for build_loss: the set fields plus ``extra``."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
               if f.name not in ("name", "extra") and getattr(self, f.name) is not None}
        out.update(self.extra)
        return out


@dataclass
class OptimConfig:
    """Optimizer and learning-rate schedule; the head's lr is ``lr * head_lr_mult`` (paper: 10×)."""

    name: str = "sgd"
    lr: float = 5e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    head_lr_mult: float = 10.0
    scheduler: str = "none"
    step_size: int = 5  # scheduler "step": epochs between decays
    gamma: float = 0.1
    grad_clip: float = 0.0  # max gradient norm, 0 = off


@dataclass
class TrainConfig:
    """The training scheme and loop settings (paper §4 / appendix A)."""

    scheme: str = "end-to-end"  # or "linearinit": frozen-backbone head training, then fine-tuning
    epochs: int = 10  # end-to-end epochs, or LinearInit stage-2 (fine-tuning) epochs (0 = no fine-tuning)
    linear_epochs: int = 25  # LinearInit stage 1 (head only, on cached backbone features)
    stage2_loss: str = "restart"  # LinearInit: "restart" the loss schedule in stage 2, or "continue" it
    batch_size: int = 16  # global batch: under torchrun each of N processes gets batch_size / N
    eval_batch_size: int = 0  # 0 = 2 × batch_size
    amp: str = "auto"  # autocast on CUDA: auto (bf16 if supported, else fp16), bf16, fp16, off
    device: str = "auto"
    seed: int = 0
    deterministic: bool = True
    feature_cache: str = ""  # LinearInit feature cache folder ("" = <run dir>/features)
    early_stop_patience: int = 0  # stop after this many epochs without a better val mAP (0 = off; EM+APL authors: 1)
    linear_optim: str = ""  # LinearInit stage 1 optimizer ("" = optim.name); see wsml/train/stages.py
    linear_lr: Optional[float] = None  # stage 1 head lr (null = optim.lr x head_lr_mult)
    linear_weight_decay: Optional[float] = None  # stage 1 weight decay (null = optim.weight_decay)
    linear_batch_size: int = 0  # stage 1 batch size (0 = batch_size)
    early_stop_drop: float = 0.0  # stop a stage when val mAP falls more than this below its best (authors: 3); 0 off
    drop_last: bool = False  # drop the last incomplete training batch (Cole et al.'s loaders; image loaders only)


@dataclass
class RunConfig:
    """Where results go: ``<out>/<name>/``."""

    out: str = "runs"
    name: str = ""  # "" = <data set>-<loss>-<scheme>
    overwrite: bool = False  # reuse an existing run folder instead of picking a fresh name
    quiet: bool = False  # no progress bars or per-epoch lines


@dataclass
class Config:
    """A complete, resolved training configuration (what config.yaml in a run folder holds)."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    run: RunConfig = field(default_factory=RunConfig)
    callbacks: list = field(default_factory=list)  # names in wsml.train.callbacks' registry or "module:Class"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, path: PathLike) -> None:
        """Write as a run folder's ``config.yaml`` (atomically, with an end marker: wsml.runs)."""
        from wsml.runs import write_config

        write_config(self, path)


# ---------------------------------------------------------------- building from dicts, files, overrides


def from_dict(data: dict, cls: type = Config, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a nested dict, checking every key and type."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            raise ConfigError(f"unknown config key {prefix + str(key)!r}; valid keys"
                              f"{' in ' + repr(prefix.rstrip('.')) if prefix else ''}: {', '.join(names)}")
        kwargs[key] = _coerce(value, hints[key], prefix + key)
    cfg = cls(**kwargs)
    if cls is Config:
        validate(cfg)
    return cfg


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` (converting int→float and numeric strings like 5e-3)."""
    if dataclasses.is_dataclass(tp):
        return from_dict(value if value is not None else {}, tp, key + ".")
    origin = typing.get_origin(tp)
    if origin is Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        for arg in args[:-1]:  # Union[float, str]: the first type that takes the value
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                pass
        return _coerce(value, args[-1], key)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "5e-3" as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, bool):  # YAML 1.1 reads off/on/no/yes as booleans: train.amp=off means "off"
            return "on" if value else "off"
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
    elif tp is dict or origin is dict:
        if isinstance(value, dict):
            return dict(value)
        if value is None:
            return {}
    elif tp is list or origin is list:
        if isinstance(value, list):
            return list(value)
        if value is None:
            return []
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
    name = getattr(tp, "__name__", str(tp))
    raise ConfigError(f"config key {key!r}: expected {name}, got {value!r} ({type(value).__name__})")


def _check_choice(key: str, value: str, choices: tuple) -> None:
    if value not in choices:
        raise ConfigError(f"config key {key!r}: {value!r} is not one of {', '.join(choices)}")


def validate(cfg: Config) -> None:
    """Check values (choices, ranges) that types alone do not catch."""
    _check_choice("optim.name", cfg.optim.name, OPTIMIZERS)
    _check_choice("optim.scheduler", cfg.optim.scheduler, SCHEDULERS)
    _check_choice("train.scheme", cfg.train.scheme, SCHEMES)
    _check_choice("train.amp", cfg.train.amp, AMP_MODES)
    _check_choice("train.device", cfg.train.device, DEVICES)
    _check_choice("train.stage2_loss", cfg.train.stage2_loss, STAGE2_LOSS)
    min_epochs = 0 if cfg.train.scheme == "linearinit" else 1  # LinearInit may stop after stage 1
    for key, value, low in (("train.epochs", cfg.train.epochs, min_epochs),
                            ("train.batch_size", cfg.train.batch_size, 1),
                            ("train.linear_epochs", cfg.train.linear_epochs, 1),
                            ("train.eval_batch_size", cfg.train.eval_batch_size, 0),
                            ("data.image_size", cfg.data.image_size, 1), ("data.num_workers", cfg.data.num_workers, -1),
                            ("data.max_pixels", cfg.data.max_pixels, 1), ("optim.step_size", cfg.optim.step_size, 1),
                            ("train.early_stop_patience", cfg.train.early_stop_patience, 0)):
        if value < low:
            raise ConfigError(f"config key {key!r}: {value} must be >= {low}")
    _check_choice("model.require_weights", cfg.model.require_weights, ("", "imagenet1k_v1"))
    t = cfg.train
    if t.linear_optim:
        _check_choice("train.linear_optim", t.linear_optim, OPTIMIZERS)
    if t.linear_lr is not None and not t.linear_lr > 0:
        raise ConfigError(f"config key 'train.linear_lr': {t.linear_lr} must be > 0 (or null = optim.lr)")
    for key, value in (("train.linear_weight_decay", t.linear_weight_decay or 0.0),
                       ("train.linear_batch_size", t.linear_batch_size), ("train.early_stop_drop", t.early_stop_drop)):
        if value < 0:
            raise ConfigError(f"config key {key!r}: {value} must be >= 0")
    if isinstance(cfg.loss.delta_rel, str) and cfg.loss.delta_rel != "auto":
        raise ConfigError(f"config key 'loss.delta_rel': expected a number or 'auto', got {cfg.loss.delta_rel!r}")
    if not cfg.optim.lr > 0:
        raise ConfigError(f"config key 'optim.lr': {cfg.optim.lr} must be > 0")
    if cfg.model.boostlu_alpha is not None and not cfg.model.boostlu_alpha > 0:
        raise ConfigError(f"config key 'model.boostlu_alpha': {cfg.model.boostlu_alpha} must be > 0 (or null = off)")
    from wsml.losses import resolve_loss_name

    try:
        resolve_loss_name(cfg.loss.name)  # unknown loss names fail here, listing the available ones
    except ValueError as e:
        raise ConfigError(f"config key 'loss.name': {e}") from None
    if not all(isinstance(c, str) for c in cfg.callbacks):
        raise ConfigError(f"config key 'callbacks': expected a list of names, got {cfg.callbacks!r}")


def _deep_merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for k, v in top.items():
        # mappings merge key by key; an empty mapping ({}) clears, e.g. model.options={}
        out[k] = _deep_merge(out[k], v) if v and isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def yaml_mapping(path: Path, what: str) -> dict:
    """The YAML mapping in ``path`` (empty file: {}); invalid YAML or another type is a one-line ConfigError."""
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected {what}, got {type(data).__name__}")
    return data


def read_yaml(path: PathLike, _seen: tuple = ()) -> dict:
    """Read a YAML config, resolving ``include`` (a path or a list, relative to this file) recursively."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    if path.resolve() in _seen:
        raise ConfigError(f"{path}: include cycle ({' -> '.join(str(p) for p in _seen)})")
    data = yaml_mapping(path, "a mapping of config sections")
    includes = data.pop("include", None) or []
    merged: dict = {}
    for inc in [includes] if isinstance(includes, str) else includes:
        merged = _deep_merge(merged, read_yaml(path.parent / inc, _seen + (path.resolve(),)))
    return _deep_merge(merged, data)


def parse_value(raw: str) -> Any:
    """A ``key=value`` value as a YAML scalar (``0.1`` -> float, ``off`` -> False); unparsable text as is.

    YAML 1.1 reads ``1e-4`` (no dot) as text: a config field's type turns it into a float (:func:`from_dict`)."""
    try:
        return yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        return raw


def parse_assignment(item: str, what: str = "override", example: str = "optim.lr=1e-4") -> tuple[str, Any]:
    """One ``key=value`` item -> ``(key, value)``, the value a YAML scalar (:func:`parse_value`).

    The one parser of ``key=value`` text: config overrides (``wsml train``, sweeps, bench grids) and adapter
    options (``wsml prepare``). ``what`` and ``example`` name the item in the error message.
    """
    key, sep, raw = item.partition("=")
    if not sep:
        raise ConfigError(f"{what} {item!r} is not of the form key=value (e.g. {example})")
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"{what} {item!r}: empty key")
    return key, parse_value(raw)


def parse_overrides(items: list[str]) -> dict:
    """Turn ``["optim.lr=1e-4", "train.epochs=3"]`` into a nested dict (values parsed as YAML scalars)."""
    out: dict = {}
    for item in items:
        key, value = parse_assignment(item)
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
        node[parts[-1]] = value
    return out


def load_config(path: Optional[PathLike] = None, overrides: Optional[list[str]] = None) -> Config:
    """The resolved config: defaults ← YAML file ``path`` (optional) ← ``key=value`` overrides."""
    data = read_yaml(path) if path else {}
    data = _deep_merge(data, parse_overrides(list(overrides or [])))
    return from_dict(data)
