"""Training sweeps: test mAP vs one config value for several methods (paper Fig 5: Δrel; Fig 6: train_frac).

A sweep trains ``methods × values`` runs with :func:`wsml.train.engine.train`, each from the same base config
(YAML file + overrides) plus the method's overrides and ``param=value``. Runs go to
``<out>/runs/<method>-<value>``; a run whose ``summary.json`` exists is reused, so an interrupted sweep
continues where it stopped. ``<out>/sweep.json`` holds the numbers (test mAP of the best-val checkpoint)
and ``<out>/sweep.png`` the plot; ``wsml report <out>`` shows both.

When ``param`` is a data option (``data.options.train_frac``) or a method changes data options, each
combination needs its own prepared data set: the data path becomes ``<data.path>-<options slug>`` and is
prepared on first use (``data.dataset`` must name the adapter).
"""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from wsml._types import PathLike
from wsml.analysis.plots import plot_sweep
from wsml.checkpoint import write_json
from wsml.runs import RunFolder

SWEEP_FILE = "sweep.json"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.=_-]+", "_", text).strip("_")


def parse_methods(specs: Sequence[str]) -> dict[str, list[str]]:
    """``["LL-Ct:loss.name=ll-ct,loss.delta_rel=2", "AN:loss.name=an"]`` → {label: [override, ...]}."""
    from wsml.config import parse_assignment

    out: dict[str, list[str]] = {}
    for spec in specs:
        label, sep, rest = spec.partition(":")
        if not sep or not label.strip():
            raise ValueError(f"method {spec!r} is not of the form LABEL:key=value[,key=value...]")
        items = [s.strip() for s in rest.split(",") if s.strip()]
        for item in items:  # checked here, parsed with the run's other overrides
            parse_assignment(item, f"method {label!r}: override")
        out[label.strip()] = items
    return out


def _run_config(config: Optional[str], overrides: list[str]):
    from wsml.config import load_config

    cfg = load_config(config, overrides)
    if cfg.data.options and any(o.startswith("data.options.") for o in overrides):
        if not cfg.data.dataset:
            raise ValueError("sweeping data options needs data.dataset=<adapter> so each variant can be prepared")
        opts = ",".join(f"{k}={cfg.data.options[k]}" for k in sorted(cfg.data.options))
        cfg.data.path = f"{cfg.data.path}-{_slug(opts)}"
    return cfg


def run_sweep(param: str, values: Sequence[Any], methods: dict[str, list[str]], out: PathLike,
              config: Optional[str] = None, overrides: Sequence[str] = (), xlabel: str = "",
              train_fn: Optional[Callable] = None, log: Callable = print, command: Optional[str] = None) -> dict:
    """Train every (method, value) and write ``sweep.json`` + ``sweep.png`` under ``out``; return the sweep."""
    if not values:
        raise ValueError("sweep: no values given")
    if not methods:
        raise ValueError("sweep: no methods given (LABEL:key=value,...)")
    if train_fn is None:
        from wsml.train.engine import train as train_fn
    out = Path(out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    series: dict[str, list[float]] = {m: [] for m in methods}
    runs: dict[str, list[dict]] = {m: [] for m in methods}
    for label, m_over in methods.items():
        for v in values:
            name = _slug(f"{label}-{param.split('.')[-1]}{v}")
            run_dir = out / "runs" / name
            if (run_dir / "summary.json").is_file():
                summary = RunFolder(run_dir).summary
                log(f"sweep: reusing {run_dir}")
            else:
                ov = list(overrides) + list(m_over) + [f"{param}={v}", f"run.out={out / 'runs'}", f"run.name={name}",
                                                        "run.overwrite=true"]
                log(f"sweep: training {label} with {param}={v}")
                summary = train_fn(_run_config(config, ov))
            series[label].append(float(summary.get("test_map", float("nan"))))
            runs[label].append({"value": v, "run_dir": str(run_dir), "test_map": summary.get("test_map"),
                                "val_map": summary.get("val_map"), "best_epoch": summary.get("best_epoch")})
    sweep = {"param": param, "values": list(values), "series": series, "runs": runs,
             "xlabel": xlabel or param, "ylabel": "test mAP", "config": config, "overrides": list(overrides),
             "methods": methods,
             "command": command or " ".join(shlex.quote(a) for a in [Path(sys.argv[0]).name] + sys.argv[1:])}
    write_json(out / SWEEP_FILE, sweep)
    plot_sweep(values, series, out / "sweep.png", xlabel=sweep["xlabel"], ylabel="test mAP")
    return sweep


def sweep_table(sweep: dict) -> str:
    """The sweep as a Markdown table (values down, methods across)."""
    head = "| " + " | ".join([sweep["param"]] + list(sweep["series"])) + " |"
    lines = [head, "|" + "---|" * (1 + len(sweep["series"]))]
    for j, v in enumerate(sweep["values"]):
        lines.append("| " + " | ".join([str(v)] + [f"{s[j]:.2f}" for s in sweep["series"].values()]) + " |")
    return "\n".join(lines)
