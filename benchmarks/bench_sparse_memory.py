"""Peak memory of an OpenImages-sized partial-label data set: 1,000,000 images x 5,000 classes.

The observed labels (~1.5 positives and ~5 negatives per row, Zipf-like class popularity) are generated
directly in sparse form (never dense: that would be 5 GB of int8), saved as a prepared index, then loaded
with ``DatasetIndex.load`` and batched through ``make_loader`` (PartialLabelDataset) in a *fresh* Python
process per variant, so that its peak resident set size (``ru_maxrss``) is clean:

* ``features``: kind "features" with 4 float32 features per row (isolates the label path);
* ``images``: kind "images" with 1M sample paths (26-character names like OpenImages' ids) that cycle over
  1000 small real JPEG files, decoded and resized to ``--image-size``.

Usage: python benchmarks/bench_sparse_memory.py [--rows 1000000] [--batches 300] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

LIMIT_MIB = 1024


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def rss_split_mib() -> dict:
    """Resident memory split into anonymous (heap, arrays) and file-backed (mapped shared libraries) pages."""
    with open("/proc/self/status") as f:
        fields = dict(line.split(":", 1) for line in f if line.startswith("Rss"))
    return {k: int(v.split()[0]) / 1024 for k, v in fields.items()}


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def generate(work: Path, rows: int, classes: int, seed: int = 0) -> dict:
    """Write the two prepared folders (features/, images/) sharing the same sparse observed labels."""
    from PIL import Image

    from wsml.data.index import DatasetIndex, Split
    from wsml.labels import SparseLabels

    rng = np.random.default_rng(seed)
    npos = 1 + rng.poisson(0.5, rows)
    nneg = rng.poisson(5.0, rows)
    per_row = npos + nneg
    total = int(per_row.sum())
    popularity = 1.0 / (np.arange(classes) + 20.0)
    cols = rng.choice(classes, size=total, p=popularity / popularity.sum()).astype(np.int32)
    row_ids = np.repeat(np.arange(rows, dtype=np.int64), per_row)
    slot = np.arange(total) - np.repeat(np.cumsum(per_row) - per_row, per_row)
    values = np.where(slot < np.repeat(npos, per_row), 1, -1).astype(np.int8)
    obs = SparseLabels.from_coo(row_ids, cols, values, (rows, classes))
    del row_ids, slot, cols, values
    names = [f"c{i}" for i in range(classes)]
    feats = rng.standard_normal((rows, 4), dtype=np.float32)
    DatasetIndex("synthetic-openimages", names, {"train": Split(features=feats, observed=obs)},
                 kind="features").save(work / "features")
    img_root = work / "jpegs"
    (img_root / "train").mkdir(parents=True, exist_ok=True)
    for k in range(1000):
        px = rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)
        Image.fromarray(px).save(img_root / "train" / f"{k:016x}.jpg", quality=90)
    samples = [f"train/{i % 1000:016x}.jpg" for i in range(rows)]
    DatasetIndex("synthetic-openimages", names, {"train": Split(samples=samples, observed=obs)},
                 root=str(img_root), kind="images").save(work / "images")
    vals = obs.values
    return {"rows": rows, "classes": classes, "pos_per_row": float((vals == 1).sum() / rows),
            "neg_per_row": float((vals == -1).sum() / rows), "stored_entries": int(len(vals))}


def measure(folder: str, batches: int, batch_size: int, image_size: int) -> dict:
    """Run in a fresh process: load, build the loader, iterate ``batches`` batches; report RSS (MiB)."""
    import torch

    from wsml.data.index import DatasetIndex
    from wsml.data.loading import make_loader

    torch.set_num_threads(1)
    out = {"rss_after_imports": rss_mib()}
    t = time.perf_counter()
    index = DatasetIndex.load(folder)
    out["load_s"] = time.perf_counter() - t
    out["rss_after_load"] = rss_mib()
    loader = make_loader(index, "train", batch_size=batch_size, train=True, image_size=image_size, seed=0)
    out["rss_after_loader"] = rss_mib()
    t = time.perf_counter()
    seen = 0
    for i, batch in enumerate(loader):
        assert batch["observed"].shape == (batch_size, index.num_classes) and batch["observed"].dtype == torch.int8
        seen += int((batch["observed"] != 0).sum())
        if i + 1 == batches:
            break
    out.update(batches=i + 1, batch_s=(time.perf_counter() - t) / (i + 1), labels_seen=seen,
               rss_end=rss_mib(), peak_rss=peak_mib(), rss_end_split=rss_split_mib())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--classes", type=int, default=5000)
    ap.add_argument("--batches", type=int, default=300)
    ap.add_argument("--image-batches", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=288)
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    ap.add_argument("--measure", help=argparse.SUPPRESS)  # internal: run one measurement on this folder
    a = ap.parse_args()
    if a.measure:
        print(json.dumps(measure(a.measure, a.batches, a.batch_size, a.image_size)))
        return
    work = Path(tempfile.mkdtemp(prefix="wsml-sparse-"))
    try:
        t = time.perf_counter()
        info = generate(work, a.rows, a.classes)
        info["generate_s"] = time.perf_counter() - t
        info["generate_peak_rss"] = peak_mib()
        info["disk_mib"] = {d: sum(f.stat().st_size for f in (work / d).rglob("*") if f.is_file()) / 2**20
                            for d in ("features", "images")}
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        results = {}
        for variant, nb in (("features", a.batches), ("images", a.image_batches)):
            cmd = [sys.executable, __file__, "--measure", str(work / variant), "--batches", str(nb),
                   "--batch-size", str(a.batch_size), "--image-size", str(a.image_size)]
            res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
            if res.returncode:
                raise SystemExit(f"{variant} measurement failed:\n{res.stderr}")
            results[variant] = json.loads(res.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write_report(Path(a.out), a, info, results)


def write_report(out: Path, a, info: dict, results: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    cmd = "python benchmarks/bench_sparse_memory.py" + ("" if a.rows == 1_000_000 else f" --rows {a.rows}")
    dense_gib = a.rows * a.classes / 2**30
    lines = [
        "# Sparse observed labels: peak memory at OpenImages scale", "",
        f"Command: `{cmd}` (each measurement runs in a fresh subprocess; `OMP_NUM_THREADS=1`)", "",
        f"Machine: {os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.2f} at the end (shared machine).",
        "",
        f"Data: {info['rows']:,} rows x {info['classes']:,} classes, {info['pos_per_row']:.2f} observed positives "
        f"and {info['neg_per_row']:.2f} observed negatives per row ({info['stored_entries']:,} stored entries; "
        f"dense int8 would be {dense_gib:.2f} GiB). Generated sparse in {info['generate_s']:.1f} s "
        f"(generator peak RSS {info['generate_peak_rss']:.0f} MiB). Prepared folder sizes: "
        + ", ".join(f"{k} {v:.0f} MiB" for k, v in info["disk_mib"].items()) + ".", "",
        f"Batches of {a.batch_size} (shuffled) through `make_loader` / `PartialLabelDataset`, `num_workers=0`; "
        f"the images variant decodes 48x48 JPEGs and resizes to {a.image_size}x{a.image_size}.", "",
        "| variant | batches | load s | s/batch | RSS after imports | after load | end | **peak RSS** | < 1 GiB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        lines.append(f"| {name} | {r['batches']} | {r['load_s']:.2f} | {r['batch_s']:.3f} | "
                     f"{r['rss_after_imports']:.0f} MiB | {r['rss_after_load']:.0f} MiB | {r['rss_end']:.0f} MiB | "
                     f"**{r['peak_rss']:.0f} MiB** | {'yes' if r['peak_rss'] < LIMIT_MIB else 'NO'} |")
    lines += ["", "RSS after imports is the cost of Python + numpy + torch alone (torch's CUDA build maps large shared "
              "libraries). At the end, anonymous / file-backed resident memory was: " + "; ".join(
                  f"{n} {r['rss_end_split'].get('RssAnon', 0):.0f} / {r['rss_end_split'].get('RssFile', 0):.0f} MiB"
                  for n, r in results.items()) + ". The 1M image paths are held as one Python list of str (their "
              "cost is the 'after load' difference between the two variants)."]
    (out / "sparse_memory.md").write_text("\n".join(lines) + "\n")
    (out / "sparse_memory.json").write_text(json.dumps({"info": info, "results": results}, indent=2))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
