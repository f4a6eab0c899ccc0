"""Denoising diffusion probabilistic model (Ho et al. 2020) as a LightningModule.

Forward process ``q(x_t | x_0) = N(sqrt(ab_t) x_0, (1 - ab_t) I)`` over ``timesteps`` steps
(``ab_t`` = alpha-bar, the cumulative product of ``1 - beta``), indices ``t = 0 … T-1`` as in
diffusers (index ``t`` is step ``t + 1`` of the paper).

- Schedules: ``"linear"`` (betas from 1e-4 to 0.02, rescaled by 1000/T so other T keep about the
  same alpha-bar curve; betas ≤ 0.999) and ``"cosine"`` (Nichol & Dhariwal 2021, s = 0.008, betas ≤ 0.999).
- Denoiser: predicts the noise ε (``"epsilon"`` parameterisation), loss = MSE(ε̂, ε) averaged over
  data dimensions. ``arch="unet"``: a small U-Net for images ``(C, H, W)`` (residual blocks with
  GroupNorm + SiLU, stride-2 down-sampling while the smaller side is ≥ 8, at most 3 times: 8→4,
  20→10→5, 64→32→16→8; nearest-neighbour up-sampling to the skip's size, so odd sides work).
  ``arch="mlp"``: a residual MLP for flat data such as the 2-D toy set. ``"auto"``: U-Net for
  images, MLP otherwise. Both get a sinusoidal time embedding. No BatchNorm (Opacus-friendly),
  deterministic on CPU.
- Data space: images in [0, 1] are modelled as ``x * 2 - 1``; predicted ``x_0`` is clamped to
  [-1, 1] while sampling and the samples are returned in [0, 1]. Real-valued data are modelled as
  they are (no clamping).
- EMA: ``self.ema`` is a copy of the denoiser (no gradients, not in the optimiser) updated after
  every optimiser step with decay ``min(ema_decay, (1 + n) / (10 + n))`` (n = steps so far: a warm-up
  so that short CPU runs still get a useful average). It is part of the state dict, so it is saved
  in checkpoints and restored on resume; sampling, ``denoising_loss`` (by default) and ``val_loss``
  use it.
- Sampling (:meth:`DDPM.sample`): one generalised DDIM loop (Song et al. 2021) over a decreasing
  sub-sequence of timesteps (``0, T/S, 2T/S, …`` for S steps, the DDIM paper's spacing). ``method="ddpm"``: ancestral sampling (η = 1; with all T steps this is
  exactly Ho et al.'s sampler with variance β̃_t); ``method="ddim"``: deterministic (η = 0), 50 steps
  by default. All noise comes from a private CPU generator when ``seed`` is given.
- Logging: ``train_loss`` and ``val_loss`` (epoch means of the per-record loss). ``val_loss`` is a
  deterministic function of the weights: the timesteps and noise of validation batch ``i`` come
  from a private generator seeded with ``VAL_SEED + i``; it is the EMA denoiser's loss.
- Class-conditional (``n_classes >= 2``): classifier-free guidance (Ho & Salimans 2022). One
  denoiser learns both ``ε(x_t, t, y)`` and the unconditional ``ε(x_t, t, ∅)`` (∅ = label index
  ``n_classes``): each training label is replaced by ∅ with probability ``cond_drop`` (global RNG,
  drawn after t and ε). Sampling uses ``ε_∅ + w (ε_y - ε_∅)`` with ``w = guidance_scale``
  (1: purely conditional; 0: unconditional, the label is ignored; > 1 trades diversity for
  label fidelity). Training batches must be labelled; ``val_loss`` is the conditional loss.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import lightning as L
import torch
from torch import nn

from ._common import ClassConditional, EpochMeans, eval_no_grad, randn, seeded
from .backbones import check_data_shape
from .denoisers import MLPDenoiser, UNet

ARCHS = ("auto", "unet", "mlp")
SCHEDULES = ("linear", "cosine")
METHODS = ("ddpm", "ddim")
DEFAULT_WIDTH = {"unet": 32, "mlp": 256}
DDIM_DEFAULT_STEPS = 50


# ------------------------------------------------------------------------------------ schedules
def alpha_bar_schedule(schedule: str, timesteps: int) -> torch.Tensor:
    """Alpha-bar ``ab_t`` for ``t = 0 … T-1`` (float64, strictly decreasing, in (0, 1))."""
    T = int(timesteps)
    if schedule == "linear":
        scale = 1000.0 / T
        betas = torch.linspace(scale * 1e-4, scale * 0.02, T, dtype=torch.float64).clamp(max=0.999)
    elif schedule == "cosine":
        s = 0.008

        def f(u):
            return math.cos((u + s) / (1 + s) * math.pi / 2) ** 2

        betas = torch.tensor([min(1 - f((i + 1) / T) / f(i / T), 0.999) for i in range(T)], dtype=torch.float64)
    else:
        raise ValueError(f"schedule must be one of {list(SCHEDULES)}, got {schedule!r}")
    return torch.cumprod(1.0 - betas, dim=0)


def ddim_step(x: torch.Tensor, eps: torch.Tensor, ab: torch.Tensor, ab_prev: torch.Tensor, *,
              eta: float = 0.0, clamp: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """One DDIM update (Song et al. 2021) of ``x`` at level ᾱ = ``ab`` to level ``ab_prev``, given the
    denoiser's ``eps``: the predicted clean record x₀, then ``√ᾱ' x₀ + √(1 − ᾱ' − σ²) ε``; returns it
    (the caller adds ``σ`` × fresh noise when ``eta > 0``) and σ. ``clamp``: x₀ clipped to the data
    range [-1, 1] and ε recomputed from it (images). Going up in noise (``ab_prev < ab``, DDIM
    inversion) gives σ = 0."""
    x0 = (x - (1 - ab).sqrt() * eps) / ab.sqrt()
    if clamp:
        x0 = x0.clamp(-1, 1)
        eps = (x - ab.sqrt() * x0) / (1 - ab).sqrt()
    sigma = (eta * ((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)).clamp(min=0).sqrt() if eta
             else torch.zeros_like(ab_prev))
    return ab_prev.sqrt() * x0 + (1 - ab_prev - sigma**2).clamp(min=0).sqrt() * eps, sigma


def _check_guidance_scale(w) -> None:
    if not 0 <= w < math.inf:
        raise ValueError(f"guidance_scale must be a finite number >= 0, got {w!r}")


# ------------------------------------------------------------------------------------ module
class DDPM(ClassConditional, L.LightningModule):
    """ε-prediction DDPM with a U-Net (images) or MLP (flat data) denoiser, EMA, DDPM/DDIM sampling."""

    model_kind = "ddpm"
    VAL_SEED = 20_240_603
    LOGGED = ("train_loss", "val_loss")  # through self.log (callback_metrics)

    def __init__(
        self,
        data_shape: Sequence[int],
        arch: str = "auto",
        width: int | None = None,
        timesteps: int = 1000,
        schedule: str = "cosine",
        lr: float = 1e-3,
        ema_decay: float = 0.999,
        n_classes: int = 0,
        cond_drop: float = 0.1,
        guidance_scale: float = 2.0,
        sampler: str = "ddim",
        sampling_steps: int | None = None,
    ):
        super().__init__()
        data_shape = check_data_shape(data_shape)
        if arch not in ARCHS:
            raise ValueError(f"arch must be one of {list(ARCHS)}, got {arch!r}")
        if arch == "auto":
            arch = "unet" if len(data_shape) == 3 else "mlp"
        if arch == "unet" and len(data_shape) != 3:
            raise ValueError(f"arch='unet' needs image data of shape (C, H, W), got data_shape={list(data_shape)}")
        width = DEFAULT_WIDTH[arch] if width is None else width
        for name, v in (("width", width), ("timesteps", timesteps)):
            if int(v) != v or v < (2 if name == "timesteps" else 1):
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {list(SCHEDULES)}, got {schedule!r}")
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr!r}")
        if not 0 <= ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay!r}")
        if not 0 <= cond_drop < 1:
            raise ValueError(f"cond_drop must be in [0, 1), got {cond_drop!r}")
        _check_guidance_scale(guidance_scale)
        if sampler not in METHODS:
            raise ValueError(f"sampler must be one of {list(METHODS)}, got {sampler!r}")
        if sampling_steps is not None and (int(sampling_steps) != sampling_steps
                                           or not 1 <= sampling_steps <= timesteps):
            raise ValueError(f"sampling_steps must be None or an int in [1, timesteps={timesteps}], "
                             f"got {sampling_steps!r}")
        k = self.init_classes(n_classes)
        # plain types only (resolved arch/width), so checkpoints load with torch.load(weights_only=True)
        hp = dict(
            model_kind=self.model_kind, data_shape=data_shape, arch=str(arch), width=int(width),
            timesteps=int(timesteps), schedule=str(schedule), lr=float(lr), ema_decay=float(ema_decay),
            sampler=str(sampler), sampling_steps=None if sampling_steps is None else int(sampling_steps),
        )
        if k:  # recorded only when conditional: unconditional checkpoints stay as they were
            hp.update(n_classes=k, cond_drop=float(cond_drop), guidance_scale=float(guidance_scale))
        self.save_hyperparameters(hp)
        self.guidance_scale = float(guidance_scale)
        self.data_shape = tuple(data_shape)
        self.is_image = len(data_shape) == 3
        self.timesteps = int(timesteps)
        self.net = (UNet if arch == "unet" else MLPDenoiser)(data_shape, int(width), k)
        self.ema = copy.deepcopy(self.net).requires_grad_(False)
        self.register_buffer("alphas_cumprod", alpha_bar_schedule(schedule, timesteps).float())
        self.register_buffer("ema_steps", torch.zeros((), dtype=torch.long))
        self._means = EpochMeans()
        self.epoch_metrics: dict[str, torch.Tensor] = {}  # all epoch means, see EpochMeans.log

    # ---------------------------------------------------------------- model
    def to_model_space(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2 - 1 if self.is_image else x

    def to_data_space(self, x: torch.Tensor) -> torch.Tensor:
        return ((x + 1) / 2).clamp(0, 1) if self.is_image else x

    def _loss(self, net: nn.Module, x: torch.Tensor, t: torch.Tensor, eps: torch.Tensor,
              labels: torch.Tensor | None = None) -> torch.Tensor:
        """Per-record ε-MSE of ``net`` at timesteps ``t`` for data-space ``x`` and noise ``eps``
        (label indices ``labels``, ``n_classes`` = null, for a conditional net)."""
        x0 = self.to_model_space(x)
        ab = self.alphas_cumprod[t].view(-1, *([1] * (x0.dim() - 1)))
        xt = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
        return (net(xt, t, labels) - eps).pow(2).flatten(1).mean(1)

    def _null(self, n: int) -> torch.Tensor:
        """``n`` null labels (index ``n_classes``): the unconditional denoiser."""
        return torch.full((n,), self.n_classes, dtype=torch.long, device=self.device)

    def denoising_loss(self, x: torch.Tensor, t, generator: torch.Generator | None = None,
                       ema: bool = True, labels=None) -> torch.Tensor:
        """Per-record denoising loss ``||ε̂(x_t, t) - ε||²`` (mean over dimensions), shape ``(N,)``.

        ``x`` in data space; ``t`` an int or an ``(N,)`` tensor of timesteps in ``[0, T)``;
        ``generator`` (CPU) draws ε (``None``: the global RNG). ``ema=True`` scores the EMA
        denoiser (the one that samples), ``False`` the trained weights. Conditional model:
        ``labels`` ``(N,)`` score the conditional denoiser, ``None`` the unconditional one (null
        label: a label-free score). Runs with gradients as the caller set them (wrap it in
        ``torch.no_grad()`` for scoring).
        """
        n = x.shape[0]
        labels = self.check_labels(labels, n, required=False)
        if self.n_classes and labels is None:
            labels = self._null(n)
        t = torch.as_tensor(t, dtype=torch.long, device=x.device)
        t = t.expand(n) if t.dim() == 0 else t
        if t.shape != (n,) or t.min() < 0 or t.max() >= self.timesteps:
            raise ValueError(f"t must be an int or a ({n},) tensor of timesteps in [0, {self.timesteps})")
        eps = randn(x.shape, generator, x.device).to(x.dtype)
        return self._loss(self.ema if ema else self.net, x, t, eps, labels)

    def sample_timesteps(self, method: str, steps: int | None) -> list[int]:
        """The decreasing timesteps the sampler visits (all T for ``"ddpm"`` unless ``steps``)."""
        if method not in METHODS:
            raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
        if steps is None:
            steps = self.timesteps if method == "ddpm" else min(DDIM_DEFAULT_STEPS, self.timesteps)
        if int(steps) != steps or not 1 <= steps <= self.timesteps:
            raise ValueError(f"steps must be an int in [1, {self.timesteps}], got {steps!r}")
        # "leading" spacing of the DDIM paper: 0, T/S, 2T/S, … (all T when steps == T). It stops short of
        # T-1, where the cosine schedule's alpha-bar is ~1e-9 and x0 = (x - sqrt(1-ab) eps) / sqrt(ab)
        # would amplify the denoiser's error by ~1e4 in the first deterministic step.
        ts = (torch.arange(int(steps), dtype=torch.float64) * self.timesteps / int(steps)).floor().long()
        return ts.flip(0).tolist()

    def guided_eps(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None,
                   guidance_scale: float) -> torch.Tensor:
        """The sampler's ε from the EMA denoiser: ``ε_∅ + w (ε_y - ε_∅)`` for checked ``labels``
        (``None``: the unconditional model's ε). ``w`` = 0 or 1 needs one pass (and is then exactly
        the null-label or the conditional denoiser); otherwise both run as one batch."""
        if labels is None:
            return self.ema(x, t)
        w = float(guidance_scale)
        if w == 0:
            return self.ema(x, t, self._null(x.shape[0]))
        if w == 1:
            return self.ema(x, t, labels)
        eps_c, eps_u = self.ema(torch.cat([x, x]), torch.cat([t, t]),
                                torch.cat([labels, self._null(x.shape[0])])).chunk(2)
        return eps_u + w * (eps_c - eps_u)

    def sample(self, n: int, seed: int | None = None, steps: int | None = None, method: str | None = None,
               eta: float | None = None, labels=None, guidance_scale: float | None = None) -> torch.Tensor:
        """``n`` samples ``(n, *data_shape)`` in data space from the EMA denoiser.

        ``method=None``: the model's ``sampler`` hyper-parameter with its ``sampling_steps`` (what
        the reports use; DDIM in 50 steps by default). ``method="ddpm"``: ancestral sampling
        (η = 1) over all T steps (or ``steps`` evenly spaced ones); ``"ddim"``: deterministic DDIM
        (η = 0), ``steps`` defaults to 50. ``eta`` overrides
        the method's η. ``seed`` draws all noise from a private generator (same seed → same
        samples, global RNG untouched); ``None`` uses the global torch RNG. Conditional:
        ``labels`` ``(n,)`` (or drawn with ``sample_labels(n, seed)`` when ``None``) and
        ``guidance_scale`` (default: the model's). Eval mode and no gradients; the mode is restored.
        """
        if method is None:
            method = self.hparams.sampler
            steps = self.hparams.sampling_steps if steps is None else steps
        ts = self.sample_timesteps(method, steps)
        eta = (1.0 if method == "ddpm" else 0.0) if eta is None else float(eta)
        labels = self.labels_for_sampling(int(n), seed, labels)
        if guidance_scale is None:
            guidance_scale = self.guidance_scale
        elif not self.n_classes:
            raise ValueError("guidance_scale given, but this ddpm is unconditional (n_classes=0)")
        else:
            _check_guidance_scale(guidance_scale)
        gen = seeded(seed)
        shape = (int(n), *self.data_shape)
        ab_all = self.alphas_cumprod
        with eval_no_grad(self):
            x = randn(shape, gen, self.device)
            for i, t in enumerate(ts):
                ab = ab_all[t]
                ab_prev = ab_all[ts[i + 1]] if i + 1 < len(ts) else torch.ones((), device=ab.device)
                eps = self.guided_eps(x, torch.full((shape[0],), t, dtype=torch.long, device=self.device),
                                      labels, guidance_scale)
                x, sigma = ddim_step(x, eps, ab, ab_prev, eta=eta, clamp=self.is_image)
                if eta > 0 and i + 1 < len(ts):
                    x = x + sigma * randn(shape, gen, self.device)
            return self.to_data_space(x)

    # ------------------------------------------------------------ lightning
    def configure_optimizers(self):
        return torch.optim.Adam(self.net.parameters(), lr=self.hparams.lr)

    @torch.no_grad()
    def update_ema(self) -> None:
        n = int(self.ema_steps)
        decay = min(self.hparams.ema_decay, (1 + n) / (10 + n))
        for e, p in zip(self.ema.parameters(), self.net.parameters()):
            e.lerp_(p, 1 - decay)
        self.ema_steps += 1

    def on_train_epoch_start(self) -> None:
        self._means.reset("train")

    def training_step(self, batch, batch_idx):
        x, y = batch[0], self.batch_labels(batch)
        t = torch.randint(0, self.timesteps, (x.shape[0],), device=x.device)
        eps = torch.randn_like(x)
        if y is not None:  # classifier-free guidance: the null label for a cond_drop share
            y = y.masked_fill(torch.rand(y.shape, device=y.device) < self.hparams.cond_drop, self.n_classes)
        loss = self._loss(self.net, x, t, eps, y).mean()
        self._means.add("train", x.shape[0], loss=loss)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        self.update_ema()

    def on_train_epoch_end(self) -> None:
        self._means.log(self, "train", self.LOGGED)

    def on_validation_epoch_start(self) -> None:
        self._means.reset("val")

    def validation_step(self, batch, batch_idx):
        x = batch[0]
        gen = seeded(self.VAL_SEED + batch_idx)
        t = torch.randint(0, self.timesteps, (x.shape[0],), generator=gen).to(x.device)
        loss = self.denoising_loss(x, t, gen, labels=self.batch_labels(batch))
        self._means.add("val", x.shape[0], loss=loss.mean())

    def on_validation_epoch_end(self) -> None:
        self._means.log(self, "val", self.LOGGED)
