"""wsml bench: a tiny grid (2 methods × 2 seeds) on a tiny feature data set, its statistics checked by hand."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import cli_error
from sklearn.metrics import average_precision_score

from tests.engine_helpers import make_feature_index
from wsml.bench import report as R
from wsml.bench.grid import load_spec, run_grid
from wsml.bench.report import write_results
from wsml.cli import main

CONFIG = {"data": {"path": "PLACEHOLDER"}, "model": {"backbone": "linear", "pretrained": False},
          "optim": {"name": "adam", "lr": 1e-2, "head_lr_mult": 1.0}, "train": {"epochs": 2, "batch_size": 16}}


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """Run the grid once (in-process); return (spec, results, tmp dir)."""
    tmp = tmp_path_factory.mktemp("bench")
    data = make_feature_index(tmp / "feats")
    cfg = dict(CONFIG, data={"path": str(data)})
    (tmp / "base.yaml").write_text(yaml.safe_dump(cfg))
    spec_path = tmp / "grid.yaml"
    spec_path.write_text(yaml.safe_dump({
        "name": "tiny", "config": "base.yaml", "seeds": [0, 1], "reference": "an", "upper": "full",
        "runs_dir": str(tmp / "runs"), "group_map": {"num_groups": 3},
        "search": {"seeds": [0], "params": {"ll-r": {"loss.delta_rel": [5.0, 20.0]}}},
        "methods": {"an": ["loss.name=an"], "ll-r": {"loss.name": "ll-r"}}}))
    spec = load_spec(spec_path)
    results = run_grid(spec, log=lambda *a: None)
    return spec, results, tmp


def test_grid_runs_and_table_match_the_run_folders(grid):
    spec, results, _ = grid
    assert sorted((r["method"], r["seed"]) for r in results["runs"]) == [("an", 0), ("an", 1), ("ll-r", 0), ("ll-r", 1)]
    for r in results["runs"]:  # every record is what the engine wrote in the run folder
        summary = json.loads((Path(r["run_dir"]) / "summary.json").read_text())
        assert r["test_map"] == summary["test_map"] and r["best_epoch"] == summary["best_epoch"]
    for row in results["table"]:
        vals = [r["test_map"] for r in results["runs"] if r["method"] == row["method"]]
        assert row["runs"] == 2
        assert row["test_map_mean"] == pytest.approx((vals[0] + vals[1]) / 2)
        assert row["test_map_std"] == pytest.approx(abs(vals[0] - vals[1]) / math.sqrt(2))  # ddof=1 of two values


def test_search_picks_best_val_and_grid_reuses_its_run(grid):
    _, results, _ = grid
    rows = [s for s in results["search"] if s["method"] == "ll-r"]
    assert len(rows) == 2 and sum(s["chosen"] for s in rows) == 1
    best = max(rows, key=lambda s: s["val_map"])
    assert best["chosen"] and results["chosen"]["ll-r"] == best["overrides"]
    seed0 = next(r for r in results["runs"] if r["method"] == "ll-r" and r["seed"] == 0)
    assert seed0["extra"] == best["overrides"] and seed0["reused"]  # the search run of seed 0, not retrained
    assert seed0["val_map"] == pytest.approx(best["val_map"])


def test_group_map_is_per_group_mean_ap_by_known_counts(grid):
    spec, results, tmp = grid
    from wsml.data import DatasetIndex

    index = DatasetIndex.load(tmp / "feats")
    known = (index["train"].observed != 0).sum(0)  # single positive: known = observed positives per class
    order = np.argsort(known, kind="stable")
    r = results["runs"][0]
    pred = np.load(Path(r["run_dir"]) / "predictions_test.npz")
    full = index["test"].full[pred["rows"]]
    ap = np.array([average_precision_score(full[:, c], pred["scores"][:, c]) for c in range(full.shape[1])])
    for g, cls in enumerate(np.array_split(order, 3)):  # 6 classes -> 3 groups of 2, G1 = fewest known labels
        assert r["group_map"][f"G{g + 1}"] == pytest.approx(100 * ap[cls].mean(), abs=1e-6)
    assert r["group_map"]["all"] == pytest.approx(r["test_map"], abs=1e-6)


def test_rerun_reuses_every_run(grid):
    spec, results, _ = grid
    again = run_grid(spec, log=lambda *a: None)
    assert all(r["reused"] for r in again["runs"])
    assert [r["test_map"] for r in again["runs"]] == [r["test_map"] for r in results["runs"]]


def test_compare_by_hand():
    runs = [{"method": m, "seed": s, "test_map": v} for m, s, v in
            [("an", 0, 60.0), ("an", 1, 62.0), ("full", 0, 80.0), ("full", 1, 80.0), ("ll", 0, 70.0), ("ll", 1, 71.0)]]
    for r in runs:
        r.update(val_map=0.0, best_epoch=1)
    table = R.summarise(runs, ["full", "an", "ll"])
    (c,) = R.compare(runs, table, "an", "full", ["ll"])
    s_an, s_ll = math.sqrt(2.0), math.sqrt(0.5)  # sample std of (60, 62) and (70, 71)
    assert c["delta"] == pytest.approx(9.5)
    assert c["pooled_std"] == pytest.approx(math.sqrt((s_an ** 2 + s_ll ** 2) / 2))
    assert c["beats_an_2std"] is True
    assert c["paired_delta_mean"] == pytest.approx(9.5) and c["paired_delta_std"] == pytest.approx(math.sqrt(0.5))
    assert c["gap_closed"] == pytest.approx(9.5 / 19.0)
    one = [r for r in runs if r["seed"] == 0]  # a single seed: no std, so no "beats by > 2 std" verdict
    (c1,) = R.compare(one, R.summarise(one, ["full", "an", "ll"]), "an", "full", ["ll"])
    assert c1["beats_an_2std"] is None and c1["delta"] == pytest.approx(10.0) and c1["gap_closed"] == pytest.approx(0.5)
    # the one mean±sd convention (wsml.analysis.stats.mean_sd): a single run has no sd (NaN), not 0
    assert all(math.isnan(r["test_map_std"]) for r in R.summarise(one, ["an", "ll"]))
    assert R._pm(60.0, math.nan) == "60.00" and R._pm(9.5, 0.7071, sign="+") == "+9.50 ± 0.71"  # tables: no "± 0"


def test_write_results_and_cli_errors(grid, tmp_path, capsys):
    spec, results, _ = grid
    paths = write_results(results, tmp_path, "wsml bench grid.yaml")
    md = paths[0].read_text()
    assert md.splitlines()[2] == "Command: `wsml bench grid.yaml`"
    assert "| ll-r |" in md and "G1" in md
    assert json.loads(paths[1].read_text())["finished"] == 4
    assert paths[2].read_text().splitlines()[0].startswith("method,runs,test_map_mean")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nconfig: nope.yaml\nmethods: {an: [loss.name=an]}\n")
    assert main(["bench", str(bad)]) == 2
    assert "nope.yaml" in capsys.readouterr().err
    bad.write_text("name: x\nconfig: nope.yaml\nmethods: {an: [loss.name=an]}\nbogus: 1\n")
    with pytest.raises(ValueError, match="bogus"):
        load_spec(bad)
    bad.write_text("name: [x\n  methods")
    assert "bad.yaml: invalid YAML" in cli_error(["bench", str(bad)], capsys)
