"""LinearInit stage 1 from the feature cache vs an end-to-end epoch, on the same data, in one process.

For each setting, with the engine's own pieces (``train_one_epoch``, the loaders, the feature cache):
  * extraction: running the frozen backbone once over train + val to fill the cache (one-off cost);
  * stage-1 epoch: training the head on the cached features (what every LinearInit stage-1 epoch costs);
  * frozen epoch without a cache: the backbone forward in every epoch, gradients only into the head;
  * end-to-end epoch: forward + backward through backbone and head.
The ratios are measured in the same process, back to back, so machine load affects them less than the
absolute times. Writes benchmarks/results/linearinit.md. Run:

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_linearinit.py
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

import torch

from wsml.config import load_config
from wsml.distributed import DistInfo
from wsml.train import builders as B
from wsml.train.callbacks import CallbackList, TrainContext
from wsml.train.engine import train_one_epoch
from wsml.train.linearinit import HeadOnly, cached_feature_loaders

OUT = Path(__file__).resolve().parent / "results" / "linearinit.md"
CONFIGS = Path(__file__).resolve().parent.parent / "configs"
SETTINGS = {
    # name: overrides on configs/fashion/ll-r.yaml (the mosaics, 4800 training images)
    "small_cnn 56px (demo model)": [],
    "resnet50 112px (paper backbone, 512 images)": ["model.backbone=resnet50", "model.options={}",
                                                    "data.image_size=112", "data.options.num_train=640"],
}


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def measure(overrides: list[str], stage1_epochs: int, workdir: Path) -> dict:
    cfg = load_config(CONFIGS / "fashion" / "ll-r.yaml", overrides + ["run.quiet=true"])
    if cfg.data.options.get("num_train") != 6000:  # a smaller variant of the mosaics gets its own folder
        cfg.data.path = str(workdir / f"mosaics-{cfg.data.options['num_train']}")
    dist, dev = DistInfo(), torch.device("cpu")
    torch.manual_seed(0)
    index = B.load_index(cfg.data)
    model = B.build_model(cfg, index)
    loss_fn = B.build_loss_fn(cfg, index, log=lambda *a: None)
    ctx = TrainContext(cfg, model, loss_fn, index, workdir, dev)
    cbs = CallbackList([])
    run_dir = workdir / "run"
    run_dir.mkdir(exist_ok=True)

    def epoch(net, loader, params, e):
        loss_fn.set_epoch(e)
        B.start_epoch(loader, e, cfg.train.seed, 0)
        opt = torch.optim.Adam(params, lr=cfg.optim.lr)
        scaler = torch.amp.GradScaler("cuda", enabled=False)
        return _timed(lambda: train_one_epoch(net, loader, loss_fn, opt, scaler, cfg, dev, None, cbs, ctx))

    # LinearInit stage 1: extraction once, then head-only epochs on the cache
    model.freeze_backbone(True)
    extraction = _timed(lambda: cached_feature_loaders(cfg, model, index, dist, dev, run_dir, None, lambda *a: None))
    train_f, _ = cached_feature_loaders(cfg, model, index, dist, dev, run_dir, None, lambda *a: None)  # cache hit
    head = list(model.head.parameters())
    stage1 = [epoch(HeadOnly(model), train_f, head, e) for e in range(1, stage1_epochs + 1)]
    # frozen backbone without a cache: images through the backbone every epoch, gradients only into the head
    images = B.build_loader(cfg, index, "train", dist, train=True, mean_std=model.default_mean_std)
    frozen = epoch(model, images, head, 1)
    # end-to-end: everything trains
    model.freeze_backbone(False)
    e2e = epoch(model, images, [p for g in model.param_groups(cfg.optim.lr) for p in g["params"]], 1)
    s1 = sorted(stage1)[len(stage1) // 2]
    return {"rows": len(index["train"]), "extraction_s": extraction, "stage1_epoch_s": s1, "frozen_epoch_s": frozen,
            "e2e_epoch_s": e2e, "speedup_vs_e2e": e2e / s1, "speedup_vs_frozen": frozen / s1,
            "break_even_epochs": extraction / max(frozen - s1, 1e-9)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stage1-epochs", type=int, default=3, help="cached epochs to time (median reported)")
    ap.add_argument("--only", choices=sorted(SETTINGS), nargs="*", help="run only these settings")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only or SETTINGS:
            print(f"== {name}", flush=True)
            results[name] = measure(SETTINGS[name], args.stage1_epochs, Path(tmp))
            print(results[name], flush=True)
    lines = [
        "# LinearInit stage 1: cached features vs end-to-end epochs",
        "",
        "Command: `" + " ".join([f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '?')}", ".venv/bin/python",
                                 "benchmarks/bench_linearinit.py", *map(shlex.quote, sys.argv[1:])]) + "`",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; load average {load:.1f} at start (shared machine: absolute times "
        "are noisy, the ratios are measured back to back in one process).",
        "",
        "Data: Fashion-MNIST mosaics (configs/fashion/ll-r.yaml, LL-R loss, batch 32); times per training epoch.",
        "",
        "| setting | train images | extraction (once) | stage-1 epoch (cache) | frozen epoch, no cache | "
        "end-to-end epoch | speed-up vs end-to-end | vs frozen no cache | extraction pays off after |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        lines.append(f"| {name} | {r['rows']} | {r['extraction_s']:.2f} s | {r['stage1_epoch_s'] * 1000:.1f} ms | "
                     f"{r['frozen_epoch_s']:.2f} s | {r['e2e_epoch_s']:.2f} s | {r['speedup_vs_e2e']:.0f}x | "
                     f"{r['speedup_vs_frozen']:.0f}x | {r['break_even_epochs']:.1f} epochs |")
    lines += ["", "Goal: a stage-1 epoch from the cache at least 20x faster than an end-to-end epoch. "
              "Stage 1 has no augmentation (the flips would have to be frozen into the cache).", ""]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
