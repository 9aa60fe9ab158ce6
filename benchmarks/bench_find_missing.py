"""Find-missing-labels benchmark on the Fashion-MNIST mosaics: how well do wsml's rankings of unobserved
(image, class) pairs find the positives the single-positive protocol hid, compared with cleanlab given the
same out-of-fold probabilities?

The training split of the mosaics keeps its full labels, so every unobserved pair is known to be a missing
positive or a true negative. Runs (small CNN, configs/fashion/*.yaml, ``--epochs`` each): Naive AN, LL-R,
LL-Cp, and K-fold out-of-fold (OOF) scores with the LL-R config (wsml.tools.oof). Writes
benchmarks/results/find_missing.md and .json.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_find_missing.py [--num-train 3750] [--epochs 6] [--folds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import average_precision_score

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from wsml.config import load_config  # noqa: E402
from wsml.labels import POS, UNOBS  # noqa: E402
from wsml.runs import RunFolder  # noqa: E402
from wsml.tools.find_missing import llcp_corrections, train_scores  # noqa: E402
from wsml.tools.oof import out_of_fold  # noqa: E402
from wsml.tools.thresholds import ensure_thresholds  # noqa: E402
from wsml.train.builders import load_index  # noqa: E402
from wsml.train.engine import train  # noqa: E402

KS = (100, 500, 1000, 2000)


def ranking_metrics(score: np.ndarray, truth: np.ndarray, cand: np.ndarray) -> dict:
    """P@k, R-precision (P@M = recall@M, M = number of missing positives) and AP over the candidate pairs."""
    s, t = score[cand], truth[cand]
    order = np.argsort(-s, kind="stable")
    hits = np.cumsum(t[order])
    m = int(t.sum())
    out = {f"p@{k}": float(hits[k - 1] / k) for k in KS if k <= len(s)}
    out["r_precision"] = float(hits[m - 1] / m)
    out["ap"] = float(average_precision_score(t, s))
    return out


def set_metrics(flag: np.ndarray, truth: np.ndarray, cand: np.ndarray) -> dict:
    f = flag & cand
    n, tp = int(f.sum()), int((f & truth).sum())
    return {"size": n, "precision": tp / n if n else float("nan"), "recall": tp / int((truth & cand).sum())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num-train", type=int, default=3750, help="official training mosaics (80 %% train, 20 %% val)")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--out", default="runs/bench_find_missing")
    args = ap.parse_args()
    t_start, load0 = time.time(), os.getloadavg()[0]
    data = f"data/fashion-mosaic-{args.num_train}"
    common = [f"data.path={data}", f"data.options={{num_train: {args.num_train}, num_test: 500}}",
              f"train.epochs={args.epochs}", f"run.out={args.out}", "run.overwrite=true", "run.quiet=true",
              "train.device=cpu"]
    times, runs = {}, {}
    for method in ("ll-r", "an", "ll-cp"):
        t0 = time.time()
        summary = train(load_config(ROOT / f"configs/fashion/{method}.yaml", common + [f"run.name={method}"]))
        runs[method] = Path(summary["run_dir"])
        times[f"train {method}"] = time.time() - t0
        print(f"{method}: val mAP {summary['val_map']:.2f}  ({times[f'train {method}']:.0f}s)", flush=True)
    t0 = time.time()
    oof, oof_thr = out_of_fold(runs["ll-r"], folds=args.folds, epochs=args.epochs, device="cpu")
    times[f"oof {args.folds} folds"] = time.time() - t0
    t0 = time.time()
    insample = {m: train_scores(r, "cpu") for m, r in runs.items()}
    thr = np.asarray(ensure_thresholds(runs["ll-r"], "cpu")["thresholds"])
    times["scoring + thresholds"] = time.time() - t0

    index = load_index(load_config(ROOT / "configs/fashion/ll-r.yaml", common).data)
    tr = index["train"]
    obs, full = np.asarray(tr.observed), np.asarray(tr.full).astype(bool)
    cand = obs == UNOBS
    truth = full & cand
    n_missing = int(truth.sum())

    rankings = {
        "Naive AN, in-sample score": insample["an"],
        "LL-R, in-sample score (`wsml find-missing`)": insample["ll-r"],
        "LL-Cp, in-sample score": insample["ll-cp"],
        f"LL-R, out-of-fold score (K={args.folds}, `--rank-by oof`)": oof,
        f"mean of LL-R in-sample and OOF (`--folds {args.folds}` default ranking)": 0.5 * (insample["ll-r"] + oof),
    }
    # cleanlab on the SAME out-of-fold probabilities; given labels = the observed positives
    import cleanlab
    from cleanlab.filter import find_label_issues
    from cleanlab.multilabel_classification.filter import find_multilabel_issues_per_class
    from cleanlab.multilabel_classification.rank import get_label_quality_scores_per_class

    t0 = time.time()
    given = [list(np.nonzero(row == POS)[0]) for row in obs]
    oof64 = oof.astype(np.float64)
    for method in ("self_confidence",):  # normalized_margin gave identical numbers (binary per-class problems)
        q = np.asarray(get_label_quality_scores_per_class(given, oof64, method=method, adjust_pred_probs=False))
        q = q if q.shape == oof.shape else q.T  # documented as K arrays of shape (N,); 2.9 returns [N, K]
        rankings[f"cleanlab per-class label quality, {method} (OOF)"] = -q  # low quality = likely issue
    per_class = np.asarray(find_multilabel_issues_per_class(given, oof64))  # bool, default prune_by_noise_rate
    per_class = per_class if per_class.shape == oof.shape else per_class.T
    per_example = np.asarray(find_label_issues(given, oof64, multi_label=True))  # [N] bool
    times["cleanlab"] = time.time() - t0

    rows_c, cls_c = llcp_corrections(runs["ll-cp"])
    corrected = np.zeros_like(cand)
    corrected[rows_c, cls_c] = True
    sets = {
        "LL-R in-sample score >= val-F1 threshold (`wsml find-missing` default output; `sources` = model)":
            insample["ll-r"] >= thr,
        "OOF score >= the fold model's val-F1 threshold (`sources` = oof)": oof >= oof_thr,
        f"either of the two above (`--folds {args.folds}` default output)":
            (insample["ll-r"] >= thr) | (oof >= oof_thr),
        "LL-Cp permanent corrections (`sources` = ll-cp)": corrected,
        "cleanlab `find_multilabel_issues_per_class` (OOF), unobserved pairs": per_class,
    }
    res = {"rankings": {k: ranking_metrics(v, truth, cand) for k, v in rankings.items()},
           "sets": {k: set_metrics(v, truth, cand) for k, v in sets.items()}}
    img_missing = truth.any(1)
    res["cleanlab_per_example"] = {"flagged_images": int(per_example.sum()),
                                   "precision": float(img_missing[per_example].mean()) if per_example.any() else None,
                                   "recall": float(per_example[img_missing].mean())}
    res["data"] = {"train_rows": len(tr), "classes": index.num_classes, "unobserved_pairs": int(cand.sum()),
                   "missing_positives": n_missing, "base_rate": n_missing / int(cand.sum()),
                   "images_with_missing": int(img_missing.sum())}
    res["val_map"] = {m: RunFolder(r).summary["val_map"] for m, r in runs.items()}
    res["times_s"] = {k: round(v, 1) for k, v in times.items()}
    res["total_s"] = round(time.time() - t_start, 1)
    ru = resource.getrusage(resource.RUSAGE_SELF)
    res["cpu_s"] = round(ru.ru_utime + ru.ru_stime, 1)
    write(res, args, load0, cleanlab.__version__)


def write(res: dict, args, load0: float, cl_version: str) -> None:
    out = ROOT / "benchmarks/results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "find_missing.json").write_text(json.dumps(res, indent=2) + "\n")
    d = res["data"]
    cmd = (f"OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_find_missing.py --num-train {args.num_train} "
           f"--epochs {args.epochs} --folds {args.folds}")
    lines = [
        "# Finding missing labels on the Fashion-MNIST mosaics", "",
        f"Command: `{cmd}`", "",
        f"torch {torch.__version__}, cleanlab {cl_version}, {platform.machine()}, {os.cpu_count()} CPUs, "
        f"load average {load0:.1f} -> {os.getloadavg()[0]:.1f}; CPU time {res['cpu_s']:.0f} s, wall "
        f"{res['total_s']:.0f} s ({', '.join(f'{k} {v:.0f} s' for k, v in res['times_s'].items())}).", "",
        f"Data: {d['train_rows']} training mosaics (single positive observed, seed 1200), {d['classes']} classes, "
        f"{d['unobserved_pairs']} unobserved (image, class) pairs of which {d['missing_positives']} are missing "
        f"positives (base rate {100 * d['base_rate']:.1f} %, {d['images_with_missing']} images miss a label). Small "
        f"CNN, {args.epochs} epochs per model (configs/fashion, val mAP: "
        + ", ".join(f"{m} {v:.1f}" for m, v in res["val_map"].items()) + ").", "",
        "## Rankings of all unobserved pairs", "",
        "P@k: share of true missing positives among the k top-ranked pairs; R-precision: P@M with M = number of "
        "missing positives (= recall at M); AP: average precision over all unobserved pairs (×100).", "",
        "| ranking | " + " | ".join(f"P@{k}" for k in KS) + " | R-precision | AP |",
        "|---|" + "---|" * (len(KS) + 2),
    ]
    for name, m in res["rankings"].items():
        lines.append(f"| {name} | " + " | ".join(f"{100 * m[f'p@{k}']:.1f}" for k in KS)
                     + f" | {100 * m['r_precision']:.1f} | {100 * m['ap']:.1f} |")
    lines += ["", f"Random ranking: {100 * d['base_rate']:.1f} everywhere.", "",
              "## Flagged sets (no k to choose)", "",
              "| set | pairs flagged | precision % | recall of missing positives % |", "|---|---|---|---|"]
    for name, m in res["sets"].items():
        lines.append(f"| {name} | {m['size']} | {100 * m['precision']:.1f} | {100 * m['recall']:.1f} |")
    pe = res["cleanlab_per_example"]
    lines += ["", f"cleanlab `filter.find_label_issues(labels, pred_probs, multi_label=True)` flags whole images, "
              f"not (image, class) pairs: {pe['flagged_images']} images, of which "
              f"{100 * (pe['precision'] or 0):.1f} % miss a label; recall over images {100 * pe['recall']:.1f} %. "
              "The per-class results above come from `multilabel_classification.filter."
              "find_multilabel_issues_per_class` (same confident-learning filter run per class, given labels = "
              "observed positives, default `filter_by='prune_by_noise_rate'`) and `multilabel_classification.rank."
              "get_label_quality_scores_per_class`; for a given label 0 the self_confidence quality is 1 - p, so "
              "that ranking equals the raw OOF ranking (normalized_margin, monotone in p for a binary per-class "
              "problem, gave identical numbers in a trial run)."]
    (out / "find_missing.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
