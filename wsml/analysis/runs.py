"""Reading a training run folder: config.yaml, metrics.csv and the analysis files written beside them."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from wsml.config import read_yaml


def _to_value(text: str) -> Any:
    try:
        return float(text)
    except ValueError:
        return text


def read_metrics(path: Union[str, Path]) -> dict[str, list[Any]]:
    """metrics.csv as columns {name: [value per row]} (numbers as float, empty/'nan' as NaN)."""
    path = Path(path)
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames:
            raise ValueError(f"{path}: empty metrics file (no header)")
        cols: dict[str, list[Any]] = {k: [] for k in reader.fieldnames}
        for i, row in enumerate(reader, start=2):
            if None in row:
                raise ValueError(f"{path}: line {i} has more fields than the header")
            for k in reader.fieldnames:
                v = row.get(k)
                cols[k].append(math.nan if v in (None, "") else _to_value(v))
    return cols


@dataclass
class RunInfo:
    """One run folder's config (nested dict), per-epoch metrics (columns) and final results (if any)."""

    path: Path
    config: dict
    metrics: dict[str, list[Any]]
    results: dict = field(default_factory=dict)

    @property
    def loss_name(self) -> str:
        return str(self.config.get("loss", {}).get("name", "?"))

    @property
    def delta_rel(self) -> Optional[Any]:
        """Δrel of the run when its loss has one (LL-R/Ct/Cp); None otherwise, even if the config sets it."""
        from wsml.losses.registry import loss_hparams

        loss = self.config.get("loss", {})
        try:
            has = "delta_rel" in loss_hparams(str(loss.get("name", "")))
        except ValueError:  # a loss this wsml does not know
            has = False
        return loss.get("delta_rel") if has else None

    @property
    def label(self) -> str:
        """A short name: the loss (with Δrel when it has one) and the folder name."""
        name = str(self.config.get("loss", {}).get("name", "?"))
        if self.delta_rel is not None:
            name += f" Δrel={self.delta_rel}"
        return f"{name} ({self.path.name})"

    def column(self, name: str) -> Optional[list[float]]:
        values = self.metrics.get(name)
        if values is None:
            return None
        return [v if isinstance(v, float) else math.nan for v in values]

    def analysis_file(self, name: str) -> Path:
        return self.path / "analysis" / name


def load_run(run_dir: Union[str, Path]) -> RunInfo:
    """Read a run folder written by ``wsml train`` (config.yaml + metrics.csv; results.json when present)."""
    p = Path(run_dir)
    if not p.is_dir():
        raise FileNotFoundError(f"run folder {p} does not exist")
    cfg_path, met_path = p / "config.yaml", p / "metrics.csv"
    if not met_path.is_file():
        raise FileNotFoundError(f"{p}: no metrics.csv — not a training run folder")
    config = read_yaml(cfg_path) if cfg_path.is_file() else {}
    results: dict = {}
    for name in ("results.json", "summary.json", "final.json"):
        if (p / name).is_file():
            try:
                results = json.loads((p / name).read_text())
            except json.JSONDecodeError as e:
                raise ValueError(f"{p / name}: invalid JSON ({e})") from None
            break
    return RunInfo(p, config, read_metrics(met_path), results)


def find_column(metrics: dict, *candidates: str) -> Optional[str]:
    """The first of ``candidates`` present in the metrics columns."""
    for c in candidates:
        if c in metrics:
            return c
    return None
