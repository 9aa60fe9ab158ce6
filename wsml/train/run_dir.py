"""The run folder's life cycle while training: created exclusively, its config written first, resumes checked.

* :func:`new_run_dir` claims ``<run.out>/<run.name>`` with an exclusive ``mkdir`` (two runs started at the
  same moment with the same name get ``name`` and ``name-2``, never one shared folder).
* :func:`resume_config` / :func:`check_resume`: ``--resume`` continues *the same run*. The checkpoint's
  embedded config is the reference; only the keys in :data:`RESUME_MAY_CHANGE` (more epochs, device,
  loader workers, output verbosity, callbacks) may differ, and never fewer epochs than are done.
"""

from __future__ import annotations

import sys
from pathlib import Path

from wsml._types import PathLike
from wsml.checkpoint import load_checkpoint, remove_stale_temporaries
from wsml.config import Config, _deep_merge, from_dict, parse_overrides, read_yaml
from wsml.runs import incomplete_reason, write_config

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
        _remove_results(base)
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


# what a run and the commands over it derive from its model (review decisions are the user's work: kept)
RESULTS = ("summary.json", "best.pt", "best_stage1.pt", "last.pt", "metrics.csv", "thresholds.json",
           "find_missing.json", "eval_*.json", "predictions_*.npz", "predictions_*.chunks")


def _remove_results(run_dir: Path) -> None:
    """``run.overwrite=true``: delete the previous run's results, so that none is mistaken for the new run's."""
    import shutil

    for pattern in RESULTS:
        for path in run_dir.glob(pattern):
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)


def check_run_name(name: str) -> None:
    """A run name is one folder name: not empty, no path separator, no ``..``."""
    if not name or "/" in name or "\\" in name or ".." in name or name == ".":
        raise ValueError(f"run.name {name!r} must be a single folder name (no '/', '\\\\' or '..', not empty)")


def _key_paths(d: dict, prefix: str = "") -> dict:
    """``{"section.key": value}`` for the config's sections (option dicts compare as whole values)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and not prefix:
            out.update(_key_paths(v, f"{k}."))
        else:
            out[prefix + str(k)] = v
    return out


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
        problem = incomplete_reason(path, on_disk)
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
