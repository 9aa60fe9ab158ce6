"""Turn a :class:`~wsml.config.Config` into the objects the training loop uses.

Data set (prepared on demand), model, loss, data loaders (DistributedSampler-based, so one process and
N processes see the same global batches), optimizer with the paper's 10× head learning rate, scheduler,
device and mixed-precision settings. Kept apart from :mod:`wsml.train.engine` so the loop reads top to bottom.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Optional

import torch
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from wsml.checkpoint import epoch_seed
from wsml.config import Config, DataConfig
from wsml.distributed import DistInfo, barrier, broadcast_object
from wsml.registry import normalise

# ------------------------------------------------------------------------------------------ data set


def load_index(data: DataConfig, dist_info: Optional[DistInfo] = None, prepare: bool = True):
    """Load the prepared data set at ``data.path``; prepare it first when ``data.dataset`` names an adapter
    (and ``prepare``: read-only commands such as eval and predict never write a data set)."""
    from wsml.data import DatasetIndex
    from wsml.data import prepare as prepare_dataset

    path = Path(data.path)
    if broadcast_object(not (path / "manifest.json").is_file()):  # rank 0's view: every rank takes the same branch
        if not data.dataset or not prepare:
            raise FileNotFoundError(f"data.path {path} is not a prepared data set (no manifest.json): run "
                                    f"`wsml prepare <dataset> --out {path}` or set data.dataset=<name>")
        if dist_info is None or dist_info.is_main:
            print(f"preparing data set {data.dataset!r} into {path} ...", flush=True)
            try:
                prepare_dataset(data.dataset, path, root=data.root, **data.options)
            except TypeError as e:  # a data.options key the adapter does not take
                if "keyword argument" not in str(e):
                    raise
                raise ValueError(f"data.options for {data.dataset!r}: {e}") from None
        barrier()
    return DatasetIndex.load(path)


def channels_for(cfg: Config, index) -> int:
    """Input channels: 1 for grayscale image data (the mosaics) with the small CNN trained from scratch;
    3 otherwise (ImageNet backbones expect RGB: grayscale images are replicated to 3 channels)."""
    gray = index.kind == "images" and int(index.meta.get("channels", 3)) == 1
    scratch = normalise(cfg.model.backbone) == "small-cnn" and not (cfg.model.pretrained or cfg.model.weights)
    return 1 if gray and scratch else 3


# ------------------------------------------------------------------------------------------ model, loss


def model_info(cfg: Config, index) -> dict:
    """What the model needs to know about the data (kept in checkpoints, so `wsml predict` needs no data set)."""
    in_features = int(index["train"].features.shape[1]) if index.kind == "features" else None
    return {"num_classes": index.num_classes, "class_names": list(index.class_names), "kind": index.kind,
            "in_chans": channels_for(cfg, index), "in_features": in_features}


def build_model(cfg: Config, index=None, info: Optional[dict] = None) -> torch.nn.Module:
    """The backbone + linear head of ``cfg.model`` for the data set's classes and input (``index`` or ``info``)."""
    from wsml.models import create_model

    info = info or model_info(cfg, index)
    try:
        model = create_model(cfg.model.backbone, info["num_classes"], pretrained=cfg.model.pretrained,
                             weights=cfg.model.weights, in_chans=info["in_chans"], in_features=info["in_features"],
                             dropout=cfg.model.dropout, require_weights=cfg.model.require_weights,
                             **cfg.model.options)
    except TypeError as e:  # a model.options key the backbone does not take
        if "keyword argument" not in str(e):
            raise
        raise ValueError(f"model.options for backbone {cfg.model.backbone!r}: {e}") from None
    if cfg.model.boostlu_alpha is not None:  # BoostLU: same state_dict keys, boosted CAM before pooling
        from wsml.models.boostlu import BoostLU

        if cfg.train.scheme == "linearinit" and model.spatial:
            raise ValueError("model.boostlu_alpha needs the feature map, which LinearInit's cached pooled features "
                             "do not keep: use train.scheme=end-to-end")
        model = BoostLU(model, alpha=cfg.model.boostlu_alpha)
    return model


def build_loss_fn(cfg: Config, index, log=print) -> torch.nn.Module:
    """``build_loss(cfg.loss.name, ...)`` with the hyper-parameters this loss accepts.

    Set fields the chosen loss does not take (e.g. ``delta_rel`` after switching to ``an``) are dropped
    with a note; ``num_samples``, ``num_classes``, ``observed_labels`` (ROLE's initial estimates) and ``num_epochs``
    are filled in from the training split and the config when the loss takes them.
    """
    from wsml.losses import build_loss
    from wsml.losses.registry import loss_hparams

    accepted = loss_hparams(cfg.loss.name)
    hp = cfg.loss.hparams()
    ignored = sorted(k for k in hp if k not in accepted and k not in cfg.loss.extra)
    if ignored:
        log(f"note: loss {cfg.loss.name!r} has no hyper-parameter(s) {', '.join(ignored)}; ignored")
    hp = {k: v for k, v in hp.items() if k not in ignored}
    from wsml.losses.delta_auto import resolve_delta_rel

    hp = resolve_delta_rel(cfg, index, hp, log)  # loss.delta_rel=auto: from the missing positives per image
    auto = {"num_samples": lambda: len(index["train"]), "num_classes": lambda: index.num_classes,
            "num_epochs": lambda: cfg.train.epochs, "observed_labels": lambda: index["train"].train_targets()}
    if "num_samples" in accepted:  # a dense per-image state: refuse before allocating what cannot fit
        check_state_memory(cfg.loss.name, len(index["train"]), index.num_classes, device_memory(cfg.train.device))
    for k, value in auto.items():
        if k in accepted and k not in hp:
            hp[k] = value()
    return build_loss(cfg.loss.name, **hp)


# bytes per (image, class) entry of the losses that keep a dense N x C state: ROLE's estimate logits, their
# gradient and Adam's two moments (fp32 each); EM+APL's pseudo-labels, recorded predictions and mask
STATE_BYTES = {"role": 16, "em-apl": 9}
STATE_SHARE = 0.5  # the state may take at most this share of the device's (or the machine's) memory


def device_memory(device: str) -> int:
    """Total bytes of the memory the loss state lives in: the CUDA device's, else the machine's RAM."""
    import os

    if device != "cpu" and torch.cuda.is_available():
        return int(torch.cuda.get_device_properties(0).total_memory)
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def check_state_memory(loss: str, num_samples: int, num_classes: int, available: int) -> None:
    """A loss with a dense N x C per-image state (ROLE: 1.7 M x 5000 OpenImages images need 136 GB with its Adam
    moments) is refused with its size when it would take more than STATE_SHARE of ``available`` bytes."""
    from wsml.losses.registry import resolve_loss_name

    name = resolve_loss_name(loss)
    need = STATE_BYTES.get(name, 4) * num_samples * num_classes
    if need > STATE_SHARE * available:
        raise ValueError(f"loss {name!r} keeps a dense {num_samples:,} x {num_classes:,} per-image state "
                         f"({need / 2**30:.1f} GiB), more than half of the {available / 2**30:.1f} GiB available: "
                         f"use a loss without per-image state (ll-r, ll-ct, ll-cp, epr) or fewer training rows "
                         f"(wsml prepare ... train_frac=0.1)")


# ------------------------------------------------------------------------------------------ loaders


def per_rank_batch(global_batch: int, dist_info: DistInfo, what: str = "train.batch_size") -> int:
    """``global_batch / world_size``; the global batch must divide evenly so every rank gets the same share."""
    if global_batch % dist_info.world_size:
        raise ValueError(f"{what}={global_batch} is the global batch and must be divisible by the number of "
                         f"processes ({dist_info.world_size})")
    return global_batch // dist_info.world_size


def make_sampler(data: Any, dist_info: DistInfo, *, shuffle: bool, seed: int) -> DistributedSampler:
    """A DistributedSampler over ``data`` (anything with a length), also for one process: its (seed, epoch)
    permutation makes the global batches of 1 and N processes identical, and a resumed epoch identical."""
    return DistributedSampler(data, num_replicas=dist_info.world_size, rank=dist_info.rank, shuffle=shuffle,
                              seed=seed, drop_last=False)


def build_loader(cfg: Config, index, split: str, dist_info: DistInfo, *, train: bool,
                 mean_std: Optional[tuple] = None, on_bad_image: Optional[str] = None) -> DataLoader:
    """The loader of ``split``: training ones shuffle (seeded per epoch) and augment, eval ones do not.

    ``mean_std``: the normalisation the (pretrained) backbone expects (``model.default_mean_std``);
    ``on_bad_image`` overrides ``cfg.data.on_bad_image`` (the final test evaluation skips bad images).
    """
    from wsml.data.loading import make_loader

    gb = cfg.train.batch_size if train else (cfg.train.eval_batch_size or 2 * cfg.train.batch_size)
    bs = per_rank_batch(gb, dist_info) if train else max(1, math.ceil(gb / dist_info.world_size))
    image_size = cfg.data.image_size if index.kind == "images" else None
    return make_loader(index, split, batch_size=bs, train=train, image_size=image_size,
                       num_workers=resolve_workers(cfg.data.num_workers), seed=cfg.train.seed,
                       drop_last=train and cfg.train.drop_last,
                       sampler=lambda ds: make_sampler(ds, dist_info, shuffle=train, seed=cfg.train.seed),
                       channels=channels_for(cfg, index), on_bad_image=on_bad_image or cfg.data.on_bad_image,
                       max_pixels=cfg.data.max_pixels,
                       mean=mean_std[0] if mean_std else None, std=mean_std[1] if mean_std else None,
                       pin_memory=torch.cuda.is_available())


def resolve_workers(num_workers: int) -> int:
    """``data.num_workers``; -1 means min(CPU cores, 4): the own-data default (decoding keeps up, no
    oversubscription)."""
    import os

    return min(os.cpu_count() or 1, 4) if num_workers < 0 else num_workers


def start_epoch(loader: DataLoader, epoch: int, seed: int, rank: int) -> None:
    """Make the epoch's randomness a function of (seed, epoch, rank): sampler order and augmentation flips."""
    if hasattr(loader.sampler, "set_epoch"):
        loader.sampler.set_epoch(epoch)
    if getattr(loader, "generator", None) is not None:  # base seed of the DataLoader's workers
        loader.generator.manual_seed(epoch_seed(seed, epoch, rank))
    transform = getattr(loader.dataset, "transform", None)
    if hasattr(transform, "reseed"):  # in-process loading (num_workers=0); workers reseed themselves
        transform.reseed(epoch_seed(seed, epoch, rank) + 17)


# ------------------------------------------------------------------------------------------ optimisation


def build_optimizer(cfg: Config, groups: list[dict]) -> torch.optim.Optimizer:
    """SGD (momentum), Adam or AdamW over parameter groups that carry their own ``lr``."""
    o = cfg.optim
    if o.name == "sgd":
        return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    if o.name == "adam":
        return torch.optim.Adam(groups, lr=o.lr, weight_decay=o.weight_decay)
    return torch.optim.AdamW(groups, lr=o.lr, weight_decay=o.weight_decay)


def build_scheduler(cfg: Config, optimizer: torch.optim.Optimizer, epochs: int) -> Optional[Any]:
    """Per-epoch learning-rate schedule: none, cosine over the stage's epochs, or step decay."""
    o = cfg.optim
    if o.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs))
    if o.scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=o.step_size, gamma=o.gamma)
    return None


def loss_param_groups(cfg: Config, loss_fn: torch.nn.Module) -> list[dict]:
    """The loss's learnable parameters for the network's optimizer. A loss with its own optimizer (ROLE: Adam at
    lr_mult × lr, no weight decay, as Cole et al., whatever ``optim.name``) is configured here and adds none."""
    if hasattr(loss_fn, "configure_optimizer"):
        loss_fn.configure_optimizer(cfg.optim.lr)
        return []
    if hasattr(loss_fn, "extra_param_groups"):
        groups = loss_fn.extra_param_groups(cfg.optim.lr)
    else:
        params = [p for p in loss_fn.parameters() if p.requires_grad]
        groups = [{"params": params, "lr": cfg.optim.lr}] if params else []
    return [g for g in groups if list(g["params"])]


# ------------------------------------------------------------------------------------------ device, AMP


def resolve_device(name: str, dist_info: DistInfo) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("train.device=cuda but no CUDA device is available (use train.device=cpu or auto)")
    if name == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", dist_info.local_rank)


def amp_dtype(mode: str, device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype: only on CUDA; ``auto`` = bf16 where supported, else fp16."""
    if device.type != "cuda" or mode == "off":
        return None
    if mode == "bf16" or (mode == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16


def autocast(device: torch.device, dtype: Optional[torch.dtype]):
    return torch.autocast(device_type=device.type, dtype=dtype) if dtype is not None else nullcontext()


def configure_determinism(deterministic: bool, device: torch.device) -> None:
    """cuDNN: deterministic kernels when asked (CPU training is deterministic for a fixed seed and thread count)."""
    if device.type == "cuda":
        torch.backends.cudnn.deterministic = deterministic
        torch.backends.cudnn.benchmark = not deterministic
