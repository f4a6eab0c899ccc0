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
