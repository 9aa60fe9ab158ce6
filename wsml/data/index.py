"""The canonical dataset index: what ``wsml prepare`` writes once and training loads.

On disk a prepared data set is a folder::

    manifest.json               name, class names, image root, kind, protocol, statistics, splits
    <split>/samples.txt         one image path per line (relative to the image root), kind "images"
    <split>/images.npy          uint8 [N, H, W] (grayscale) or [N, H, W, 3] (RGB) pixels, kind "images"
    <split>/features.npy        float32 [N, D], kind "features"
    <split>/labels_full.npy     uint8 {0,1} [N, C], ground truth when known, or
    <split>/labels_full.npz     the same as a wsml.labels.SparseLabels of the positives (large data sets)
    <split>/labels_obs.npy      int8 {1,0,-1} [N, C] observed labels (dense), or
    <split>/labels_obs.npz      the same as wsml.labels.SparseLabels (large data sets)
    <split>/boxes.npy           float32 [M, 6] rows (sample, class, x0, y0, x1, y1) in pixels, optional

A split of kind "images" holds its pixels either as files (``samples``, decoded on the fly) or as one
uint8 array (``images``, e.g. the embedded Fashion-MNIST mosaics: small images that train fastest without
a decode step); ``images.npy`` is memory-mapped when loaded. Kind "features" uses ``features``.

Splits are ``train``, ``val`` and ``test``. Under the reference protocol the observed labels of
``train`` come from ``observe_labels`` and ``val``/``test`` keep clean full labels.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import numpy as np

from wsml._types import PathLike, json_default
from wsml.labels import POS, UNOBS, SparseLabels, as_full, validate_full, validate_observed

FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")
_SPLIT_FILES = ("samples.txt", "images.npy", "features.npy", "labels_full.npy", "labels_full.npz", "labels_obs.npy",
                "labels_obs.npz", "boxes.npy")
Observed = Union[np.ndarray, SparseLabels]


@dataclass
class Split:
    """One split: samples (image paths), images (uint8 pixels) or feature rows, with labels and boxes."""

    samples: Optional[list[str]] = None
    features: Optional[np.ndarray] = None
    full: Optional[Union[np.ndarray, SparseLabels]] = None  # large label spaces: SparseLabels of the positives
    # (read rows of either form with wsml.labels.as_full)
    observed: Optional[Observed] = None
    boxes: Optional[np.ndarray] = None
    images: Optional[np.ndarray] = None  # uint8 [N, H, W] or [N, H, W, 3]

    def __len__(self) -> int:
        for a in (self.samples, self.features, self.images, self.full, self.observed):
            if a is not None:
                return len(a)
        return 0

    def take(self, rows: np.ndarray) -> Split:
        """The sub-split of the given rows (in that order); boxes are renumbered."""
        rows = np.asarray(rows, dtype=np.int64)

        def pick(labels):
            return labels.take(rows) if isinstance(labels, SparseLabels) else None if labels is None else labels[rows]

        boxes = None
        if self.boxes is not None:
            new_id = np.full(len(self), -1, dtype=np.int64)
            new_id[rows] = np.arange(len(rows))
            keep = self.boxes[new_id[self.boxes[:, 0].astype(np.int64)] >= 0]
            boxes = keep.copy()
            boxes[:, 0] = new_id[keep[:, 0].astype(np.int64)]
        return Split(
            samples=None if self.samples is None else [self.samples[i] for i in rows],
            features=None if self.features is None else self.features[rows],
            full=pick(self.full),
            observed=pick(self.observed),
            boxes=boxes,
            images=None if self.images is None else np.asarray(self.images[rows]),
        )

    def eval_targets(self) -> tuple[np.ndarray, Optional[np.ndarray]]:
        """Labels {0,1} and a mask (True = counts) for evaluation.

        Full labels when known; otherwise the observed labels with unobserved entries masked out, as
        OpenImages is evaluated.
        """
        if self.full is not None:
            return as_full(self.full), None
        if self.observed is None:
            raise ValueError("split has neither full nor observed labels: cannot evaluate")
        obs = self.observed.to_dense() if isinstance(self.observed, SparseLabels) else self.observed
        return (obs == POS).astype(np.uint8), obs != UNOBS

    def train_targets(self) -> Observed:
        """Observed labels for training; a split with only full labels is fully observed."""
        if self.observed is not None:
            return self.observed
        if self.full is None:
            raise ValueError("split has no labels")
        return np.where(as_full(self.full) == 1, 1, -1).astype(np.int8)


@dataclass
class DatasetIndex:
    """A prepared data set: class names, an image root (for image data) and its splits."""

    name: str
    class_names: list[str]
    splits: dict[str, Split]
    root: str = ""
    kind: str = "images"  # "images" or "features"
    meta: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __getitem__(self, split: str) -> Split:
        if split not in self.splits:
            raise MissingSplitError(f"data set {self.name!r} has no split {split!r} (has: {sorted(self.splits)})")
        return self.splits[split]

    def validate(self) -> None:
        """Check shapes and label values of every split; raise ValueError naming the split and array."""
        c = self.num_classes
        for name, s in self.splits.items():
            n = len(s)
            for what, arr in (("samples", s.samples), ("features", s.features), ("images", s.images),
                              ("full", s.full), ("observed", s.observed)):
                if arr is not None and len(arr) != n:
                    raise ValueError(f"{self.name}/{name}: {what} has {len(arr)} rows, expected {n}")
            if s.full is not None:
                if s.full.shape[1] != c:
                    raise ValueError(f"{self.name}/{name}: full labels have {s.full.shape[1]} classes, expected {c}")
                if isinstance(s.full, SparseLabels) and not (s.full.values == POS).all():
                    raise ValueError(f"{self.name}/{name}: sparse full labels may hold positives only")
                if not isinstance(s.full, SparseLabels):
                    validate_full(s.full, f"{self.name}/{name} full labels")
            if s.observed is not None:
                if s.observed.shape[1] != c:
                    raise ValueError(f"{self.name}/{name}: observed labels have {s.observed.shape[1]} classes, "
                                     f"expected {c}")
                if not isinstance(s.observed, SparseLabels):
                    validate_observed(s.observed, f"{self.name}/{name} observed labels")
            if s.images is not None and (s.images.dtype != np.uint8 or s.images.ndim not in (3, 4)
                                         or (s.images.ndim == 4 and s.images.shape[3] != 3)):
                raise ValueError(f"{self.name}/{name}: images must be uint8 [N, H, W] or [N, H, W, 3], got "
                                 f"{s.images.dtype} {s.images.shape}")
            if s.boxes is not None and (s.boxes.ndim != 2 or s.boxes.shape[1] != 6):
                raise ValueError(f"{self.name}/{name}: boxes must be [M, 6], got {s.boxes.shape}")

    def save(self, folder: PathLike) -> Path:
        """Write the index as the documented folder layout and return its path."""
        self.validate()
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        splits_meta = {}
        for name, s in self.splits.items():
            d = folder / name
            d.mkdir(exist_ok=True)
            for stale in _SPLIT_FILES:  # unlink, never overwrite: an old file may still be memory-mapped
                (d / stale).unlink(missing_ok=True)
            if s.samples is not None:
                (d / "samples.txt").write_text("".join(p + "\n" for p in s.samples))
            if s.features is not None:
                np.save(d / "features.npy", np.asarray(s.features, dtype=np.float32))
            if s.images is not None:
                np.save(d / "images.npy", np.asarray(s.images, dtype=np.uint8))
            if isinstance(s.full, SparseLabels):
                s.full.save(d / "labels_full.npz")
            elif s.full is not None:
                np.save(d / "labels_full.npy", s.full.astype(np.uint8))
            if isinstance(s.observed, SparseLabels):
                s.observed.save(d / "labels_obs.npz")
            elif s.observed is not None:
                np.save(d / "labels_obs.npy", s.observed.astype(np.int8))
            if s.boxes is not None:
                np.save(d / "boxes.npy", s.boxes.astype(np.float32))
            splits_meta[name] = {"num_samples": len(s), "files": sorted(f for f in _SPLIT_FILES if (d / f).exists())}
        manifest = {
            "format_version": FORMAT_VERSION, "name": self.name, "kind": self.kind, "root": self.root,
            "num_classes": self.num_classes, "class_names": self.class_names, "splits": splits_meta,
            "meta": self.meta,
        }
        (folder / "manifest.json").write_text(json.dumps(manifest, indent=2, default=json_default))
        return folder

    @classmethod
    def load(cls, folder: PathLike) -> DatasetIndex:
        """Load a folder written by :meth:`save` (``wsml prepare``)."""
        folder = Path(folder)
        mf = folder / "manifest.json"
        if not mf.is_file():
            raise FileNotFoundError(f"{folder}: not a prepared data set (no manifest.json); run `wsml prepare` first")
        try:
            manifest = json.loads(mf.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{mf}: invalid JSON ({e})") from None
        if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
            version = manifest.get("format_version") if isinstance(manifest, dict) else None
            raise ValueError(f"{mf}: format_version {version} is not {FORMAT_VERSION}")
        for key, kind in (("name", str), ("class_names", list), ("splits", dict)):
            if not isinstance(manifest.get(key), kind):
                raise ValueError(f"{mf}: key {key!r} is missing or not a {kind.__name__}; re-run `wsml prepare`")
        if "train" not in manifest["splits"]:
            raise ValueError(f"{mf}: no 'train' split in 'splits' (has: {sorted(manifest['splits'])})")
        splits = {name: _load_split(folder / name, meta) for name, meta in manifest["splits"].items()}
        root = manifest.get("root", "")
        if root and not Path(root).is_absolute():
            root = str((folder / root).resolve())
        index = cls(manifest["name"], manifest["class_names"], splits, root, manifest.get("kind", "images"),
                    manifest.get("meta", {}))
        index.validate()
        return index


class MissingSplitError(KeyError, ValueError):
    """A split the data set does not have (a KeyError for mapping-style callers, a ValueError for the CLI)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def load_array(path: Path, mmap: bool = False) -> np.ndarray:
    """``np.load`` of a prepared ``.npy`` without unpickling; an unreadable file is a ValueError naming it."""
    try:
        return np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
    except (ValueError, OSError, EOFError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "pickle" in reason:
            reason = "it holds Python objects, which wsml never unpickles"
        raise ValueError(f"{path}: not a readable numpy array file ({reason}); re-run `wsml prepare`") from None


def _load_split(d: Path, meta: dict) -> Split:
    """One split folder; every file the manifest lists must be there (a lost ``labels_obs.npy`` must not silently
    turn training into full supervision). Manifests of older versions list no files."""
    listed = meta.get("files") if isinstance(meta, dict) else None
    for fname in listed or []:
        if not (d / fname).is_file():
            raise FileNotFoundError(f"{d / fname}: missing (the data set's manifest.json lists it); re-run "
                                    "`wsml prepare`")

    def opt(fname, loader):
        p = d / fname
        return loader(p) if p.exists() else None

    def sparse(p):
        try:
            return SparseLabels.load(p)
        except (ValueError, OSError, EOFError, KeyError) as e:
            raise ValueError(f"{p}: not a readable SparseLabels file ({str(e).splitlines()[0][:200]})") from None

    if listed is None and not d.is_dir():
        raise FileNotFoundError(f"{d}: split folder missing (the data set's manifest.json lists it)")
    obs = opt("labels_obs.npz", sparse)
    if obs is None:
        obs = opt("labels_obs.npy", load_array)
    full = opt("labels_full.npz", sparse)
    if full is None:
        full = opt("labels_full.npy", load_array)
    return Split(
        samples=opt("samples.txt", lambda p: p.read_text().splitlines()),
        features=opt("features.npy", load_array),
        full=full,
        observed=obs,
        boxes=opt("boxes.npy", load_array),
        images=opt("images.npy", lambda p: load_array(p, mmap=True)),
    )
