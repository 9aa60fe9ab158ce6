"""Matplotlib figures (Agg backend, small PNGs) for the analyses and the report."""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

PathLike = Union[str, Path]
GROUP_STYLE = {"pos": ("observed positives", "tab:green"), "tn": ("true negatives (unobserved)", "tab:blue"),
               "fn": ("false negatives (unobserved positives)", "tab:red")}


def _save(fig: Any, out: PathLike) -> Path:
    """Write the figure as a small PNG: 80 dpi, quantized to a 256-colour palette (about 3x smaller)."""
    from PIL import Image

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    buf.seek(0)
    with Image.open(buf) as im:
        im.convert("RGB").quantize(colors=256).save(out, format="PNG", optimize=True)
    return out


def _num(values: Sequence[Any]) -> np.ndarray:
    out = []
    for v in values:
        try:
            out.append(float(v))
        except (TypeError, ValueError):
            out.append(np.nan)
    return np.asarray(out, dtype=float)


def plot_memorization(curve: dict, out: PathLike, title: str = "Memorization under AN (Fig 1)") -> Path:
    """The mean AN loss of each entry group vs training time (``curve`` as memorization.load_curve returns)."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, groups, log in ((axes[0], ("pos", "tn", "fn"), True), (axes[1], ("tn", "fn"), False)):
        for g in groups:
            if g in curve:
                label, color = GROUP_STYLE[g]
                ax.plot(curve["position"], _num(curve[g]), label=label, color=color, marker=".", ms=3)
        if log:
            ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_ylabel("mean BCE loss (AN target)" + (", log scale" if log else ""))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    axes[1].set_title("unobserved entries only", fontsize=9)
    fig.suptitle(title, fontsize=10)
    return _save(fig, out)


def plot_precision(series: dict[str, tuple[Sequence[float], Any]], out: PathLike,
                   base_rate: Optional[float] = None, title: str = "Precision of modification (Fig 4)",
                   oracle: Optional[dict[str, tuple[Sequence[float], Sequence[float]]]] = None) -> Path:
    """Precision (%) per epoch: ``series[label] = (epochs, precision %)`` with one row per seed (2-D: mean line
    and min–max band); ``oracle[label]`` the perfect ranker's precision, dotted in the same colour; dashed
    base rate."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for k, (label, (x, y)) in enumerate(series.items()):
        xs, ys = _num(x), np.atleast_2d(np.asarray(y, dtype=float))
        color = f"C{k}"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN epochs (nothing modified) stay NaN
            mean, lo, hi = np.nanmean(ys, 0), np.nanmin(ys, 0), np.nanmax(ys, 0)
        ax.plot(xs, mean, marker="o", color=color, label=label)
        if ys.shape[0] > 1:
            ax.fill_between(xs, lo, hi, color=color, alpha=0.2)
        if oracle and label in oracle:
            ox, oy = oracle[label]
            ax.plot(_num(ox), _num(oy), ls=":", color=color, lw=1.5)
    if oracle:
        ax.plot([], [], ls=":", color="k", label="perfect ranker, same count (dotted)")
    if base_rate is not None and np.isfinite(base_rate):
        ax.axhline(base_rate, color="gray", ls="--", label=f"base rate {base_rate:.1f}%")
    ax.set_xlabel("epoch")
    ax.set_ylabel("precision (%)")
    ax.set_ylim(0, 102)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return _save(fig, out)


def plot_sweep(x: Sequence[float], series: dict[str, Sequence[float]], out: PathLike, xlabel: str,
               ylabel: str = "test mAP", title: str = "", xlog: bool = False) -> Path:
    """Lines of ``series[label]`` (one value per x, NaN = missing) vs ``x`` (Fig 5, Fig 6)."""
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for label, y in series.items():
        ax.plot(_num(x), _num(y), marker="o", label=label)
    if xlog:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, out)


def plot_training_curves(runs: dict[str, dict[str, Sequence[Any]]], out: PathLike,
                         columns: Sequence[str] = ()) -> Path:
    """One panel per metrics column (e.g. train loss, val mAP) with one line per run; ``runs[label]`` maps
    column name -> values, ``epoch`` included."""
    columns = [c for c in columns if any(c in r for r in runs.values())]
    if not columns:
        raise ValueError("plot_training_curves: none of the runs has the requested columns")
    fig, axes = plt.subplots(1, len(columns), figsize=(4 * len(columns), 3.2), squeeze=False)
    for ax, col in zip(axes[0], columns):
        for label, r in runs.items():
            if col in r and "epoch" in r:
                ax.plot(_num(r["epoch"]), _num(r[col]), marker=".", label=label)
        ax.set_xlabel("epoch")
        ax.set_title(col, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    return _save(fig, out)


def _gray_or_rgb(img: np.ndarray) -> tuple[np.ndarray, Optional[str]]:
    img = np.asarray(img)
    if img.ndim == 3 and img.shape[0] in (1, 3) and img.shape[-1] not in (1, 3):
        img = img.transpose(1, 2, 0)  # CHW -> HWC
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    return img, ("gray" if img.ndim == 2 else None)


def plot_qualitative(items: list[dict], out: PathLike, title: str = "Label modification (Fig 3)") -> Path:
    """One column per training image: the image, then text: GT, observed positive, and per epoch the
    classes the LL method modified, marked ✓ (truly positive) / ✗ (truly negative).

    ``items``: dicts with ``image`` (H×W or H×W×3 array), ``gt`` (class names), ``observed`` (class
    names) and ``epochs`` ({epoch: [(class name, truly positive), ...]}).
    """
    if not items:
        raise ValueError("plot_qualitative: no items to show")
    fig, axes = plt.subplots(2, len(items), figsize=(2.6 * len(items), 4.2), squeeze=False,
                             gridspec_kw={"height_ratios": [1, 0.6]})
    for j, it in enumerate(items):
        img, cmap = _gray_or_rgb(it["image"])
        axes[0][j].imshow(img, cmap=cmap)
        axes[0][j].set_axis_off()
        axes[0][j].set_title(it.get("name", ""), fontsize=8)
        lines = ["GT: " + ", ".join(it["gt"]), "observed: " + ", ".join(it["observed"])]
        for e in sorted(it["epochs"]):
            marks = ", ".join(f"{c} {'✓' if ok else '✗'}" for c, ok in it["epochs"][e])
            lines.append(f"ep {e}: → {marks}")
        if not it["epochs"]:
            lines.append("(never modified)")
        axes[1][j].text(0, 1, "\n".join(lines), va="top", ha="left", fontsize=7, wrap=True,
                        transform=axes[1][j].transAxes)
        axes[1][j].set_axis_off()
    fig.suptitle(title, fontsize=10)
    return _save(fig, out)


def plot_cam_overlays(items: list[dict], out: PathLike, title: str = "CAM (Table 4 / appendix Fig 1)") -> Path:
    """Grid: rows = images, columns = image + one CAM overlay per method.

    ``items``: dicts with ``image``, ``label`` (row title), ``boxes`` ([K, 4] x0, y0, x1, y1 of the class)
    and ``cams`` ({method: (map upsampled to the image size, (x, y) peak pixel, hit bool)}).
    """
    if not items:
        raise ValueError("plot_cam_overlays: no items to show")
    methods = list(items[0]["cams"])
    fig, axes = plt.subplots(len(items), 1 + len(methods), figsize=(1.6 * (1 + len(methods)), 1.6 * len(items)),
                             squeeze=False)
    for i, it in enumerate(items):
        img, cmap = _gray_or_rgb(it["image"])
        axes[i][0].imshow(img, cmap=cmap)
        axes[i][0].set_title(it.get("label", ""), fontsize=7)
        for j, m in enumerate(methods, start=1):
            cam, (px, py), hit = it["cams"][m]
            axes[i][j].imshow(img, cmap=cmap)
            axes[i][j].imshow(cam, cmap="jet", alpha=0.45)
            axes[i][j].plot([px + 0.5], [py + 0.5], marker="*", color="white" if hit else "black", ms=9)
            if i == 0:
                axes[i][j].set_title(m, fontsize=8)
        for ax in axes[i]:
            for x0, y0, x1, y1 in np.asarray(it.get("boxes", []), dtype=float).reshape(-1, 4):
                ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec="lime", lw=1))
            ax.set_axis_off()
    fig.suptitle(title, fontsize=9)
    return _save(fig, out)
