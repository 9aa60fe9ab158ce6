"""Pretrained weights from LOCAL files only: wsml never downloads anything.

``weights=PATH`` loads a state dict (.pth / .pt / .bin, or .safetensors) into a backbone; ``pretrained=True``
without a path looks for ``<name>.pth`` (or ``.pt`` / ``.safetensors``, or ``<name>-<hash>.pth`` as torchvision
names its files) in ``$WSML_WEIGHTS_DIR`` and then ``~/.cache/wsml/weights``. Keys that do not match the
backbone are reported by name; the original ImageNet classifier's keys are ignored (wsml puts its own head).
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from typing import Iterable, Optional

import torch

from wsml._types import PathLike
from wsml.models.registry import Backbone

WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")
# torchvision's ImageNet ResNet files: the name's hash is the start of the file's SHA-256. The paper used V1 (the
# original recipe, also under its legacy file name); V2 (the newer recipe) changes VOC results, as reported on
# the authors' repository.
IMAGENET1K_V1 = {"resnet50": ("0676ba61", "19c8e357"), "resnet101": ("63fe2227", "5d3b4d8f")}
IMAGENET1K_V2 = {"resnet50": ("11ad3fa6",), "resnet101": ("cd907fc2",)}
REQUIRE_WEIGHTS = ("", "imagenet1k_v1")


def weights_dirs() -> list[Path]:
    """Folders searched for ``pretrained=True``: ``$WSML_WEIGHTS_DIR`` (if set), then ``~/.cache/wsml/weights``."""
    dirs = []
    env = os.environ.get("WSML_WEIGHTS_DIR")
    if env:
        dirs.append(Path(env).expanduser())
    dirs.append(Path("~/.cache/wsml/weights").expanduser())
    return dirs


def weights_file_stem(name: str) -> str:
    """File name (without suffix) for a backbone name: ``timm:convnext_tiny`` -> ``timm-convnext_tiny``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name.strip()).strip("-")


def find_local_weights(name: str, extra_dirs: Iterable[PathLike] = ()) -> Optional[Path]:
    """First existing local weights file for backbone ``name``, or None."""
    stems = [weights_file_stem(name)]
    if ":" in name:  # a prefixed name may also be stored under its bare model name
        stems.append(weights_file_stem(name.split(":", 1)[1]))
    for folder in [*weights_dirs(), *map(Path, extra_dirs)]:
        for stem in stems:
            for suffix in WEIGHT_SUFFIXES:
                if (folder / f"{stem}{suffix}").is_file():
                    return folder / f"{stem}{suffix}"
            hashed = sorted(folder.glob(f"{stem}-*.pth")) if folder.is_dir() else []
            if hashed:
                return _pick_hashed(hashed, stem)
    return None


def _pick_hashed(files: list[Path], stem: str) -> Path:
    """One of torchvision's ``<name>-<hash>.pth`` files: the only one, else the only IMAGENET1K_V1 one; never a
    choice by sorted name (resnet50-11ad3fa6, V2, sorts before resnet50-19c8e357, V1)."""
    if len(files) == 1:
        return files[0]
    v1 = [f for f in files if f.stem.rsplit("-", 1)[-1][:8] in IMAGENET1K_V1.get(stem, ())]
    if len(v1) == 1:
        return v1[0]
    raise ValueError(f"several weights files for {stem!r} ({', '.join(f.name for f in files)}) and none is the one "
                     f"IMAGENET1K_V1 file: name the file with model.weights=PATH")


def sha256_of(path: PathLike) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify_weights(path: PathLike, backbone: str, require: str) -> str:
    """Check that ``path`` holds the weights ``require`` names ("imagenet1k_v1": torchvision's original ImageNet
    ResNet-50/101, by the SHA-256 prefix torchvision puts in its file names); returns the SHA-256."""
    name = backbone.split(":", 1)[-1].strip().lower()
    if require != "imagenet1k_v1":
        raise ValueError(f"model.require_weights must be one of {', '.join(repr(r) for r in REQUIRE_WEIGHTS)}, "
                         f"got {require!r}")
    if name not in IMAGENET1K_V1:
        raise ValueError(f"model.require_weights=imagenet1k_v1 applies to resnet50/resnet101, not {backbone!r}")
    digest = sha256_of(path)
    if digest[:8] in IMAGENET1K_V2[name]:
        raise ValueError(f"weights file {path} is torchvision's IMAGENET1K_V2 {name} (SHA-256 {digest[:8]}...): the "
                         f"paper used IMAGENET1K_V1, and V2 changes the reproduced results (VOC in particular); use "
                         f"{name}-{IMAGENET1K_V1[name][0]}.pth, or set model.require_weights='' to use V2 anyway")
    if digest[:8] not in IMAGENET1K_V1[name]:
        raise ValueError(f"weights file {path} is not torchvision's IMAGENET1K_V1 {name} (SHA-256 {digest[:8]}..., "
                         f"expected {' or '.join(IMAGENET1K_V1[name])}); paper configs need V1: use "
                         f"{name}-{IMAGENET1K_V1[name][0]}.pth, or set model.require_weights='' for other weights")
    return digest


def missing_weights_error(name: str, hint: str = "") -> FileNotFoundError:
    """The error for ``pretrained=True`` when no local file exists: says where to put one."""
    stem = weights_file_stem(name)
    where = " or ".join(str(d / f"{stem}.pth") for d in weights_dirs())
    return FileNotFoundError(
        f"pretrained=True for backbone {name!r} but no local weights file was found; wsml never downloads "
        f"weights. Put the state dict at {where} (set WSML_WEIGHTS_DIR to choose the folder; .pt/.safetensors "
        f"also work), or pass weights=PATH.{(' ' + hint) if hint else ''}"
    )


def read_state_dict(path: PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict from ``path``; unwraps ``{"state_dict": ...}`` / ``{"model": ...}`` and ``module.``."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as e:
            raise ValueError(f"{path}: reading .safetensors needs the 'safetensors' package") from e
        try:
            state = load_file(str(path), device="cpu")
        except Exception as e:  # safetensors raises its own error types
            raise ValueError(f"{path}: not a readable safetensors file ({e})") from e
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as e:
            raise ValueError(f"{path}: not a readable torch state dict ({str(e).splitlines()[0]})") from e
    for wrapper in ("state_dict", "model", "module"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not state:
        raise ValueError(f"{path}: expected a non-empty dict of tensors (a state dict), got {type(state).__name__}")
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"{path}: entries that are not tensors, e.g. {bad[:3]}; expected a plain state dict")
    if all(k.startswith("module.") for k in state):  # saved from DataParallel / DDP
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _adapt_input_channels(value: torch.Tensor, shape: torch.Size) -> Optional[torch.Tensor]:
    """RGB first-conv weights for a 1-channel model: sum over the colour axis (a grey image = equal RGB)."""
    if value.ndim == 4 and len(shape) == 4 and value.shape[1] == 3 and shape[1] == 1 and \
            value.shape[0] == shape[0] and value.shape[2:] == shape[2:]:
        return value.sum(dim=1, keepdim=True)
    return None


def _examples(keys: list[str], n: int = 5) -> str:
    return ", ".join(keys[:n]) + (f", ... ({len(keys)} in all)" if len(keys) > n else "")


def load_backbone_weights(backbone: Backbone, path: PathLike, name: str = "backbone") -> dict:
    """Load the state dict at ``path`` into ``backbone.weights_target``, strictly.

    Returns ``{"path", "loaded", "ignored"}`` (ignored = the original classifier's keys). Any missing backbone
    key, unexpected key or shape mismatch raises ValueError naming the file and the keys.
    """
    state = backbone.convert_state_dict(read_state_dict(path))
    target = backbone.weights_target
    expected = target.state_dict()
    ignored = sorted(k for k in state if k not in expected and k.startswith(backbone.classifier_prefixes or ("\0",)))
    unexpected = sorted(k for k in state if k not in expected and k not in ignored)
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    mismatched, use = [], {}
    for key, value in state.items():
        if key not in expected:
            continue
        want = expected[key].shape
        if value.shape != want:
            adapted = _adapt_input_channels(value, want)
            if adapted is None:
                mismatched.append(f"{key}: file {tuple(value.shape)} vs model {tuple(want)}")
                continue
            value = adapted
        use[key] = value.to(expected[key].dtype)
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys ({_examples(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys ({_examples(unexpected)})")
        if mismatched:
            parts.append(f"{len(mismatched)} shape mismatches ({_examples(mismatched, 3)})")
        raise ValueError(f"weights file {path} does not fit backbone {name!r}: " + "; ".join(parts))
    target.load_state_dict(use, strict=False)
    return {"path": str(path), "loaded": len(use), "ignored": ignored}
