"""Variational auto-encoder (Kingma & Welling 2014) as a LightningModule.

Likelihoods
-----------
- ``"bernoulli"`` (images in [0, 1]): the decoder outputs logits; the reconstruction term is the
  binary cross-entropy summed over pixels (non-negative also for grey values), ``decode`` and
  ``sample`` return the probabilities ``sigmoid(logits)``.
- ``"gaussian"`` (real-valued data such as the 2-D toy sets): ``N(x; decoder(z), diag σ²)`` with a
  *learned* per-dimension log-variance ``log_var_x`` (one parameter per data dimension, shared by
  all records, clamped to ≥ -9, initialised to -4 so that the latent code is used from the
  start). It adapts to the scale of the data, so no hand-tuned weight between reconstruction and
  KL is needed. The NLL is a density in nats and can be negative.
  ``decode`` and ``sample`` return the mean (no observation noise added).
- ``"auto"``: Bernoulli for image shapes ``(C, H, W)``, Gaussian otherwise.

Losses are per record, in nats, summed over data dimensions. ``neg_elbo`` is the true negative
ELBO (β = 1); the training objective and the logged ``train_loss`` / ``val_loss`` are
``reconstruction + beta * KL`` (the same number when ``beta == 1``). Epoch means are accumulated
as tensors and logged once per epoch (no per-step logging or host syncs).

``val_loss`` is a deterministic function of the weights: the reparameterisation noise of
validation batch ``i`` comes from a private ``torch.Generator`` seeded with ``VAL_SEED + i``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import lightning as L
import torch
import torch.nn.functional as F

from ._common import EpochMeans, eval_no_grad, randn, seeded
from .backbones import build_decoder, build_encoder, check_arch, check_data_shape, flat_dim

LIKELIHOODS = ("auto", "bernoulli", "gaussian")
_LOG_2PI = math.log(2 * math.pi)
# initial observation log-variance (σ ≈ 0.14): small, so the latent code is used from the start
# instead of explaining the data as noise (posterior collapse); learned afterwards
LOG_VAR_X_INIT = -4.0


class VAE(L.LightningModule):
    """VAE with an MLP or conv encoder/decoder following ``data_shape``."""

    model_kind = "vae"
    VAL_SEED = 20_240_601
    LOGGED = ("train_loss", "val_loss")  # through self.log (callback_metrics)

    def __init__(
        self,
        data_shape: Sequence[int],
        latent_dim: int = 16,
        arch: str = "mlp",
        width: int = 256,
        depth: int = 2,
        lr: float = 1e-3,
        beta: float = 1.0,
        likelihood: str = "auto",
    ):
        super().__init__()
        data_shape = check_data_shape(data_shape)
        check_arch(arch, data_shape)
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {list(LIKELIHOODS)}, got {likelihood!r}")
        if likelihood == "auto":
            likelihood = "bernoulli" if len(data_shape) == 3 else "gaussian"
        for name, v in (("latent_dim", latent_dim), ("width", width), ("depth", depth)):
            if int(v) != v or v < (0 if name == "depth" else 1):
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr!r}")
        if not beta >= 0:
            raise ValueError(f"beta must be >= 0, got {beta!r}")
        # plain types only, so checkpoints load with torch.load(weights_only=True)
        self.save_hyperparameters(dict(
            model_kind=self.model_kind, data_shape=data_shape, latent_dim=int(latent_dim), arch=str(arch),
            width=int(width), depth=int(depth), lr=float(lr), beta=float(beta), likelihood=likelihood,
        ))
        self.data_shape = tuple(data_shape)
        self.latent_dim = int(latent_dim)
        self.likelihood = likelihood
        self.encoder = build_encoder(arch, data_shape, 2 * self.latent_dim, int(width), int(depth))
        self.decoder = build_decoder(arch, self.latent_dim, data_shape, int(width), int(depth))
        if likelihood == "gaussian":
            self.log_var_x = torch.nn.Parameter(torch.full((flat_dim(data_shape),), LOG_VAR_X_INIT))
        self._means = EpochMeans()
        self.epoch_metrics: dict[str, torch.Tensor] = {}  # all epoch means, see EpochMeans.log

    # ---------------------------------------------------------------- model
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior ``q(z|x)``: ``(mu, logvar)``, each ``(N, latent_dim)``."""
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar.clamp(-12.0, 8.0)

    def _decode_raw(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Data-space mean for latent codes ``z``: probabilities (Bernoulli) or the Gaussian mean."""
        out = self._decode_raw(z)
        return torch.sigmoid(out) if self.likelihood == "bernoulli" else out

    def _nll(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.likelihood == "bernoulli":
            return F.binary_cross_entropy_with_logits(out, x, reduction="none").flatten(1).sum(1)
        lv = self.log_var_x.clamp(min=-9.0)
        sq = (x - out).flatten(1).pow(2)
        return 0.5 * (sq * torch.exp(-lv) + lv + _LOG_2PI).sum(1)

    def loss_terms(self, x: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-record reconstruction NLL and KL(q(z|x) || N(0, I)), in nats (one z sample).

        ``generator`` (a CPU ``torch.Generator``) draws the reparameterisation noise; ``None``
        uses the global torch RNG.
        """
        mu, logvar = self.encode(x)
        eps = randn(mu.shape, generator, mu.device).to(mu.dtype)
        z = mu + torch.exp(0.5 * logvar) * eps
        rec = self._nll(self._decode_raw(z), x)
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(1)
        return rec, kl

    def neg_elbo(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Negative ELBO per record (β = 1), shape ``(N,)``, in nats; one Monte-Carlo sample of z.

        Runs in the module's current mode with gradients as the caller set them (wrap it in
        ``torch.no_grad()`` for scoring).
        """
        rec, kl = self.loss_terms(x, generator)
        return rec + kl

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Decode the posterior mean (z = mu); eval mode, no gradients (the mode is restored)."""
        with eval_no_grad(self):
            return self.decode(self.encode(x)[0])

    def sample(self, n: int, seed: int | None = None) -> torch.Tensor:
        """``n`` samples ``(n, *data_shape)``: the decoder mean at z ~ N(0, I).

        ``seed`` draws z from a private generator (same seed → same samples, global RNG untouched);
        ``None`` uses the global torch RNG. Eval mode and no gradients; the mode is restored.
        """
        z = randn((int(n), self.latent_dim), seeded(seed), self.device)
        with eval_no_grad(self):
            return self.decode(z)

    # ------------------------------------------------------------ lightning
    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)

    def on_train_epoch_start(self) -> None:
        self._means.reset("train")

    def training_step(self, batch, batch_idx):
        x = batch[0]
        rec, kl = self.loss_terms(x)
        loss = (rec + self.hparams.beta * kl).mean()
        self._means.add("train", x.shape[0], loss=loss)
        return loss

    def on_train_epoch_end(self) -> None:
        self._means.log(self, "train", self.LOGGED)

    def on_validation_epoch_start(self) -> None:
        self._means.reset("val")

    def validation_step(self, batch, batch_idx):
        x = batch[0]
        gen = seeded(self.VAL_SEED + batch_idx)
        rec, kl = self.loss_terms(x, gen)
        self._means.add("val", x.shape[0], loss=(rec + self.hparams.beta * kl).mean(), rec=rec.mean(), kl=kl.mean())

    def on_validation_epoch_end(self) -> None:
        self._means.log(self, "val", self.LOGGED)
