"""Speed of the ``small_cnn`` backbone on CPU and how far it trains in a few minutes on Fashion-MNIST mosaics.

Part 1: time of one SGD step (forward + backward) and of one eval forward for a batch of 64 x 3 x 56 x 56,
small_cnn vs timm:resnet18 in the same process (the ratio is robust to machine load).
Part 2 (``--epochs N``): train small_cnn on 56x56 mosaics (``fashion-mosaic`` data set) with full labels (BCE)
and with single positive labels + assume negative (AN), Adam lr 1e-3, batch 64; test mAP after each epoch.

Writes benchmarks/results/small_cnn_speed.{md,json}. Run:
    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/small_cnn_speed.py --epochs 4
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from wsml.models import create_model


def step_times(name: str, reps: int = 5) -> dict:
    torch.manual_seed(0)
    m = create_model(name, 10)
    opt = torch.optim.SGD(m.parameters(), lr=0.01)
    x, y = torch.randn(64, 3, 56, 56), (torch.rand(64, 10) < 0.2).float()
    for i in range(reps + 2):
        if i == 2:
            t = time.perf_counter()
        loss = F.binary_cross_entropy_with_logits(m(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    train = (time.perf_counter() - t) / reps
    m.eval()
    with torch.inference_mode():
        m(x)
        t = time.perf_counter()
        for _ in range(reps):
            m(x)
    return {"params": sum(p.numel() for p in m.parameters()), "train_step_ms": round(train * 1000, 1),
            "eval_forward_ms": round((time.perf_counter() - t) / reps * 1000, 1)}


def mean_ap(scores: np.ndarray, full: np.ndarray) -> float:
    from sklearn.metrics import average_precision_score

    return float(np.mean([average_precision_score(full[:, c], scores[:, c]) if full[:, c].any() else 0.0
                          for c in range(full.shape[1])]) * 100)


def train(index, loss_name: str, epochs: int) -> list:
    from wsml.data.loading import make_loader

    torch.manual_seed(0)
    tr = make_loader(index, "train", batch_size=64, train=True, seed=0, mean=(0.5,), std=(0.5,))
    te = make_loader(index, "test", batch_size=256, train=False, mean=(0.5,), std=(0.5,))
    m = create_model("small_cnn", index.num_classes)
    opt = torch.optim.Adam(m.param_groups(1e-3, head_lr_mult=1.0))
    rows, t0 = [], time.perf_counter()
    for epoch in range(1, epochs + 1):
        m.train()
        for b in tr:
            obs = b["observed"]
            target = b["full"].float() if loss_name == "full" else (obs == 1).float()
            loss = F.binary_cross_entropy_with_logits(m(b["input"]), target)
            opt.zero_grad()
            loss.backward()
            opt.step()
        m.eval()
        with torch.inference_mode():
            s, y = zip(*[(m(b["input"]).numpy(), b["full"].numpy()) for b in te])
        score = mean_ap(np.concatenate(s), np.concatenate(y))
        rows.append({"loss": loss_name, "epoch": epoch, "test_mAP": round(score, 2),
                     "elapsed_s": round(time.perf_counter() - t0, 1)})
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=0)
    ap.add_argument("--num-train", type=int, default=4000)
    args = ap.parse_args()
    res = {"threads": torch.get_num_threads(), "load_avg_start": round(os.getloadavg()[0], 2)}
    res["small_cnn"], res["timm:resnet18"] = step_times("small_cnn"), step_times("timm:resnet18")
    res["train_step_ratio_resnet18_over_small_cnn"] = round(
        res["timm:resnet18"]["train_step_ms"] / res["small_cnn"]["train_step_ms"], 2)
    print(json.dumps(res, indent=1), flush=True)
    if args.epochs:
        from wsml.data import build_dataset

        index = build_dataset("fashion-mosaic", num_train=args.num_train, num_test=1000, seed=0)
        res["data"] = {"train": len(index["train"]), "test": len(index["test"]), "classes": index.num_classes}
        res["training"] = train(index, "full", args.epochs) + train(index, "an", args.epochs)
    res["load_avg_end"] = round(os.getloadavg()[0], 2)
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "small_cnn_speed.json").write_text(json.dumps(res, indent=1))
    cmd = "OMP_NUM_THREADS=2 .venv/bin/python benchmarks/small_cnn_speed.py " + " ".join(sys.argv[1:])
    lines = [f"# small_cnn speed on CPU\n\nCommand: `{cmd.strip()}`  ({res['threads']} threads; load average "
             f"{res['load_avg_start']} at start, {res['load_avg_end']} at end: the machine is shared)\n",
             "| backbone | parameters | train step ms (64x3x56x56) | eval forward ms |", "|---|---|---|---|"]
    for n in ("small_cnn", "timm:resnet18"):
        r = res[n]
        lines.append(f"| {n} | {r['params']:,} | {r['train_step_ms']} | {r['eval_forward_ms']} |")
    lines.append(f"\nresnet18 / small_cnn train-step time ratio: {res['train_step_ratio_resnet18_over_small_cnn']}\n")
    if "training" in res:
        d = res["data"]
        lines += [f"## Training on fashion-mosaic ({d['train']} train / {d['test']} test mosaics, {d['classes']} "
                  "classes), Adam 1e-3, batch 64\n", "| labels | epoch | test mAP | elapsed s |", "|---|---|---|---|"]
        lines += [f"| {r['loss']} | {r['epoch']} | {r['test_mAP']} | {r['elapsed_s']} |" for r in res["training"]]
    (out / "small_cnn_speed.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
