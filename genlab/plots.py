"""Figures the reports share. Each returns its matplotlib Figure (end the cell with `;`)."""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch


def loss_curves(history: Sequence[dict], title: str = "Training curves"):
    """One panel per metric family (train_*/val_*), epochs on x."""
    keys = sorted({k for row in history for k in row if k != "epoch"})
    fig, ax = plt.subplots()
    epochs = [row["epoch"] for row in history]
    for key in keys:
        ys = [row.get(key, np.nan) for row in history]
        ax.plot(epochs, ys, label=key, linestyle="--" if key.startswith("val") else "-")
    ax.set(xlabel="epoch", ylabel="loss", title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _as_numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def image_grid(images, title: str = "", ncols: int = 8):
    """N×C×H×W in [0,1] → one grid figure (grey for C=1, RGB for C=3)."""
    x = _as_numpy(images)
    n = len(x)
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * 0.8, nrows * 0.8), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            img = np.clip(x[i], 0.0, 1.0)
            if img.shape[0] == 1:
                ax.imshow(img[0], cmap="gray_r" if img.shape[1] <= 16 else "gray",
                          vmin=0, vmax=1, interpolation="nearest")
            else:
                ax.imshow(np.transpose(img, (1, 2, 0)), interpolation="nearest")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def scatter_2d(real, generated, title: str = "Real vs generated"):
    r, g = _as_numpy(real), _as_numpy(generated)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(r[:, 0], r[:, 1], s=4, alpha=0.5, label=f"real (n={len(r)})")
    ax.scatter(g[:, 0], g[:, 1], s=4, alpha=0.5, label=f"generated (n={len(g)})")
    ax.set(title=title, aspect="equal")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def samples(generated, real, title: str = "Generated samples"):
    """Image grid for images, scatter against real data for 2-D data."""
    if _as_numpy(generated).ndim == 4:
        return image_grid(generated, title)
    return scatter_2d(real, generated, title)


def reconstructions(originals, recons, title: str = "Reconstructions (top: real, bottom: VAE)"):
    x, r = _as_numpy(originals), _as_numpy(recons)
    return image_grid(np.concatenate([x, r]), title, ncols=len(x))


def drift_heatmap(rows: Sequence[dict], n: int, title: str = ""):
    """Detection rate per shift (rows) × method (columns) at sample size n, δ averaged."""
    cells = [r for r in rows if r["n"] == n]
    shifts = list(dict.fromkeys(
        r["shift"] + ("" if r["intensity"] == "-" else f":{r['intensity']}") for r in cells))
    methods = sorted({r["method"] for r in cells})
    grid = np.full((len(shifts), len(methods)), np.nan)
    for i, s in enumerate(shifts):
        for j, m in enumerate(methods):
            v = [r["rate"] for r in cells if r["method"] == m and
                 r["shift"] + ("" if r["intensity"] == "-" else f":{r['intensity']}") == s]
            grid[i, j] = np.mean(v) if v else np.nan
    fig, ax = plt.subplots(figsize=(0.38 * len(methods) + 2.5, 0.32 * len(shifts) + 1.8))
    im = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(methods)), methods, rotation=90, fontsize=7)
    ax.set_yticks(range(len(shifts)), shifts, fontsize=7)
    ax.grid(False)
    fig.colorbar(im, ax=ax, label="detection rate")
    ax.set_title(title or f"Detection rate at n={n} (δ averaged)")
    fig.tight_layout()
    return fig


def detection_vs_size(table: Sequence[dict], title: str = "Mean detection rate over shifts"):
    """Failing Loudly's Table 1 as curves: one line per method, sample size on x."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for row in table:
        sizes = [int(k[2:]) for k in row if k.startswith("n=")]
        ax.plot(sizes, [row[f"n={s}"] for s in sizes], marker="o", lw=1, label=row["method"])
    ax.set(xscale="log", xlabel="sample size n", ylabel="detection rate", ylim=(0, 1), title=title)
    ax.legend(fontsize=6, ncol=2, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return fig


def monitor_path(path, threshold: float, start: int, title: str = "Monitor statistic"):
    """One stream's statistic with its calibrated threshold and the drift onset."""
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.plot(np.arange(1, len(path) + 1), path, lw=0.8)
    ax.axhline(threshold, color="C3", ls="--", label="threshold (ARL₀-calibrated)")
    ax.axvline(start, color="k", ls=":", label="drift starts")
    ax.set(xlabel="records", title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- evaluation
def fd_vs_inverse_n(curves: dict, title: str = "FD against 1/N (FD∞ at 1/N = 0)"):
    """Mean FD(N) per row with its fitted line FD∞ + slope/N extended to 1/N = 0."""
    fig, ax = plt.subplots()
    for name, c in curves.items():
        inv = 1.0 / np.asarray(c["ns"], dtype=float)
        line = ax.plot(inv, c["fd_mean"], "o", label=f"{name}: FD∞ = {c['fd_infinity']:.3g}")[0]
        grid = np.linspace(0, inv.max(), 20)
        ax.plot(grid, c["fd_infinity"] + c["slope"] * grid, "--", color=line.get_color())
    ax.set(xlabel="1 / N", ylabel="Fréchet distance", title=title, xlim=(0, None))
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def reliability_diagram(bins: Sequence[dict], title: str = "Reliability (TSTR classifier)"):
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], ":", color="grey", label="perfect calibration")
    if bins:
        conf = [b["confidence"] for b in bins]
        acc = [b["accuracy"] for b in bins]
        size = [20 + 200 * b["count"] / max(x["count"] for x in bins) for b in bins]
        ax.plot(conf, acc, "-", alpha=0.5)
        ax.scatter(conf, acc, s=size, label="bins (area ∝ count)")
    ax.set(xlabel="confidence", ylabel="accuracy", title=title, xlim=(0, 1), ylim=(0, 1.02))
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return fig


def class_share_bars(shares: dict, class_names: Sequence[str], title: str = "Class shares"):
    """Grouped bars: each row's share per class (mode dropping shows as a missing bar)."""
    fig, ax = plt.subplots(figsize=(7, 3.5))
    k = len(class_names)
    width = 0.8 / max(len(shares), 1)
    for i, (name, s) in enumerate(shares.items()):
        ax.bar(np.arange(k) + (i - (len(shares) - 1) / 2) * width, s, width, label=name)
    ax.set(xticks=np.arange(k), xticklabels=list(class_names), ylabel="share", title=title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def nearest_pairs(samples, nearest, title: str = "Samples (top) and their nearest member (bottom)"):
    """Each sample above the training record closest to it in feature space."""
    s, m = _as_numpy(samples), _as_numpy(nearest)
    return image_grid(np.concatenate([s, m]), title, ncols=len(s))


def class_samples(model, class_names: Sequence[str], per_class: int = 8, seed: int = 0,
                  title: str = "Samples per requested class"):
    """A conditional model's samples, one row per requested class (images) or one colour per
    class (2-D data). Same seed → same figure."""
    k = len(class_names)
    labels = torch.arange(k).repeat_interleave(per_class)
    x = _as_numpy(model.sample(len(labels), seed=seed, labels=labels))
    if x.ndim == 4:
        fig = image_grid(x, title, ncols=per_class)
        for row, name in zip(fig.axes[::per_class], class_names):
            row.text(-0.15, 0.5, str(name), transform=row.transAxes, ha="right", va="center", fontsize=8)
        return fig
    fig, ax = plt.subplots(figsize=(5, 5))
    for c, name in enumerate(class_names):
        pts = x[c * per_class:(c + 1) * per_class]
        ax.scatter(pts[:, 0], pts[:, 1], s=8, label=str(name))
    ax.set(title=title, aspect="equal")
    ax.legend(fontsize=7, markerscale=2)
    fig.tight_layout()
    return fig


def conditional_accuracy_bars(slices: Sequence[dict], overall: float | None,
                              title: str = "Conditional accuracy per requested class"):
    """Share of each class's requested samples the evaluation classifier assigns to that class."""
    names = [str(r["class"]) for r in slices]
    acc = [np.nan if r.get("conditional_accuracy") is None else r["conditional_accuracy"] for r in slices]
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.bar(np.arange(len(names)), acc, color="tab:blue")
    if overall is not None:
        ax.axhline(overall, color="k", linestyle="--", linewidth=1, label=f"overall {overall:.3f}")
        ax.legend(fontsize=8, loc="lower right")
    ax.set(xticks=np.arange(len(names)), xticklabels=names, ylim=(0, 1), ylabel="accuracy", title=title)
    fig.tight_layout()
    return fig


def cost_pareto(points: dict, recommended: str | None, xlabel: str,
                title: str = "Cost against quality (FD / the fp32 reference's FD)"):
    """One point per variant: ``points[name] = (cost, fd_ratio)``; cost on a log axis, the
    recommended variant circled, the reference's level (1) dashed, the Pareto front joined."""
    fig, ax = plt.subplots()
    names = [n for n, (c, r) in points.items() if c and r is not None]
    xs = np.array([points[n][0] for n in names], dtype=float)
    ys = np.array([points[n][1] for n in names], dtype=float)
    ax.scatter(xs, ys, s=25)
    for n, x, y in zip(names, xs, ys):
        ax.annotate(n, (x, y), textcoords="offset points", xytext=(4, 3), fontsize=8)
    order = np.argsort(xs, kind="stable")
    front, best = [], np.inf
    for i in order:
        if ys[i] < best:
            front.append(i)
            best = ys[i]
    ax.plot(xs[front], ys[front], color="grey", linewidth=1, label="Pareto front")
    if recommended in names:
        i = names.index(recommended)
        ax.scatter([xs[i]], [ys[i]], s=160, facecolors="none", edgecolors="red", label="recommended")
    ax.axhline(1.0, linestyle="--", color="black", linewidth=0.8)
    ax.set_xscale("log")
    ax.set(xlabel=xlabel, ylabel="FD / FD of fp32", title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
