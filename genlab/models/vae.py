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
``reconstruction + beta * KL`` (the same number when ``beta == 1``).

Why ``beta = 0.25`` by default: with a Bernoulli likelihood on small grey images the
reconstruction term is weak against the KL term, and at β = 1 the decoded samples are blurred
averages of neighbouring records. On the embedded digits (evaluation feature space, m = 180;
``benchmarks/model_recipe.py --model vae`` reproduces it) the Fréchet distance to real records
was 5.1× the real-vs-real floor at β = 1, 3.3× at β = 0.5 and 2.9× at β = 0.25 (means over
seeds 0-4; seed 0: 4.66×, 3.25×, 2.73×), at the same training cost; the reported ``neg_elbo``
stays the β = 1 bound. The price, measured on seed 0: a decoder that reconstructs its members
more closely leaks more membership, the best attack's AUC (reconstruction loss) rising from
0.549 to 0.627 and the privacy audit's verdict from low to elevated. Checkpoints written before
keep their β.

Epoch means are accumulated as tensors and logged once per epoch (no per-step logging or host
syncs).

``val_loss`` is a deterministic function of the weights: the reparameterisation noise of
validation batch ``i`` comes from a private ``torch.Generator`` seeded with ``VAL_SEED + i``.

Class-conditional (``n_classes >= 2``; a CVAE, Sohn et al. 2015): ``q(z|x, y)`` and ``p(x|z, y)``
with the one-hot label appended to the encoder input (constant channels for the conv encoder,
columns for the MLP) and to the decoder's ``z``. The prior stays ``N(0, I)``, so sampling picks a
label and decodes ``z ~ N(0, I)`` with it. The label code has no parameters of its own: DP-SGD
(which trains the encoder and decoder) needs no change. Training batches must be labelled.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import lightning as L
import torch
import torch.nn.functional as F

from ._common import ClassConditional, EpochMeans, eval_no_grad, randn, seeded, with_code
from .backbones import build_decoder, build_encoder, check_arch, check_data_shape, coded_input_shape, flat_dim

LIKELIHOODS = ("auto", "bernoulli", "gaussian")
_LOG_2PI = math.log(2 * math.pi)
# initial observation log-variance (σ ≈ 0.14): small, so the latent code is used from the start
# instead of explaining the data as noise (posterior collapse); learned afterwards
LOG_VAR_X_INIT = -4.0


class VAE(ClassConditional, L.LightningModule):
    """VAE (or CVAE with ``n_classes``) with an MLP or conv encoder/decoder following ``data_shape``."""

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
        beta: float = 0.25,
        likelihood: str = "auto",
        n_classes: int = 0,
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
        k = self.init_classes(n_classes)
        # plain types only, so checkpoints load with torch.load(weights_only=True)
        hp = dict(
            model_kind=self.model_kind, data_shape=data_shape, latent_dim=int(latent_dim), arch=str(arch),
            width=int(width), depth=int(depth), lr=float(lr), beta=float(beta), likelihood=likelihood,
        )
        if k:  # recorded only when conditional: unconditional checkpoints stay as they were
            hp["n_classes"] = k
        self.save_hyperparameters(hp)
        self.data_shape = tuple(data_shape)
        self.latent_dim = int(latent_dim)
        self.likelihood = likelihood
        self.code_as_channels = arch == "conv"
        self.encoder = build_encoder(arch, coded_input_shape(arch, data_shape, k), 2 * self.latent_dim,
                                     int(width), int(depth))
        self.decoder = build_decoder(arch, self.latent_dim + k, data_shape, int(width), int(depth))
        if likelihood == "gaussian":
            self.log_var_x = torch.nn.Parameter(torch.full((flat_dim(data_shape),), LOG_VAR_X_INIT))
        self._means = EpochMeans()
        self.epoch_metrics: dict[str, torch.Tensor] = {}  # all epoch means, see EpochMeans.log

    # ---------------------------------------------------------------- model
    def _code(self, labels, n: int) -> torch.Tensor | None:
        """One-hot code of ``labels`` (required when conditional; ``None`` when unconditional)."""
        return self.one_hot(self.check_labels(labels, n))

    def _encode(self, x: torch.Tensor, code: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(with_code(x, code, as_channels=self.code_as_channels)).chunk(2, dim=1)
        return mu, logvar.clamp(-12.0, 8.0)

    def encode(self, x: torch.Tensor, labels=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior ``q(z|x)`` (``q(z|x, y)`` when conditional): ``(mu, logvar)``, each ``(N, latent_dim)``."""
        return self._encode(x, self._code(labels, x.shape[0]))

    def _decode_raw(self, z: torch.Tensor, labels=None) -> torch.Tensor:
        """Decoder output (logits for Bernoulli) for ``z`` (and ``labels`` when conditional)."""
        return self.decoder(with_code(z, self._code(labels, z.shape[0])))

    def decode(self, z: torch.Tensor, labels=None) -> torch.Tensor:
        """Data-space mean for latent codes ``z``: probabilities (Bernoulli) or the Gaussian mean."""
        out = self._decode_raw(z, labels)
        return torch.sigmoid(out) if self.likelihood == "bernoulli" else out

    def _nll(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.likelihood == "bernoulli":
            return F.binary_cross_entropy_with_logits(out, x, reduction="none").flatten(1).sum(1)
        lv = self.log_var_x.clamp(min=-9.0)
        sq = (x - out).flatten(1).pow(2)
        return 0.5 * (sq * torch.exp(-lv) + lv + _LOG_2PI).sum(1)

    def loss_terms(self, x: torch.Tensor, generator: torch.Generator | None = None,
                   labels=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-record reconstruction NLL and KL(q(z|x) || N(0, I)), in nats (one z sample).

        ``generator`` (a CPU ``torch.Generator``) draws the reparameterisation noise; ``None``
        uses the global torch RNG. ``labels`` ``(N,)``: required by a conditional model.
        """
        code = self._code(labels, x.shape[0])
        mu, logvar = self._encode(x, code)
        eps = randn(mu.shape, generator, mu.device).to(mu.dtype)
        z = mu + torch.exp(0.5 * logvar) * eps
        rec = self._nll(self.decoder(with_code(z, code)), x)
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(1)
        return rec, kl

    def neg_elbo(self, x: torch.Tensor, generator: torch.Generator | None = None, labels=None) -> torch.Tensor:
        """Negative ELBO per record (β = 1), shape ``(N,)``, in nats; one Monte-Carlo sample of z.

        A conditional model scores ``-log p(x|y)``'s bound and needs ``labels``. Runs in the
        module's current mode with gradients as the caller set them (wrap it in
        ``torch.no_grad()`` for scoring).
        """
        rec, kl = self.loss_terms(x, generator, labels)
        return rec + kl

    def reconstruct(self, x: torch.Tensor, labels=None) -> torch.Tensor:
        """Decode the posterior mean (z = mu); eval mode, no gradients (the mode is restored)."""
        with eval_no_grad(self):
            return self.decode(self.encode(x, labels)[0], labels)

    def sample(self, n: int, seed: int | None = None, labels=None) -> torch.Tensor:
        """``n`` samples ``(n, *data_shape)``: the decoder mean at z ~ N(0, I) (see ``sample_latent``
        for seed and labels)."""
        return self.sample_latent(n, seed, labels, self.decode)

    # ------------------------------------------------------------ lightning
    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)

    def on_train_epoch_start(self) -> None:
        self._means.reset("train")

    def training_step(self, batch, batch_idx):
        x = batch[0]
        rec, kl = self.loss_terms(x, labels=self.batch_labels(batch))
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
        rec, kl = self.loss_terms(x, gen, self.batch_labels(batch))
        self._means.add("val", x.shape[0], loss=(rec + self.hparams.beta * kl).mean(), rec=rec.mean(), kl=kl.mean())

    def on_validation_epoch_end(self) -> None:
        self._means.log(self, "val", self.LOGGED)
