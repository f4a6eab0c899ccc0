"""Generative adversarial network (Goodfellow et al. 2014) as a LightningModule.

- Generator: the decoder backbone (``arch`` "mlp" or "conv"), output ``sigmoid`` for images
  ``(C, H, W)`` (pixels in [0, 1]) and identity for real-valued data such as the 2-D toy sets.
- Discriminator: the encoder backbone with spectral normalisation on every layer (Miyato et al.
  2018), no gradient penalty and no BatchNorm (DP-SGD friendly); it returns logits.
- Loss (``loss``): ``"hinge"`` (default; Lim & Ye 2017, Miyato et al. 2018)
  ``L_D = relu(1 - D(x)) + relu(1 + D(G(z)))``, ``L_G = -D(G(z))``; or ``"non_saturating"``
  (Goodfellow et al. 2014) ``L_D = softplus(-D(x)) + softplus(D(G(z)))``,
  ``L_G = softplus(-D(G(z)))``. Both are a sum of one term per discriminator row, which DP-SGD
  needs (below). Manual optimisation: one discriminator step per batch and a generator step every
  ``n_critic`` batches. Training noise comes from the global torch RNG (so a seeded run is
  reproducible and the training callback can checkpoint the RNG).
- Optimisers: Adam with ``betas=(beta1, beta2)``, by default (0, 0.9) (Miyato et al. 2018's
  setting for spectral-norm GANs with the hinge loss), ``lr_g=2e-4``. ``lr_d=None`` resolves to
  two time-scales (TTUR, Heusel et al. 2017) for the unconditional GAN, the discriminator at
  4x the generator's rate, and to the generator's rate for the conditional one: measured on
  digits, two time-scales left the conditional generator ignoring its labels (conditional
  accuracy 0.46-0.62 against 0.98 with one rate) while they took the unconditional FD from 3.0x
  to 1.8x the real-vs-real floor.
- EMA (``ema_decay > 0``, default 0.999; Yazıcı et al. 2019): ``generator_ema``, a copy of the
  generator without gradients, is updated after every generator step with decay
  ``min(ema_decay, (1 + n) / (10 + n))`` (n = generator steps so far: a warm-up, so that the
  average never holds much of the initial weights); ``sample`` and validation generate from it,
  training from the live generator. ``ema_decay=0`` keeps no copy.
- Why this recipe: on digits (MLP, 100 epochs, seed 0; FD in the evaluation classifier's
  feature space, as it was before it learnt its "not a record" class, against the real-vs-real
  floor; ``benchmarks/model_recipe.py`` reproduces the comparison) the old default
  (non-saturating, ``lr`` 2e-4 for both, betas (0.5, 0.999), no EMA) reached 5.9x the floor
  (conditional 6.4x), the hinge loss alone 6.4x, the EMA alone 4.7x, and this recipe 1.8x
  (conditional 1.7x, conditional accuracy 0.98) at about the same training time.
- ``spectral_norm=False`` (set by DP-SGD training, :mod:`genlab.train.dp`): a plain discriminator
  (Opacus cannot compute per-sample gradients through the spectral-norm parametrisation; the
  conv backbone then has GroupNorm). Under DP each row of the discriminator's real+fake batch is
  its own per-sample clipping unit (each member is in exactly one; Opacus refuses to accumulate
  two backward passes under Poisson sampling, and two forward passes with one backward would
  pair activations by autograd's order), the loss is the mean over the 2n rows, and the
  generator's step runs with the discriminator frozen and Opacus' hooks off, so it never
  reaches the discriminator's per-sample gradients.
- Logged per epoch: ``train_loss_d``, ``train_loss_g`` (means over records).
- Validation: ``val_loss`` is the discriminator's loss on the real validation records against as
  many records from the sampling generator (the EMA copy when there is one), whose noise for
  batch ``i`` comes from a private generator seeded with ``VAL_SEED + i`` (a deterministic
  function of the weights). Also ``val_d_real`` / ``val_d_fake``:
  the mean probability D gives real / generated records. Note that a *lower* ``val_loss`` means a
  discriminator that separates better, i.e. not necessarily a better generator; use it for
  checkpoint selection with that in mind.
- Class-conditional (``n_classes >= 2``): the generator gets the one-hot label appended to z and
  the discriminator is a projection discriminator (:class:`.backbones.ProjectionDiscriminator`).
  Training batches must be labelled; the generated half of each batch gets labels drawn from
  ``class_prior`` (global RNG, after z) rather than the real batch's labels, so that under DP-SGD
  each member still reaches exactly one row of the discriminator's batch. Validation pairs each
  real record's label with the generated record of the same row.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import lightning as L
import torch
import torch.nn.functional as F

from ._common import ClassConditional, EpochMeans, eval_no_grad, randn, seeded, with_code
from .backbones import ProjectionDiscriminator, build_decoder, build_encoder, check_arch, check_data_shape


LOSSES = ("hinge", "non_saturating")


def discriminator_terms(loss: str, d_real: torch.Tensor, d_fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The discriminator's loss per row: ``(terms of the real rows, terms of the fake rows)``."""
    if loss == "hinge":
        return F.relu(1 - d_real), F.relu(1 + d_fake)
    return F.softplus(-d_real), F.softplus(d_fake)


def generator_loss(loss: str, d_fake: torch.Tensor) -> torch.Tensor:
    return -d_fake.mean() if loss == "hinge" else F.softplus(-d_fake).mean()


class GAN(ClassConditional, L.LightningModule):
    """Spectral-norm GAN with an MLP or conv generator/discriminator following ``data_shape``."""

    model_kind = "gan"
    # hyper-parameters that checkpoints written before they existed lack: their values then
    CHECKPOINT_DEFAULTS = {"loss": "non_saturating", "beta2": 0.999, "ema_decay": 0.0}
    LR_D_OVER_LR_G = 4.0  # the unconditional default's two time-scales
    VAL_SEED = 20_240_602
    LOGGED = ("train_loss_d", "train_loss_g", "val_loss", "val_d_real")  # through self.log (callback_metrics)

    def __init__(
        self,
        data_shape: Sequence[int],
        latent_dim: int = 16,
        arch: str = "mlp",
        width: int = 256,
        depth: int = 2,
        lr_g: float = 2e-4,
        lr_d: float | None = None,
        beta1: float = 0.0,
        n_critic: int = 1,
        spectral_norm: bool = True,
        loss: str = "hinge",
        beta2: float = 0.9,
        ema_decay: float = 0.999,
        n_classes: int = 0,
    ):
        super().__init__()
        data_shape = check_data_shape(data_shape)
        check_arch(arch, data_shape)
        for name, v in (("latent_dim", latent_dim), ("width", width), ("depth", depth), ("n_critic", n_critic)):
            if int(v) != v or v < (0 if name == "depth" else 1):
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if lr_d is None:  # see the module docstring: two time-scales unconditional only
            lr_d = lr_g * (1.0 if n_classes else self.LR_D_OVER_LR_G)
        for name, v in (("lr_g", lr_g), ("lr_d", lr_d)):
            if not v > 0:
                raise ValueError(f"{name} must be > 0, got {v!r}")
        for name, v in (("beta1", beta1), ("beta2", beta2), ("ema_decay", ema_decay)):
            if not 0 <= v < 1:
                raise ValueError(f"{name} must be in [0, 1), got {v!r}")
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {list(LOSSES)}, got {loss!r}")
        self.automatic_optimization = False
        k = self.init_classes(n_classes)
        # plain types only, so checkpoints load with torch.load(weights_only=True)
        hp = dict(
            model_kind=self.model_kind, data_shape=data_shape, latent_dim=int(latent_dim), arch=str(arch),
            width=int(width), depth=int(depth), lr_g=float(lr_g), lr_d=float(lr_d), beta1=float(beta1),
            n_critic=int(n_critic), loss=str(loss), beta2=float(beta2), ema_decay=float(ema_decay),
        )
        if not spectral_norm:  # recorded only when off: default checkpoints stay as they were
            hp["spectral_norm"] = False
        if k:  # likewise recorded only when conditional
            hp["n_classes"] = k
        self.save_hyperparameters(hp)
        self.dp_per_sample = False  # set by genlab.train.dp.make_private
        self.dp_hooks = None  # Opacus' per-sample gradient hooks on the discriminator (DP only)
        self.data_shape = tuple(data_shape)
        self.latent_dim = int(latent_dim)
        self.is_image = len(data_shape) == 3
        self.generator = build_decoder(arch, self.latent_dim + k, data_shape, int(width), int(depth))
        if k:
            self.discriminator = ProjectionDiscriminator(arch, data_shape, k, int(width), int(depth),
                                                         spectral_norm=bool(spectral_norm))
        else:
            self.discriminator = build_encoder(arch, data_shape, 1, int(width), int(depth),
                                               spectral_norm=bool(spectral_norm))
        self.generator_ema = None
        if ema_decay > 0:
            self.generator_ema = copy.deepcopy(self.generator).requires_grad_(False)
            self.register_buffer("ema_steps", torch.zeros((), dtype=torch.long))
        self._means = EpochMeans()
        self.epoch_metrics: dict[str, torch.Tensor] = {}  # all epoch means, see EpochMeans.log

    # ---------------------------------------------------------------- model
    def generate(self, z: torch.Tensor, labels=None, *, ema: bool = False) -> torch.Tensor:
        """Generator output for noise ``z`` ``(N, latent_dim)`` (and ``labels`` ``(N,)``, required
        when conditional) → ``(N, *data_shape)``; ``ema=True``: from the EMA copy when there is one."""
        net = self.generator_ema if ema and self.generator_ema is not None else self.generator
        out = net(with_code(z, self.one_hot(self.check_labels(labels, z.shape[0]))))
        return torch.sigmoid(out) if self.is_image else out

    def _generate_for_sampling(self, z: torch.Tensor, labels=None) -> torch.Tensor:
        return self.generate(z, labels, ema=True)

    def discriminate(self, x: torch.Tensor, labels=None) -> torch.Tensor:
        """Discriminator logits ``(N,)`` (positive = "real"); ``labels`` required when conditional."""
        labels = self.check_labels(labels, x.shape[0])
        out = self.discriminator(x) if labels is None else self.discriminator(x, labels)
        return out.squeeze(1)

    def sample(self, n: int, seed: int | None = None, labels=None) -> torch.Tensor:
        """``n`` generated records ``(n, *data_shape)`` (see ``sample_latent`` for seed and labels)."""
        return self.sample_latent(n, seed, labels, self._generate_for_sampling)

    def _d_loss(self, x: torch.Tensor, fake: torch.Tensor, labels: torch.Tensor | None = None,
                fake_labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # one pass over real and fake together (one spectral-norm power iteration per D step)
        both = None if labels is None else torch.cat([labels, fake_labels])
        logits = self.discriminate(torch.cat([x, fake]), both)
        d_real, d_fake = logits[: x.shape[0]], logits[x.shape[0]:]
        real_terms, fake_terms = discriminator_terms(self.hparams.loss, d_real, d_fake)
        return real_terms.mean() + fake_terms.mean(), d_real, d_fake

    # ------------------------------------------------------------ lightning
    def configure_optimizers(self):
        hp = self.hparams
        opt_g = torch.optim.Adam(self.generator.parameters(), lr=hp.lr_g, betas=(hp.beta1, hp.beta2))
        opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=hp.lr_d, betas=(hp.beta1, hp.beta2))
        return [opt_g, opt_d]

    def on_train_epoch_start(self) -> None:
        self._means.reset("train")

    def training_step(self, batch, batch_idx):
        x, y = batch[0], self.batch_labels(batch)
        n = x.shape[0]
        opt_g, opt_d = self.optimizers()
        z = randn((n, self.latent_dim), None, x.device)
        fake_y = None if y is None else self.sample_labels(n).to(x.device)
        fake = self.generate(z, fake_y)

        loss_d, d_real, d_fake = self._d_loss(x, fake.detach(), y, fake_y)
        opt_d.zero_grad(set_to_none=True)
        if self.dp_per_sample:
            # DP-SGD: every row of the real+fake batch is its own per-sample clipping unit (each
            # member in exactly one); the mean over the 2n rows makes Opacus' per-sample
            # gradients exactly each row's loss gradient (L_D / 2, same minimiser)
            self.manual_backward(torch.cat(discriminator_terms(self.hparams.loss, d_real, d_fake)).mean())
        else:
            self.manual_backward(loss_d)
        opt_d.step()
        self._means.add("train", n, loss_d=loss_d)

        if batch_idx % self.hparams.n_critic == 0:
            frozen = self.dp_per_sample  # DP: keep the G step out of D's per-sample gradients
            if frozen:
                self.discriminator.requires_grad_(False)
                self.dp_hooks.disable_hooks()
            try:
                loss_g = generator_loss(self.hparams.loss, self.discriminate(fake, fake_y))
                opt_g.zero_grad(set_to_none=True)
                self.manual_backward(loss_g)
                opt_g.step()
                self.update_ema()
            finally:
                if frozen:
                    self.discriminator.requires_grad_(True)
                    self.dp_hooks.enable_hooks()
            self._means.add("train", n, loss_g=loss_g)

    @torch.no_grad()
    def update_ema(self) -> None:
        if self.generator_ema is None:
            return
        n = int(self.ema_steps)
        decay = min(self.hparams.ema_decay, (1 + n) / (10 + n))
        for e, p in zip(self.generator_ema.parameters(), self.generator.parameters()):
            e.lerp_(p, 1 - decay)
        self.ema_steps += 1

    def on_train_epoch_end(self) -> None:
        self._means.log(self, "train", self.LOGGED)

    def on_validation_epoch_start(self) -> None:
        self._means.reset("val")

    def validation_step(self, batch, batch_idx):
        x, y = batch[0], self.batch_labels(batch)
        z = randn((x.shape[0], self.latent_dim), seeded(self.VAL_SEED + batch_idx), x.device)
        loss, d_real, d_fake = self._d_loss(x, self.generate(z, y, ema=True), y, y)
        self._means.add("val", x.shape[0], loss=loss, d_real=torch.sigmoid(d_real).mean(),
                        d_fake=torch.sigmoid(d_fake).mean())

    def on_validation_epoch_end(self) -> None:
        self._means.log(self, "val", self.LOGGED)
