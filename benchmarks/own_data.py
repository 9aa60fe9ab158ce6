"""Own data with partial vs complete val, and Δrel=auto vs hand-set values, on the mosaics exported as PNG + CSV.

The Fashion-MNIST mosaics are exported the way a practitioner holds data (``mosaic_csv.py``: training rows keep one
positive, test rows complete) while the complete labels of every row stay aside in ``hidden.csv``. Then:

* ``val``: for Naive AN and LL-R (Δrel 2.5), a run whose val split is drawn from the single-positive training rows
  (partial: wsml selects epochs by PU-AUC and thresholds by the PU rule) and a run with 200 complete ``split=val``
  rows.
  Every epoch is also scored, for measurement only, on test and — with the hidden labels — by the complete-label
  val mAP of the partial run's val rows, and by the old degenerate criterion (unlisted = absent). Reported: the
  epoch each criterion picks and the test mAP there, and test macro F1 with thresholds from each val.
* ``delta``: LL-R with 200 complete val rows, ``loss.delta_rel=auto`` against hand-set values (``--values``; the
  ``val`` part's runs with 200 complete val rows are reused: Naive AN and Δrel 2.5).

Usage: ``python benchmarks/own_data.py val|delta OUT.json [--epochs 8] [--work /tmp/own-data]``
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mosaic_csv import export_mosaic_csv, read_hidden  # noqa: E402

from wsml.config import load_config  # noqa: E402
from wsml.data import prepare  # noqa: E402
from wsml.labels import POS  # noqa: E402
from wsml.metrics import mean_average_precision  # noqa: E402
from wsml.runs import RunFolder  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BASE = ["data.image_size=56", "train.batch_size=32", "optim.lr=1e-3", "data.num_workers=0", "run.quiet=true",
        "train.seed=0"]


class EpochScores:
    """Callback: per epoch, test mAP, and on the val rows the hidden complete-label mAP and the old criterion."""

    def __init__(self, hidden: dict):
        self.hidden = hidden

    def on_epoch_end(self, ctx, epoch):
        from wsml.distributed import DistInfo
        from wsml.evaluation import predict_split
        from wsml.partial_val import dense_observed
        from wsml.train.builders import build_loader

        ctx.model.eval()
        out = {}
        for split in ("val", "test"):
            loader = build_loader(ctx.cfg, ctx.index, split, DistInfo(), train=False,
                                  mean_std=ctx.model.default_mean_std)
            scores, rows = predict_split(ctx.model, loader, ctx.device)
            s = ctx.index[split]
            truth = np.stack([self.hidden[s.samples[r]] for r in rows])
            out[f"{split}_map_hidden"] = mean_average_precision(scores, truth)
            if split == "val" and s.observed is not None:  # the old criterion: unlisted classes taken as absent
                out["val_map_unlisted_absent"] = mean_average_precision(scores, dense_observed(s, rows) == POS)
        return out


def _export(work: Path, complete_val: int) -> tuple[Path, dict]:
    src = work / (f"csv-val{complete_val}" if complete_val else "csv-partial")
    if not (src / "labels.csv").is_file():
        export_mosaic_csv(str(src), num_train=2400, num_test=600, complete_val=complete_val)
    prep = work / f"prep-{src.name}"
    if not (prep / "manifest.json").is_file():
        prepare("csv", prep, root=str(src))
    from wsml.data import DatasetIndex

    names = DatasetIndex.load(prep).class_names
    return prep, read_hidden(str(src / "hidden.csv"), names)


def _train(work: Path, prep: Path, name: str, overrides: list, hidden: dict) -> Path:
    from wsml.train.engine import train

    run = work / "runs" / name
    if not (run / "summary.json").is_file():
        cfg = load_config(ROOT / "configs/custom/small-cnn.yaml", BASE + overrides + [
            f"data.path={prep}", f"run.out={work / 'runs'}", f"run.name={name}", "run.overwrite=true"])
        train(cfg, callbacks=[EpochScores(hidden)])
    return run


def _history(run: Path) -> list[dict]:
    import csv

    with open(run / "metrics.csv") as f:
        return [{k: (float(v) if v not in ("", None) and k not in ("stage", "val_criterion") else v)
                 for k, v in r.items()} for r in csv.DictReader(f)]


def _pick(hist: list[dict], key: str) -> dict:
    best = max(hist, key=lambda r: (r[key], -r["epoch"]))  # first epoch with the best value, as the engine
    return {"epoch": int(best["epoch"]), "test_map": best["test_map_hidden"]}


def _f1(run: Path, hidden_test: dict) -> dict:
    """Test macro F1 with the run's val thresholds (the rule wsml applies), and with F1-on-partial thresholds."""
    from wsml.evaluation import evaluate_run
    from wsml.partial_val import dense_observed
    from wsml.tools.thresholds import apply_thresholds, choose_thresholds, ensure_thresholds, f1_per_class

    folder = RunFolder(run)
    thr = ensure_thresholds(folder, device="cpu")
    _, scores, rows = evaluate_run(folder, "test", device="cpu")
    index = folder.dataset
    truth = np.stack([hidden_test[index["test"].samples[r]] for r in rows])

    def macro(t):
        return float(np.nanmean(f1_per_class(apply_thresholds(scores, t), truth)) * 100)

    out = {"threshold_rule": thr["criterion"], "test_macro_f1": macro(thr["thresholds"]),
           "thresholds": [round(t, 4) for t in thr["thresholds"]]}
    if index["val"].observed is not None:  # what wsml did before: F1 on partial val as if it were complete
        val_scores, val_rows = folder.predictions("val")  # written by ensure_thresholds's val scoring
        naive = choose_thresholds(val_scores, dense_observed(index["val"], val_rows) == POS)["thresholds"]
        out["test_macro_f1_naive_thresholds"] = macro(naive)
        out["naive_thresholds"] = [round(t, 4) for t in naive]
    return out


def bench_val(work: Path, epochs: int) -> dict:
    res = {}
    for val_mode, complete in (("partial val (20% of train rows)", 0), ("complete val (200 rows)", 200)):
        prep, hidden = _export(work, complete)
        for loss, extra in (("an", []), ("ll-r", ["loss.delta_rel=2.5"])):
            name = f"{loss}-{'val200' if complete else 'partial'}"
            t0 = time.time()
            run = _train(work, prep, name, [f"loss.name={loss}", f"train.epochs={epochs}"] + extra, hidden)
            hist = _history(run)
            summary = RunFolder(run).summary
            rec = {"val": val_mode, "loss": loss, "criterion": summary["val_criterion"],
                   "selected": _pick(hist, "val_score"), "oracle_test": _pick(hist, "test_map_hidden"),
                   "history": hist, "summary": summary, "wall_s": round(time.time() - t0, 1)}
            if not complete:
                rec["by_hidden_complete_val_map"] = _pick(hist, "val_map_hidden")
                rec["by_old_criterion"] = _pick(hist, "val_map_unlisted_absent")
            rec.update(_f1(run, hidden))
            res[name] = rec
            print(name, json.dumps({k: v for k, v in rec.items() if k not in ("history", "summary")}), flush=True)
    return res


def bench_delta(work: Path, epochs: int, values: list) -> dict:
    prep, hidden = _export(work, 200)
    res = {}
    for dr in ["auto"] + values:
        name = "ll-r-val200" if dr == 2.5 else f"ll-r-val200-dr{dr}"  # 2.5: the val part's run
        run = _train(work, prep, name, ["loss.name=ll-r", f"loss.delta_rel={dr}", f"train.epochs={epochs}"], hidden)
        folder = RunFolder(run)
        summary = folder.summary
        from wsml.losses.delta_auto import auto_delta_rel

        chosen = auto_delta_rel(folder.config, folder.dataset, log=lambda *a: None) if dr == "auto" else dr
        res[name] = {"delta_rel": dr, "delta_rel_used": chosen, "test_map": summary["test_map"],
                     "best_epoch": summary["best_epoch"]}
        print(name, json.dumps(res[name]), flush=True)
    an = _train(work, prep, "an-val200", ["loss.name=an", f"train.epochs={epochs}"], hidden)
    res["an-val200"] = {"delta_rel": None, "test_map": RunFolder(an).summary["test_map"]}
    return res


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["val", "delta"])
    ap.add_argument("out")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--work", default="/tmp/own-data")
    ap.add_argument("--values", default="0.4,2.5")
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    if a.what == "val":
        result = bench_val(work, a.epochs)
    else:
        result = bench_delta(work, a.epochs, [float(v) for v in a.values.split(",")])
    payload = {"command": " ".join(["python"] + sys.argv), "epochs": a.epochs, "wall_s": round(time.time() - t0),
               "results": result}
    Path(a.out).write_text(json.dumps(payload, indent=1))
    print(f"wrote {a.out}")
