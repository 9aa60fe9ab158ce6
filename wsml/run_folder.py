"""The run folder's life cycle: created exclusively, its config written last and whole, resumes checked.

* :func:`new_run_dir` claims ``<run.out>/<run.name>`` with an exclusive ``mkdir`` (two runs started at the
  same moment with the same name get ``name`` and ``name-2``, never one shared folder).
* :func:`write_config` writes ``config.yaml`` atomically with an end marker, and :func:`read_run_config`
  refuses a file that lost its end (a cut file would otherwise silently take the defaults).
* :func:`resume_config` / :func:`check_resume`: ``--resume`` continues *the same run*. The checkpoint's
  embedded config is the reference; only the keys in :data:`RESUME_MAY_CHANGE` (more epochs, device,
  loader workers, output verbosity, callbacks) may differ, and never fewer epochs than are done.
* :class:`RunFolder` reads a run folder back (config, metrics, summary, checkpoints, model, data set,
  predictions): the one reader that eval, predict, thresholds, find-missing, out-of-fold scores, the analyses
  and the report use.
"""

from __future__ import annotations

import copy
import csv
import json
import math
import sys
import zipfile
from functools import cached_property
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import yaml

from wsml._types import PathLike
from wsml.checkpoint import atomic_write, load_checkpoint, remove_stale_temporaries
from wsml.config import Config, _deep_merge, from_dict, parse_overrides, read_yaml

END_MARKER = "# end of wsml config"  # the last line of every config.yaml wsml writes
# keys a resume may change: they do not change what is trained (train.epochs may only grow)
RESUME_MAY_CHANGE = ("train.epochs", "train.device", "data.num_workers", "data.root", "run.quiet", "callbacks")
LAST_KEYS = ("model", "loss", "optimizer", "scheduler", "scaler", "rng", "state", "epoch", "config")


def new_run_dir(cfg: Config) -> Path:
    """``<run.out>/<run.name>`` created now; when it exists, the first free ``-2``, ``-3`` ... (exclusive mkdir).

    ``run.overwrite=true`` reuses the folder instead and deletes its previous results.
    """
    name = cfg.run.name or f"{Path(cfg.data.path).name}-{cfg.loss.name.lower()}-{cfg.train.scheme}"
    check_run_name(name)
    base = Path(cfg.run.out) / name
    base.parent.mkdir(parents=True, exist_ok=True)
    if cfg.run.overwrite:
        base.mkdir(exist_ok=True)
        for stale in ("summary.json", "predictions_test.npz", "best.pt", "best_stage1.pt", "last.pt", "metrics.csv"):
            (base / stale).unlink(missing_ok=True)
        remove_stale_temporaries(base)
        return base
    n = 1
    while True:
        path = base if n == 1 else base.with_name(f"{name}-{n}")
        try:
            path.mkdir()  # atomic: exactly one process creates it
            return path
        except FileExistsError:
            n += 1


def check_run_name(name: str) -> None:
    """A run name is one folder name: not empty, no path separator, no ``..``."""
    if not name or "/" in name or "\\" in name or ".." in name or name == ".":
        raise ValueError(f"run.name {name!r} must be a single folder name (no '/', '\\\\' or '..', not empty)")


def write_config(cfg: Config, path: PathLike) -> None:
    """``config.yaml``: the resolved config, written atomically and ending with :data:`END_MARKER`."""
    text = yaml.safe_dump(cfg.to_dict(), sort_keys=False) + END_MARKER + "\n"
    atomic_write(path, lambda f: f.write(text.encode()))


def _key_paths(d: dict, prefix: str = "") -> dict:
    """``{"section.key": value}`` for the config's sections (option dicts compare as whole values)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and not prefix:
            out.update(_key_paths(v, f"{k}."))
        else:
            out[prefix + str(k)] = v
    return out


def read_run_config(run_dir: PathLike) -> Config:
    """The config of a run folder; an incomplete ``config.yaml`` (cut short, keys missing) is an error."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run folder (no config.yaml); give the folder `wsml train` made")
    data = read_yaml(path)
    problem = _incomplete(path, data)
    if problem:
        raise ValueError(f"{path} is incomplete ({problem}): it was cut short; a resumable run can restore it "
                         f"with `wsml train --resume {run_dir}`")
    return from_dict(data)


def _incomplete(path: Path, data: dict) -> Optional[str]:
    """Why ``config.yaml`` is not whole, or None.

    A file that ends with :data:`END_MARKER` is whole; keys it lacks were added to wsml after it was written and
    take their defaults. A file without the marker was written by wsml 0.1 (before the marker) or cut short: it
    must hold every section, and a cut at a line boundary loses the last one (``callbacks``) first.
    """
    if path.read_text(errors="replace").rstrip().endswith(END_MARKER):
        return None
    missing = [section for section in Config().to_dict() if section not in data]
    return f"missing {', '.join(missing)}" if missing else None


def _changes(old: dict, new: dict) -> dict:
    """``{key: (old, new)}`` of the differing keys; a key the old config lacks (a setting added to wsml since)
    counts only when the new value is not its default."""
    a, b = _key_paths(old), _key_paths(new)
    defaults = _key_paths(Config().to_dict())
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b))
            if (a[k] if k in a else defaults.get(k)) != b.get(k)}


def _describe(changes: dict) -> str:
    return ", ".join(f"{k} ({a!r} -> {b!r})" for k, (a, b) in changes.items())


def resume_config(run_dir: PathLike, overrides: list[str]) -> Config:
    """The config to continue ``run_dir`` with: last.pt's config, allowed edits of config.yaml, then ``overrides``.

    ``module:Class`` callbacks are code: they are imported only when given on the command line
    (``callbacks=[...]``), never from the run folder.
    """
    run_dir = Path(run_dir)
    ckpt = load_checkpoint(run_dir / "last.pt", required=LAST_KEYS)
    base = dict(ckpt["config"])
    path = run_dir / "config.yaml"
    try:
        on_disk = read_yaml(path)
        problem = _incomplete(path, on_disk)
    except (ValueError, FileNotFoundError) as e:
        on_disk, problem = None, str(e)
    if problem:
        print(f"note: {path} is not usable ({problem}); continuing from the config stored in last.pt",
              file=sys.stderr)
    else:
        edited = _changes(base, _deep_merge(base, on_disk))
        refused = {k: v for k, v in edited.items() if k not in RESUME_MAY_CHANGE}
        if refused:
            raise ValueError(f"{path} differs from the config stored in {run_dir / 'last.pt'} in keys a resume may "
                             f"not change: {_describe(refused)}")
        base = _deep_merge(base, on_disk)
    given = parse_overrides(list(overrides))
    code = [c for c in base.get("callbacks") or [] if ":" in str(c)]
    if code and "callbacks" not in given:
        raise ValueError(f"{run_dir}: the run's config names callback code {code}; a resume imports callbacks only "
                         f"from the command line: add callbacks=[{','.join(map(str, code))}] (or callbacks=[])")
    return from_dict(_deep_merge(base, given))


def check_resume(cfg: Config, ckpt: dict, run_dir: PathLike, total_epochs: int) -> None:
    """Refuse to continue ``run_dir`` with a config that changes the run, or with fewer epochs than are done."""
    changes = _changes(dict(ckpt["config"]), cfg.to_dict())
    refused = {k: v for k, v in changes.items() if k not in RESUME_MAY_CHANGE}
    if refused:
        raise ValueError(f"--resume {run_dir}: {_describe(refused)} would change the run; a resume may change only "
                         f"{', '.join(RESUME_MAY_CHANGE)} (start a new run for the rest)")
    done = int(ckpt["epoch"])
    if total_epochs < done:
        raise ValueError(f"--resume {run_dir}: the run has already completed {done} epochs; train.epochs "
                         f"gives {total_epochs} in all (fewer epochs than are done)")
    if "train.epochs" in changes:  # more epochs only extend the run when nothing is planned over train.epochs
        from wsml.losses.registry import loss_hparams

        planned = (["optim.scheduler=cosine (its period is the planned epochs)"] if cfg.optim.scheduler == "cosine"
                   else []) + ([f"loss {cfg.loss.name!r} (it spreads its schedule over train.epochs)"]
                               if "num_epochs" in loss_hparams(cfg.loss.name) else [])
        if planned:
            raise ValueError(f"--resume {run_dir}: train.epochs ({changes['train.epochs'][0]} -> "
                             f"{changes['train.epochs'][1]}) would change the run planned by {' and '.join(planned)}")


def start_files(cfg: Config, run_dir: Path) -> bool:
    """Before training writes anything: delete leftover temporaries of a killed write, then write config.yaml
    (returns True: written)."""
    remove_stale_temporaries(run_dir)
    features = run_dir / "features"
    if not cfg.train.feature_cache:  # the run's own feature cache (a shared one may be in use by another run)
        remove_stale_temporaries(features)
    write_config(cfg, run_dir / "config.yaml")
    return True


def saved_epoch(run_dir: Path) -> int:
    """The last completed epoch in ``run_dir/last.pt`` (0 when there is none or it cannot be read)."""
    try:
        return int(load_checkpoint(run_dir / "last.pt", required=("epoch",))["epoch"])
    except (FileNotFoundError, ValueError):
        return 0


# ------------------------------------------------------------------------------------------ reading a run folder

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
        return self.config_dict.get("loss", {}).get("delta_rel") if has else None

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
        from wsml.builders import model_info

        return self.checkpoint(which).get("model_info") or model_info(self.config, self.dataset)

    @cached_property
    def _eval_config(self) -> Config:
        """The config to rebuild the model with: no pretrained weights (the checkpoint holds every weight)."""
        cfg = copy.deepcopy(self.config)
        cfg.model.pretrained, cfg.model.weights = False, None
        return cfg

    def model(self, device: Any = "cpu", which: str = "best") -> Any:
        """The model with the checkpoint's weights, in eval mode on ``device`` (``auto``, ``cpu``, ``cuda``)."""
        from wsml.builders import build_model, resolve_device
        from wsml.checkpoint import load_module_state
        from wsml.distributed import DistInfo

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
            raise ValueError(f"data set {index.name!r} has no split {name!r} (has: {', '.join(sorted(index.splits))})")
        return index[name]

    def loader(self, split: str, model: Any, dist_info: Any = None) -> Any:
        """The evaluation loader of ``split`` (no augmentation; the model's normalisation); with ``dist_info``
        (torchrun) this process's shard of it."""
        from wsml.builders import build_loader
        from wsml.distributed import DistInfo

        self.split(split)
        return build_loader(self._eval_config, self.dataset, split, dist_info or DistInfo(), train=False,
                            mean_std=model.default_mean_std)

    def predictions(self, split: str = "test") -> tuple[np.ndarray, np.ndarray]:
        """(scores [N, C], rows [N]) of ``predictions_<split>.npz`` (written by training and ``wsml eval``)."""
        path = self.file(f"predictions_{split}.npz")
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
