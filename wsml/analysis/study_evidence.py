"""The study's per-run evidence: everything a verdict or figure reads from one finished run, kept as one small
JSON file per run in the committed results.

Run folders live outside the repository and stay on the machine that trained them; the study runs piecewise over
many sessions and machines. So ``summarize`` stores each run's evidence (its record, Naive AN's group-loss curve
and Fig 1 / Table 1 summaries, an LL run's Fig 4 series) under ``<results>/evidence/<regime>/<group>/<run>.json``,
and ``gather`` reads the run folders that exist plus the stored evidence of those that do not: a verdict rests
on every seed ever run, and every mean can be re-derived from the committed files.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

import numpy as np

from wsml._types import PathLike

LL_METHODS = ("ll-r", "ll-ct", "ll-cp")
RECORD_FIELDS = ("regime", "group", "run", "method", "seed", "delta_rel", "train_frac", "epochs", "train_images",
                 "observed_labels", "steps", "best_epoch", "val_map", "test_map", "wall_time_s", "pointing_game")


def _obs_count(run_dir: Path, data_path: str, cache: dict) -> tuple[Optional[int], Optional[int]]:
    """(training images, observed training labels) of the data set a run trained on (cached per data path)."""
    from wsml.labels import UNOBS
    from wsml.runs import RunFolder

    if data_path not in cache:
        try:
            index = RunFolder(run_dir).dataset
        except (FileNotFoundError, ValueError):
            return None, None
        obs = index["train"].observed
        dense = obs.to_dense() if hasattr(obs, "to_dense") else np.asarray(obs)
        cache[data_path] = (len(index["train"]), int((dense != UNOBS).sum()))
    return cache[data_path]


def run_record(run_dir: PathLike, regime: str, group: str, cache: Optional[dict] = None) -> dict:
    """One finished run as a flat record: method, seed, Δrel, train_frac, epochs, optimisation steps,
    observed labels, best epoch, val/test mAP, Pointing Game (when analysed) and wall time."""
    from wsml.runs import RunFolder

    run = RunFolder(run_dir)
    d, s, cfg = run.path, run.summary, run.config_dict
    tr, loss = cfg.get("train", {}), cfg.get("loss", {})
    n_img, n_obs = _obs_count(d, str(cfg.get("data", {}).get("path", "")), {} if cache is None else cache)
    bs, epochs = int(tr.get("batch_size", 32)), int(tr.get("epochs", 0))
    pg = d / "analysis" / "pointing_game.json"
    return {"regime": regime, "group": group, "run": d.name, "method": str(loss.get("name", "?")),
            "seed": int(tr.get("seed", 0)), "delta_rel": loss.get("delta_rel"),
            "train_frac": cfg.get("data", {}).get("options", {}).get("train_frac", 1.0), "epochs": epochs,
            "train_images": n_img, "observed_labels": n_obs,
            "steps": epochs * math.ceil(n_img / bs) if n_img else None, "best_epoch": s.get("best_epoch"),
            "val_map": s.get("val_map"), "test_map": s.get("test_map"), "wall_time_s": s.get("wall_time_s"),
            "pointing_game": json.loads(pg.read_text())["score"] if pg.is_file() else None}


def run_evidence(run_dir: PathLike, regime: str, group: str, cache: Optional[dict] = None) -> dict:
    """A run folder's evidence: ``record``; for Naive AN the finest group-loss ``curve`` (Fig 1's plot) and
    ``memorization`` / ``memorization_eval`` (Fig 1 peaks, Table 1); for an LL run its Fig 4 series ``fig4``."""
    from wsml.analysis.fig4 import run_precision
    from wsml.analysis.memorization import group_curve, memorization_summary

    ev: dict = {"record": run_record(run_dir, regime, group, cache)}
    method = ev["record"]["method"]
    if method == "an":
        for mode, key in ((False, "memorization"), (True, "memorization_eval")):
            curve = group_curve(run_dir, eval_mode=mode)
            if curve is not None:
                ev[key] = memorization_summary(run_dir, eval_mode=mode)
                if not mode:
                    ev["curve"] = {k: [float(x) for x in v] for k, v in curve.items()}
    elif method in LL_METHODS:
        try:
            ev["fig4"] = run_precision(run_dir)
        except (FileNotFoundError, ValueError):
            pass
    return ev


def needs(record: dict) -> tuple[str, ...]:
    """The evidence a run of this method and group must keep for the verdicts and figures that read it."""
    if record["method"] == "an" and record["group"] in ("main", "table1"):
        return ("memorization", "curve") if record["group"] == "main" else ("memorization",)
    if record["method"] in LL_METHODS and record["group"] == "main":
        return ("fig4",)
    return ()


def select(evs: list[dict], group: str, *methods: str) -> list[dict]:
    """The evidence of one group's runs of ``methods``, in the order of ``methods``."""
    return [e for m in methods for e in evs if e["record"]["group"] == group and e["record"]["method"] == m]


def missing(ev: dict) -> list[str]:
    """What of ``needs`` the evidence lacks (a run stored before its series were kept): train it again."""
    return [k for k in needs(ev["record"]) if k not in ev]


def _key(ev: dict) -> tuple[str, str, str]:
    r = ev["record"]
    return r["regime"], r["group"], r["run"]


def evidence_file(evidence_dir: PathLike, regime: str, group: str, run: str) -> Path:
    return Path(evidence_dir) / regime / group / f"{run}.json"


def load_evidence(path: PathLike) -> dict:
    """One stored evidence file; ValueError naming the file when it is not one."""
    try:
        ev = json.loads(Path(path).read_text())
        if not isinstance(ev, dict) or not isinstance(ev.get("record"), dict):
            raise ValueError("no 'record' object")
    except ValueError as e:
        raise ValueError(f"{path}: not a study evidence file ({e})") from None
    return ev


def read_evidence(evidence_dir: PathLike) -> list[dict]:
    """Every stored evidence file under ``evidence_dir`` (``<regime>/<group>/<run>.json``)."""
    return [load_evidence(p) for p in sorted(Path(evidence_dir).glob("*/*/*.json"))]


def gather(root: PathLike, evidence_dir: Optional[PathLike] = None) -> list[dict]:
    """The evidence of every finished run folder under ``root/<regime>/<group>/`` and, for runs that are not
    there, the evidence stored under ``evidence_dir``; a run folder wins over its stored copy."""
    found, cache = {}, {}
    for summ in sorted(Path(root).glob("*/*/*/summary.json")):
        d = summ.parent
        ev = run_evidence(d, d.parent.parent.name, d.parent.name, cache)
        found[_key(ev)] = ev
    stored = {_key(ev): ev for ev in read_evidence(evidence_dir)} if evidence_dir is not None else {}
    merged = {**stored, **found}
    return [merged[k] for k in sorted(merged)]


def store_evidence(evs: list[dict], evidence_dir: PathLike) -> int:
    """Store each evidence under ``evidence_dir``; returns how many files were written or changed."""
    n = 0
    for ev in evs:
        p = evidence_file(evidence_dir, *_key(ev))
        text = json.dumps(ev, indent=None, sort_keys=True) + "\n"
        if not p.is_file() or p.read_text() != text:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(text)
            n += 1
    return n
