"""Shared network builders that follow the shape of the data.

Two architectures, picked by the ``arch`` hyper-parameter of a model:

- ``"mlp"``: flatten → ``depth`` hidden ``Linear`` layers of ``width`` units (LeakyReLU 0.2) → output.
  Works for any ``data_shape``: ``(2,)`` toy points, ``(1, 8, 8)`` digits, ``(3, 64, 64)`` images.
- ``"conv"``: images only, ``(C, H, W)``. The encoder halves the resolution with stride-2 4×4
  convolutions while the smaller side is ≥ 8 (at most 4 times: 8→4, 20→10→5, 64→…→4), with
  ``depth - 1`` extra 3×3 convolutions per stage and channels ``min(width, 32·2^i)``. The decoder
  mirrors it: a linear layer to a ``ceil(H/2^n) × ceil(W/2^n)`` grid, transposed convolutions that
  double the size, then a centre crop to exactly ``H × W`` (so non-power-of-two sides work).

:class:`ProjectionDiscriminator` puts a class-conditional projection head (Miyato & Koyama
2018) on an encoder.

Normalisation is GroupNorm or nothing — never BatchNorm — so that every network here can be
trained with per-sample gradients (Opacus DP-SGD) and behaves identically in train/eval mode for a
given input. ``spectral_norm=True`` wraps every Linear/Conv layer in a spectral-norm
parametrisation and disables GroupNorm (used for GAN discriminators). Everything is deterministic
on CPU.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _sn

__all__ = [
    "ARCHS",
    "flat_dim",
    "mlp",
    "ConvEncoder",
    "ConvDecoder",
    "build_encoder",
    "build_decoder",
    "ProjectionDiscriminator",
    "check_data_shape",
    "coded_input_shape",
]

ARCHS = ("mlp", "conv")


def check_data_shape(data_shape: Sequence[int]) -> list[int]:
    """Validate ``data_shape`` and return it as a list of positive ints."""
    try:
        shape = [int(s) for s in data_shape]
    except TypeError as e:
        raise TypeError(f"data_shape must be a sequence of ints, got {data_shape!r}") from e
    if not shape or any(s <= 0 for s in shape) or any(s != d for s, d in zip(shape, data_shape)):
        raise ValueError(f"data_shape must be positive ints, e.g. [2] or [1, 8, 8]; got {data_shape!r}")
    return shape


def check_arch(arch: str, data_shape: Sequence[int]) -> None:
    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {list(ARCHS)}, got {arch!r}")
    if arch == "conv" and len(data_shape) != 3:
        raise ValueError(f"arch='conv' needs image data of shape (C, H, W), got data_shape={list(data_shape)}")


def coded_input_shape(arch: str, data_shape: Sequence[int], code_dim: int) -> list[int]:
    """Input shape of an encoder fed ``_common.with_code(x, code)``: ``code_dim`` extra channels
    for ``"conv"``, extra columns of the flattened record for ``"mlp"``; ``data_shape`` when 0."""
    if not code_dim:
        return list(data_shape)
    if arch == "conv":
        return [data_shape[0] + code_dim, *data_shape[1:]]
    return [flat_dim(data_shape) + code_dim]


def flat_dim(data_shape: Sequence[int]) -> int:
    return int(math.prod(data_shape))


def _act() -> nn.Module:
    return nn.LeakyReLU(0.2)


def _wrap(layer: nn.Module, sn: bool) -> nn.Module:
    return _sn(layer) if sn else layer


def _norm(channels: int, enabled: bool) -> nn.Module:
    return nn.GroupNorm(min(8, channels), channels) if enabled else nn.Identity()


def mlp(in_dim: int, out_dim: int, width: int = 256, depth: int = 2, *, spectral_norm: bool = False) -> nn.Sequential:
    """``depth`` hidden layers of ``width`` units with LeakyReLU(0.2); a linear output layer."""
    layers: list[nn.Module] = []
    d = in_dim
    for _ in range(depth):
        layers += [_wrap(nn.Linear(d, width), spectral_norm), _act()]
        d = width
    layers.append(_wrap(nn.Linear(d, out_dim), spectral_norm))
    return nn.Sequential(*layers)


def _conv_plan(data_shape: Sequence[int], width: int) -> tuple[int, list[int]]:
    """Number of stride-2 stages and the channel count at each resolution (len = stages + 1)."""
    _, h, w = data_shape
    n = 0
    while min(h, w) >= 8 and n < 4:
        h, w, n = h // 2, w // 2, n + 1
    channels = [min(width, 32 * 2**i) for i in range(n + 1)]
    return n, channels


class ConvEncoder(nn.Module):
    """(N, C, H, W) → (N, out_dim)."""

    def __init__(self, data_shape: Sequence[int], out_dim: int, width: int = 256, depth: int = 2,
                 *, spectral_norm: bool = False):
        super().__init__()
        c, h, w = data_shape
        n, ch = _conv_plan(data_shape, width)
        norm = not spectral_norm
        layers: list[nn.Module] = [_wrap(nn.Conv2d(c, ch[0], 3, padding=1), spectral_norm), _act()]
        for i in range(n):
            layers += [_wrap(nn.Conv2d(ch[i], ch[i + 1], 4, stride=2, padding=1), spectral_norm),
                       _norm(ch[i + 1], norm), _act()]
            for _ in range(max(depth - 1, 0)):
                layers += [_wrap(nn.Conv2d(ch[i + 1], ch[i + 1], 3, padding=1), spectral_norm),
                           _norm(ch[i + 1], norm), _act()]
            h, w = h // 2, w // 2
        layers += [nn.Flatten(), _wrap(nn.Linear(ch[n] * h * w, out_dim), spectral_norm)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ConvDecoder(nn.Module):
    """(N, latent_dim) → (N, C, H, W) (raw outputs: no final activation)."""

    def __init__(self, latent_dim: int, data_shape: Sequence[int], width: int = 256, depth: int = 2):
        super().__init__()
        c, h, w = data_shape
        n, ch = _conv_plan(data_shape, width)
        self.out_hw = (h, w)
        self.h0, self.w0 = math.ceil(h / 2**n), math.ceil(w / 2**n)
        self.c0 = ch[n]
        self.fc = nn.Sequential(nn.Linear(latent_dim, ch[n] * self.h0 * self.w0), _act())
        layers: list[nn.Module] = []
        for i in reversed(range(n)):
            layers += [nn.ConvTranspose2d(ch[i + 1], ch[i], 4, stride=2, padding=1), _norm(ch[i], True), _act()]
            for _ in range(max(depth - 1, 0)):
                layers += [nn.Conv2d(ch[i], ch[i], 3, padding=1), _norm(ch[i], True), _act()]
        layers.append(nn.Conv2d(ch[0], c, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        y = self.net(self.fc(z).view(z.shape[0], self.c0, self.h0, self.w0))
        h, w = self.out_hw
        top, left = (y.shape[-2] - h) // 2, (y.shape[-1] - w) // 2
        return y[..., top:top + h, left:left + w]


class _MLPEncoder(nn.Module):
    def __init__(self, data_shape, out_dim, width, depth, spectral_norm):
        super().__init__()
        self.net = mlp(flat_dim(data_shape), out_dim, width, depth, spectral_norm=spectral_norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1))


class _MLPDecoder(nn.Module):
    def __init__(self, latent_dim, data_shape, width, depth):
        super().__init__()
        self.data_shape = tuple(data_shape)
        self.net = mlp(latent_dim, flat_dim(data_shape), width, depth)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(z.shape[0], *self.data_shape)


def build_encoder(arch: str, data_shape: Sequence[int], out_dim: int, width: int = 256, depth: int = 2,
                  *, spectral_norm: bool = False) -> nn.Module:
    """Network mapping a batch ``(N, *data_shape)`` to ``(N, out_dim)``."""
    check_arch(arch, data_shape)
    if arch == "mlp":
        return _MLPEncoder(data_shape, out_dim, width, depth, spectral_norm)
    return ConvEncoder(data_shape, out_dim, width, depth, spectral_norm=spectral_norm)


def build_decoder(arch: str, latent_dim: int, data_shape: Sequence[int], width: int = 256, depth: int = 2) -> nn.Module:
    """Network mapping ``(N, latent_dim)`` to ``(N, *data_shape)`` (no output activation)."""
    check_arch(arch, data_shape)
    if arch == "mlp":
        return _MLPDecoder(latent_dim, data_shape, width, depth)
    return ConvDecoder(latent_dim, data_shape, width, depth)


class ProjectionDiscriminator(nn.Module):
    """Class-conditional discriminator logits ``(N, 1)`` (Miyato & Koyama 2018).

    ``h = LeakyReLU(encoder(x))`` (``width`` features), ``logit = head(h) + <embed(y), h>``: the
    label enters as an inner product with the features rather than as an input, the form that
    matches the log density ratio of conditional distributions. Spectral norm (when on) also
    wraps ``head`` and ``embed``; the embedding is Xavier-initialised so that, without spectral
    norm (DP-SGD), the projection term starts at the scale of the head's.
    """

    def __init__(self, arch: str, data_shape: Sequence[int], n_classes: int, width: int = 256, depth: int = 2,
                 *, spectral_norm: bool = False):
        super().__init__()
        self.features = build_encoder(arch, data_shape, width, width, depth, spectral_norm=spectral_norm)
        self.act = _act()
        self.head = _wrap(nn.Linear(width, 1), spectral_norm)
        embed = nn.Embedding(n_classes, width)
        nn.init.xavier_uniform_(embed.weight)
        self.embed = _wrap(embed, spectral_norm)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        h = self.act(self.features(x))
        return self.head(h) + (self.embed(labels) * h).sum(1, keepdim=True)
