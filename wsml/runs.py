"""Reading a run folder back: :class:`RunFolder` and the files a run writes (config, metrics, summary).

* :func:`write_config` writes ``config.yaml`` atomically with an end marker, and :func:`read_run_config`
  refuses a file that lost its end (a cut file would otherwise silently take the defaults).
* :class:`RunFolder` reads a run folder lazily (config, metrics, summary, checkpoints, model, data set,
  predictions): the one reader that eval, predict, thresholds, find-missing, out-of-fold scores, the analyses
  and the report use. Creating and resuming a run folder is :mod:`wsml.train.run_dir`.
"""

from __future__ import annotations

import copy
import csv
import json
import math
import zipfile
from functools import cached_property
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import yaml

from wsml._types import PathLike
from wsml.checkpoint import atomic_write, load_checkpoint
from wsml.config import Config, from_dict, read_yaml

END_MARKER = "# end of wsml config"  # the last line of every config.yaml wsml writes


def write_config(cfg: Config, path: PathLike) -> None:
    """``config.yaml``: the resolved config, written atomically and ending with :data:`END_MARKER`."""
    text = yaml.safe_dump(cfg.to_dict(), sort_keys=False) + END_MARKER + "\n"
    atomic_write(path, lambda f: f.write(text.encode()))


def read_run_config(run_dir: PathLike) -> Config:
    """The config of a run folder; an incomplete ``config.yaml`` (cut short, keys missing) is an error."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run folder (no config.yaml); give the folder `wsml train` made")
    data = read_yaml(path)
    problem = incomplete_reason(path, data)
    if problem:
        raise ValueError(f"{path} is incomplete ({problem}): it was cut short; a resumable run can restore it "
                         f"with `wsml train --resume {run_dir}`")
    return from_dict(data)


def incomplete_reason(path: Path, data: dict) -> Optional[str]:
    """Why ``config.yaml`` is not whole, or None.

    A file that ends with :data:`END_MARKER` is whole; keys it lacks were added to wsml after it was written and
    take their defaults. A file without the marker was written by wsml 0.1 (before the marker) or cut short: it
    must hold every section, and a cut at a line boundary loses the last one (``callbacks``) first.
    """
    if path.read_text(errors="replace").rstrip().endswith(END_MARKER):
        return None
    missing = [section for section in Config().to_dict() if section not in data]
    return f"missing {', '.join(missing)}" if missing else None

CHECKPOINTS = {"best": "best.pt", "last": "last.pt", "best_stage1": "best_stage1.pt"}


def read_metrics(path: PathLike) -> dict[str, list[Any]]:
    """``metrics.csv`` as columns ``{name: [value per epoch]}`` (numbers as float, empty/'nan' as NaN)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path.parent}: no metrics.csv - not a training run folder")
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames:
                raise ValueError(f"{path}: empty metrics file (no header)")
            cols: dict[str, list[Any]] = {k: [] for k in reader.fieldnames}
            for i, row in enumerate(reader, start=2):
                if None in row:
                    raise ValueError(f"{path}: line {i} has more fields than the header")
                for k in reader.fieldnames:
                    cols[k].append(_number(row.get(k)))
    except (UnicodeDecodeError, csv.Error) as e:
        raise ValueError(f"{path} is damaged: not a CSV text file ({type(e).__name__})") from None
    return cols


def _number(text: Optional[str]) -> Any:
    if text in (None, ""):
        return math.nan
    try:
        return float(text)
    except ValueError:
        return text


class RunFolder:
    """A finished (or interrupted) training run folder, read lazily: each file on first use, with a one-line
    error naming the file when it is missing or damaged (``FileNotFoundError`` / ``ValueError``: exit 2).

    ``config`` (the typed :class:`~wsml.config.Config`; ``config_dict`` is config.yaml as written, for analyses
    of partial or older folders), ``metrics`` (one dict per epoch; ``columns``), ``summary``, checkpoint paths
    (``best_pt``, ``last_pt``, ``best_stage1_pt``), ``checkpoint(which)``, ``model(device)`` (built, the
    checkpoint's weights loaded with ``weights_only=True``), ``dataset`` and ``predictions(split)``.
    """

    def __init__(self, path: PathLike):
        self.path = Path(path)
        self._checkpoints: dict = {}
        self._models: dict = {}

    @classmethod
    def of(cls, run: Union[RunFolder, PathLike]) -> RunFolder:
        """``run`` itself when it is a RunFolder, else the folder at that path."""
        return run if isinstance(run, RunFolder) else cls(run)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    def file(self, name: str) -> Path:
        return self.path / name

    # --- config, metrics, summary
    @cached_property
    def config(self) -> Config:
        return read_run_config(self.path)

    @cached_property
    def config_dict(self) -> dict:
        """config.yaml as written (nested dict; ``{}`` without one): analyses read partial or older folders too."""
        path = self.file("config.yaml")
        return read_yaml(path) if path.is_file() else {}

    @cached_property
    def columns(self) -> dict[str, list[Any]]:
        """``metrics.csv`` as columns (see :func:`read_metrics`)."""
        if not self.path.is_dir():
            raise FileNotFoundError(f"run folder {self.path} does not exist")
        return read_metrics(self.file("metrics.csv"))

    @property
    def metrics(self) -> list[dict[str, Any]]:
        """One dict per epoch (row of ``metrics.csv``)."""
        cols = self.columns
        return [dict(zip(cols, values)) for values in zip(*cols.values())]

    def column(self, name: str) -> Optional[list[float]]:
        """A metrics column as floats (text entries as NaN); None when the run has no such column."""
        values = self.columns.get(name)
        return None if values is None else [v if isinstance(v, float) else math.nan for v in values]

    @cached_property
    def summary(self) -> dict:
        """``summary.json`` (written when training finished)."""
        return read_json(self.file("summary.json"), "the run has not finished (train it, or --resume it)")

    @property
    def loss_name(self) -> str:
        return str(self.config_dict.get("loss", {}).get("name", "?"))

    @property
    def delta_rel(self) -> Optional[Any]:
        """Δrel of the run when its loss has one (LL-R/Ct/Cp); None otherwise, even if the config sets it."""
        from wsml.losses.registry import loss_hparams

        try:
            has = "delta_rel" in loss_hparams(self.loss_name)
        except ValueError:  # a loss this wsml does not know
            has = False
        if not has:
            return None
        chosen = self.file("summary.json")  # loss.delta_rel=auto: the value training chose is in the summary
        given = self.config_dict.get("loss", {}).get("delta_rel")
        return self.summary.get("delta_rel", given) if given == "auto" and chosen.is_file() else given

    @property
    def label(self) -> str:
        """A short name: the loss (with Δrel when it has one) and the folder name."""
        dr = self.delta_rel
        return f"{self.loss_name}{'' if dr is None else f' Δrel={dr}'} ({self.path.name})"

    def analysis_file(self, name: str) -> Path:
        return self.path / "analysis" / name

    # --- checkpoints and model
    best_pt = property(lambda self: self.file(CHECKPOINTS["best"]))
    last_pt = property(lambda self: self.file(CHECKPOINTS["last"]))
    best_stage1_pt = property(lambda self: self.file(CHECKPOINTS["best_stage1"]))

    def checkpoint(self, which: str = "best") -> dict:
        """The checkpoint ``best``, ``last`` or ``best_stage1`` (read once, ``weights_only=True``)."""
        if which not in self._checkpoints:
            self._checkpoints[which] = load_checkpoint(self.file(CHECKPOINTS[which]), map_location="cpu")
        return self._checkpoints[which]

    def model_info(self, which: str = "best") -> dict:
        """Classes and input format of the checkpoint's model (older checkpoints: from the data set)."""
        from wsml.train.builders import model_info

        return self.checkpoint(which).get("model_info") or model_info(self.config, self.dataset)

    @cached_property
    def _eval_config(self) -> Config:
        """The config to rebuild the model with: no pretrained weights (the checkpoint holds every weight)."""
        cfg = copy.deepcopy(self.config)
        cfg.model.pretrained, cfg.model.weights = False, None
        return cfg

    def model(self, device: Any = "cpu", which: str = "best") -> Any:
        """The model with the checkpoint's weights, in eval mode on ``device`` (``auto``, ``cpu``, ``cuda``)."""
        from wsml.checkpoint import load_module_state
        from wsml.distributed import DistInfo
        from wsml.train.builders import build_model, resolve_device

        dev = resolve_device(device, DistInfo()) if isinstance(device, str) else device
        if (which, str(dev)) not in self._models:
            model = build_model(self._eval_config, None, self.model_info(which))
            load_module_state(model, self.checkpoint(which)["model"], self.file(CHECKPOINTS[which]), "model")
            self._models[which, str(dev)] = model.to(dev).eval()
        return self._models[which, str(dev)]

    # --- data set and predictions
    @cached_property
    def data_path(self) -> Path:
        """The prepared data set of the run: ``data.path`` as given (relative: from the current folder), else
        relative to one of the run folder's parents (a run folder moved with its project)."""
        given = Path(self.config.data.path)
        tried = [given] if given.is_absolute() else [given] + [p / given for p in self.path.resolve().parents]
        for cand in tried:
            if (cand / "manifest.json").is_file():
                return cand
        raise FileNotFoundError(f"data.path {given} of {self.file('config.yaml')} is not a prepared data set (no "
                                f"manifest.json): run `wsml prepare <dataset> --out {given}`")

    @cached_property
    def dataset(self) -> Any:
        """The prepared data set the run trained on (never prepared here: reading a run writes no data set)."""
        from wsml.data import DatasetIndex

        return DatasetIndex.load(self.data_path)

    def split(self, name: str) -> Any:
        """One split of the run's data set; a split it lacks is an error listing those it has."""
        index = self.dataset
        if name not in index.splits:
            hint = ("; give --split val, or test rows to `wsml prepare` (split=test, or test_csv=)"
                    if name == "test" else "")
            raise ValueError(f"data set {index.name!r} has no split {name!r} (has: {', '.join(sorted(index.splits))})"
                             + hint)
        return index[name]

    def loader(self, split: str, model: Any, dist_info: Any = None) -> Any:
        """The evaluation loader of ``split`` (no augmentation; the model's normalisation); with ``dist_info``
        (torchrun) this process's shard of it."""
        from wsml.distributed import DistInfo
        from wsml.train.builders import build_loader

        self.split(split)
        return build_loader(self._eval_config, self.dataset, split, dist_info or DistInfo(), train=False,
                            mean_std=model.default_mean_std)

    def predictions(self, split: str = "test") -> tuple[np.ndarray, np.ndarray]:
        """(scores [N, C], rows [N]) of ``predictions_<split>.npz`` (written by training and ``wsml eval``)."""
        path = self.file(f"predictions_{split}.npz")
        if not path.is_file() and self.file(f"predictions_{split}.chunks").is_dir():
            raise FileNotFoundError(f"{path} does not exist: the scores of this large split are in "
                                    f"{self.file(f'predictions_{split}.chunks')}/ (read them a block at a time "
                                    "with wsml.metrics_blocked.ScoreChunks)")
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist: run `wsml eval {self.path} --split {split}` first")
        try:
            with np.load(path, allow_pickle=False) as data:
                return np.asarray(data["scores"]), np.asarray(data["rows"])
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
            raise ValueError(f"{path} is damaged or not a wsml predictions file ({type(e).__name__}: "
                             f"{' '.join(str(e).split())[:200]})") from None


def read_json(path: Path, missing: str = "") -> dict:
    """A JSON file of a run folder; missing or invalid is a one-line error naming it."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist{': ' + missing if missing else ''}")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: invalid JSON ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data
