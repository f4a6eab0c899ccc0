"""The DDPM's ε-predictors: a small U-Net for images and a residual MLP for flat data.

Both take ``(x_t, t)`` and, when built with ``n_classes``, a label index per record in
``[0, n_classes]`` (``n_classes`` = the null label of classifier-free guidance) whose learned
embedding is added to the time embedding. The label embedding starts at zero, so an untrained
conditional denoiser is the unconditional one; unconditional networks have no such parameter
(their parameters and initialisation are those of the time-only networks). GroupNorm, no
BatchNorm (Opacus-friendly); deterministic on CPU.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import flat_dim

__all__ = ["timestep_embedding", "TimeEmbedding", "ResBlock", "UNet", "MLPDenoiser"]


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal embedding ``(N, dim)`` of integer timesteps ``t`` (Vaswani et al. 2017)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    return F.pad(emb, (0, dim % 2))


class TimeEmbedding(nn.Module):
    """Sinusoidal features → MLP; plus a label embedding (``n_classes + 1`` rows, the last one the
    null label) when ``n_classes > 0``."""

    def __init__(self, width: int, out_dim: int, n_classes: int = 0):
        super().__init__()
        self.width = width
        self.mlp = nn.Sequential(nn.Linear(width, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim))
        if n_classes:
            self.label = nn.Embedding(n_classes + 1, out_dim)
            nn.init.zeros_(self.label.weight)

    def forward(self, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.mlp(timestep_embedding(t, self.width))
        return emb if labels is None else emb + self.label(labels)


def _gn(ch: int) -> nn.GroupNorm:
    return nn.GroupNorm(8 if ch % 8 == 0 else 1, ch)


class ResBlock(nn.Module):
    """GroupNorm → SiLU → conv, + time embedding, GroupNorm → SiLU → conv, residual (1×1 if needed)."""

    def __init__(self, c_in: int, c_out: int, t_dim: int):
        super().__init__()
        self.norm1, self.conv1 = _gn(c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.t_proj = nn.Linear(t_dim, c_out)
        self.norm2, self.conv2 = _gn(c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.t_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class UNet(nn.Module):
    """Small U-Net ε-predictor for ``(C, H, W)``: channels ``width · (1, 2, 2, 2)`` per resolution."""

    def __init__(self, data_shape: Sequence[int], width: int = 64, n_classes: int = 0):
        super().__init__()
        c, h, w = data_shape
        n_down = 0
        while min(h, w) >= 8 and n_down < 3:
            h, w, n_down = (h + 1) // 2, (w + 1) // 2, n_down + 1
        chs = [width * m for m in (1, 2, 2, 2)[: n_down + 1]]
        t_dim = 4 * width
        self.time = TimeEmbedding(width, t_dim, n_classes)
        self.inp = nn.Conv2d(c, chs[0], 3, padding=1)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        prev = chs[0]
        for i, ch in enumerate(chs):
            self.down.append(ResBlock(prev, ch, t_dim))
            if i < n_down:
                self.downsample.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
            prev = ch
        self.mid = nn.ModuleList([ResBlock(prev, prev, t_dim), ResBlock(prev, prev, t_dim)])
        self.up = nn.ModuleList()
        self.upconv = nn.ModuleList()
        for i in reversed(range(len(chs))):
            if i < n_down:
                self.upconv.append(nn.Conv2d(prev, prev, 3, padding=1))
            self.up.append(ResBlock(prev + chs[i], chs[i], t_dim))
            prev = chs[i]
        self.out = nn.Sequential(_gn(prev), nn.SiLU(), nn.Conv2d(prev, c, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)
        self.n_down = n_down

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        temb = self.time(t, labels)
        h = self.inp(x)
        skips = []
        for i, block in enumerate(self.down):
            h = block(h, temb)
            skips.append(h)
            if i < self.n_down:
                h = self.downsample[i](h)
        for block in self.mid:
            h = block(h, temb)
        ups = iter(self.upconv)
        for block, skip in zip(self.up, reversed(skips)):
            if h.shape[-2:] != skip.shape[-2:]:
                h = next(ups)(F.interpolate(h, size=skip.shape[-2:], mode="nearest"))
            h = block(torch.cat([h, skip], dim=1), temb)
        return self.out(h)


class MLPDenoiser(nn.Module):
    """Residual MLP ε-predictor for flat data (any ``data_shape``, flattened)."""

    def __init__(self, data_shape: Sequence[int], width: int = 256, n_classes: int = 0, blocks: int = 3):
        super().__init__()
        d = flat_dim(data_shape)
        self.data_shape = tuple(data_shape)
        self.time = TimeEmbedding(width, width, n_classes)
        self.inp = nn.Linear(d, width)
        self.blocks = nn.ModuleList(
            nn.ModuleDict({"norm": _gn(width), "fc1": nn.Linear(width, width), "fc2": nn.Linear(width, width)})
            for _ in range(blocks)
        )
        self.out = nn.Sequential(nn.SiLU(), nn.Linear(width, d))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        temb = self.time(t, labels)
        h = self.inp(x.flatten(1))
        for b in self.blocks:
            h = h + b["fc2"](F.silu(b["fc1"](F.silu(b["norm"](h))) + temb))
        return self.out(h).view(x.shape[0], *self.data_shape)
