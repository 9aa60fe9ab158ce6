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

from wsml._types import PathLike
from wsml.analysis.stats import fmt_mean_sd, mean_sd

GROUP_STYLE = {"pos": ("observed positives", "tab:green"), "tn": ("true negatives (unobserved)", "tab:blue"),
               "fn": ("false negatives (unobserved positives)", "tab:red")}


def _save(fig: Any, out: PathLike, layout: bool = True) -> Path:
    """Write the figure as a small PNG: 80 dpi, quantized to a 256-colour palette (about 3x smaller)."""
    from PIL import Image

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if layout:
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


def plot_memorization(curve: Union[dict, list[dict]], out: PathLike,
                      title: str = "Memorization under AN (Fig 1)") -> Path:
    """The mean AN loss of each entry group vs training time (``curve`` as memorization.load_curve returns);
    a list of curves (one per seed) is drawn as the mean with its min–max band."""
    curves = curve if isinstance(curve, list) else [curve]
    n = min(len(c["position"]) for c in curves)
    x = _num(curves[0]["position"][:n])
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, groups, log in ((axes[0], ("pos", "tn", "fn"), True), (axes[1], ("tn", "fn"), False)):
        for g in groups:
            if all(g in c for c in curves):
                label, color = GROUP_STYLE[g]
                ys = np.stack([_num(c[g][:n]) for c in curves])
                ax.plot(x, ys.mean(0), label=label + (f" (mean of {len(curves)} seeds)" if len(curves) > 1 else ""),
                        color=color, marker=".", ms=3)
                if len(curves) > 1:
                    ax.fill_between(x, ys.min(0), ys.max(0), color=color, alpha=0.2)
        if log:
            ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_ylabel("mean BCE loss (AN target)" + (", log scale" if log else ""))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    axes[1].set_title("unobserved entries only", fontsize=9)
    fig.suptitle(title, fontsize=9)
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
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(title, fontsize=9)
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
    """Grid: rows = images, columns = image + one CAM overlay per method, all CAMs on ONE colour scale
    (min..max over the whole figure, colour bar on the right); ★ marks a CAM maximum inside a box of the
    class (hit), ✕ one outside (miss); markers are never clipped at the image border.

    ``items``: dicts with ``image``, ``label`` (row title), ``boxes`` ([K, 4] x0, y0, x1, y1 of the class)
    and ``cams`` ({method: (map upsampled to the image size, (x, y) peak pixel, hit bool)}).
    """
    if not items:
        raise ValueError("plot_cam_overlays: no items to show")
    methods = list(items[0]["cams"])
    all_cams = [np.asarray(c[0], dtype=float) for it in items for c in it["cams"].values()]
    vmin, vmax = min(float(c.min()) for c in all_cams), max(float(c.max()) for c in all_cams)
    fig, axes = plt.subplots(len(items), 1 + len(methods), figsize=(1.7 * (1 + len(methods)) + 0.9,
                                                                   1.7 * len(items) + 0.6), squeeze=False)
    mappable = None
    for i, it in enumerate(items):
        img, cmap = _gray_or_rgb(it["image"])
        axes[i][0].imshow(img, cmap=cmap)
        axes[i][0].set_title(it.get("label", ""), fontsize=7)
        for j, m in enumerate(methods, start=1):
            cam, (px, py), hit = it["cams"][m]
            axes[i][j].imshow(img, cmap=cmap)
            mappable = axes[i][j].imshow(cam, cmap="jet", alpha=0.45, vmin=vmin, vmax=vmax)
            axes[i][j].plot([px + 0.5], [py + 0.5], marker="*" if hit else "X", color="white" if hit else "black",
                            mec="black" if hit else "white", ms=9, clip_on=False, zorder=5)
            if i == 0:
                axes[i][j].set_title(m, fontsize=8)
        for ax in axes[i]:
            for x0, y0, x1, y1 in np.asarray(it.get("boxes", []), dtype=float).reshape(-1, 4):
                ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec="lime", lw=1))
            ax.set_axis_off()
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], ls="", marker="*", color="white", mec="black", ms=9, label="CAM maximum in a box: hit"),
               Line2D([], [], ls="", marker="X", color="black", mec="white", ms=8, label="CAM maximum outside: miss"),
               Line2D([], [], color="lime", label="boxes of the class")]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=7, frameon=False)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0.06, 0.86, 1))
    cax = fig.add_axes((0.87, 0.15, 0.02, 0.7))
    fig.colorbar(mappable, cax=cax).set_label("CAM value (one scale for all maps)", fontsize=7)
    return _save(fig, out, layout=False)


def plot_seed_lines(series: dict[str, dict[float, Sequence[float]]], out: PathLike, xlabel: str, title: str,
                    ylabel: str = "test mAP", xlog: bool = False,
                    levels: Optional[dict[str, Sequence[float]]] = None,
                    notes: Optional[dict[str, str]] = None) -> Path:
    """Mean ± sd over seeds (error bars; the seed count in the legend) of ``series[label][x] = [per-seed values]``;
    ``levels[label]``: per-seed values drawn as a horizontal mean line with a ±sd band (e.g. Naive AN in Fig 5);
    ``notes[label]``: text appended to the legend entry (e.g. optimisation steps)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for k, (label, by_x) in enumerate(series.items()):
        xs = sorted(by_x)
        m, sd = (np.array(v) for v in zip(*(mean_sd(by_x[x])[:2] for x in xs)))
        n = sorted({len(by_x[x]) for x in xs})
        lab = f"{label} ({'/'.join(map(str, n))} seed(s))" + (f", {notes[label]}" if notes and label in notes else "")
        ax.errorbar(xs, m, yerr=np.nan_to_num(sd), marker="o", capsize=3, color=f"C{k}", label=lab)
    for label, v in (levels or {}).items():
        mu, sd, _ = mean_sd(v)
        ax.axhline(mu, color="gray", ls="--", label=f"{label} {fmt_mean_sd(v)}")
        if not np.isnan(sd):  # no band from a single seed (sd NaN)
            ax.axhspan(mu - sd, mu + sd, color="gray", alpha=0.15)
    if xlog:
        from matplotlib.ticker import FixedLocator, NullLocator

        ax.set_xscale("log")
        ticks: list[float] = []
        for t in sorted({float(x) for by_x in series.values() for x in by_x}):
            if not ticks or t >= 1.4 * ticks[-1]:  # a label per point unless it would overlap its neighbour
                ticks.append(t)
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticklabels([f"{t:g}" for t in ticks], fontsize=7)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, which="both")
    return _save(fig, out)
