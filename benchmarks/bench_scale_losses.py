"""Per-batch cost of the losses at a large label space (issue 17): B = 288, C = 5000, on random logits.

For LL-R, LL-Ct, LL-Cp (epoch 3, so the large-loss selection is active) and ROLE (on ``--role-rows`` images, as its
N x C estimates are the point): milliseconds per forward + backward, the growth of the process's peak RSS, and
the per-image state the loss keeps (LL-Cp: its sparse permanent corrections; ROLE: estimates + gradient + Adam
moments), with ROLE's projection to OpenImages' 1.7 M training images and what ``wsml train`` says there.

    nice -n 10 env OMP_NUM_THREADS=2 python benchmarks/bench_scale_losses.py
"""

from __future__ import annotations

import argparse
import resource
import shlex
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from wsml.losses import build_loss  # noqa: E402
from wsml.train.builders import STATE_BYTES, check_state_memory  # noqa: E402


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def batch(gen: torch.Generator, b: int, c: int, rows: int) -> tuple:
    """Random logits and observed labels with 2 positives and 3 negatives per row, and row ids."""
    logits = torch.randn(b, c, generator=gen).requires_grad_(True)
    targets = torch.zeros(b, c, dtype=torch.int8)
    cls = torch.randint(0, c, (b, 5), generator=gen)
    targets.scatter_(1, cls[:, :2], 1)
    targets.scatter_(1, cls[:, 2:], -1)
    return logits, targets.float(), torch.randint(0, rows, (b,), generator=gen)


def run(name: str, hp: dict, b: int, c: int, rows: int, batches: int) -> dict:
    before = peak_gib()
    loss_fn = build_loss(name, **hp)
    loss_fn.set_epoch(3)
    own = loss_fn.configure_optimizer(1e-3) if hasattr(loss_fn, "configure_optimizer") else None
    gen = torch.Generator().manual_seed(0)
    times = []
    for _ in range(batches):
        logits, targets, index = batch(gen, b, c, rows)
        t = time.perf_counter()
        loss = loss_fn(logits, targets, index=index)
        loss.backward()
        if own is not None:
            own.step()
            own.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t)
    store = getattr(loss_fn, "store", None)
    state = 8 * len(store) if store is not None else sum(p.numel() * 4 for p in loss_fn.parameters()) * (
        4 if own is not None else 1)  # ROLE: estimates, their gradient, Adam's two moments
    return {"loss": name, "rows": rows, "ms": 1000 * sorted(times)[len(times) // 2], "state": state,
            "entries": len(store) if store is not None else None, "rss": peak_gib() - before}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=288)
    p.add_argument("--classes", type=int, default=5000)
    p.add_argument("--batches", type=int, default=30)
    p.add_argument("--rows", type=int, default=1_700_000, help="dataset rows the batch row ids are drawn from")
    p.add_argument("--role-rows", type=int, default=20_000, help="ROLE's N (its estimates are N x C)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "scale_losses.md"))
    a = p.parse_args(argv)
    torch.manual_seed(0)
    res = [run(n, {"delta_rel": 0.2}, a.batch, a.classes, a.rows, a.batches) for n in ("ll-r", "ll-ct", "ll-cp")]
    res.append(run("role", {"num_samples": a.role_rows, "num_classes": a.classes, "expected_num_pos": 2.0},
                   a.batch, a.classes, a.role_rows, a.batches))
    lines = ["python benchmarks/bench_scale_losses.py " + " ".join(shlex.quote(x) for x in (argv or sys.argv[1:])),
             "", f"B = {a.batch}, C = {a.classes}, {a.batches} batches at epoch 3 (median time per forward + backward "
             f"on the CPU, {torch.get_num_threads()} threads); peak RSS growth of this process while the loss ran.",
             "", "| loss | N | ms / batch | peak RSS growth (GiB) | per-image state |", "|---|---:|---:|---:|---|"]
    for r in res:
        state = (f"{r['entries']:,} permanent corrections, {r['state'] / 2**20:.1f} MiB (sparse: 8 bytes each)"
                 if r["entries"] is not None else f"{r['state'] / 2**30:.2f} GiB" if r["state"] else "none")
        lines.append(f"| {r['loss']} | {r['rows']:,} | {r['ms']:.1f} | {max(r['rss'], 0):.2f} | {state} |")
    cp = res[2]
    per_batch = cp["entries"] / a.batches
    lines += ["", f"LL-Cp adds about {per_batch:,.0f} corrections per batch (Δrel = 0.2 % of B·C, minus repeats): one "
              f"epoch over {a.rows:,} rows stores about {per_batch * a.rows / a.batch * 8 / 2**20:,.0f} MiB; a dense "
              f"N x C int8 mask would take {a.rows * a.classes / 2**30:,.1f} GiB."]
    need = STATE_BYTES["role"] * a.rows * a.classes
    try:
        check_state_memory("role", a.rows, a.classes, 128 * 2**30)
        verdict = "fits"
    except ValueError as e:
        verdict = f"`wsml train` (128 GiB machine): `wsml: error: {e}`"
    lines += ["", f"ROLE at {a.rows:,} x {a.classes:,}: {need / 2**30:,.0f} GiB of state. {verdict}"]
    Path(a.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
