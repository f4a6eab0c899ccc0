"""DP-SGD training with Opacus 1.6 inside Lightning 2.6.

How it is wired, and why:

- The model keeps its own optimiser recipe (``configure_optimizers``); :func:`make_private`
  builds that optimiser once, hands it with the members' DataLoader to Opacus'
  ``make_private_with_epsilon`` (noise calibrated to reach ``target_epsilon`` at
  ``target_delta`` after ``epochs`` epochs, flat clipping at ``max_grad_norm``), and replaces the
  module's ``configure_optimizers`` with one returning the DP optimiser. Lightning's automatic
  optimisation then calls ``DPOptimizer.step(closure)``: clip per-sample gradients, add noise.
- Training uses the **Poisson-sampled** DataLoader Opacus returns (each record in each step
  independently with probability batch_size / N) — the sampling the accountant assumes.
- Per-sample gradients come from Opacus hooks on the trained sub-networks (``wrap_model=False``):
  the LightningModule is not wrapped, so checkpoint keys, ``load_model`` and every later notebook
  are unchanged.
- Supported: the VAE with a Bernoulli likelihood (images), MLP or conv backbones (GroupNorm is
  DP-compatible; there is no BatchNorm in genlab's backbones), the DDPM's denoiser ``net``
  (U-Net or MLP: Conv2d, Linear, GroupNorm, the conditional label Embedding — all layers Opacus
  has per-sample gradients for), and the GAN's **discriminator**
  (the generator sees members only through it, so it is post-processing of a DP discriminator).
  The DDPM's EMA copy is likewise post-processing: a running average of the DP-trained weights,
  outside the hooked network and the optimiser, with ``requires_grad=False``; Opacus never sees
  it. Conditional models (labels as one-hot inputs or an embedding) train the same way: a
  record's label is part of the record.
  For the GAN: the model must be built with ``spectral_norm=False`` (``model_from_params`` does
  so when ``dp=True``): Opacus 1.6's ``GradSampleModule`` raises NotImplementedError "trainable
  layer with buffers" on the spectral-norm parametrisation (its power-iteration vectors). The
  DP optimiser replaces the discriminator's Adam only; each row of the discriminator's
  real+fake batch is its own per-sample clipping unit (Opacus refuses two backward passes per
  step under Poisson sampling), and the generator's step runs with the discriminator frozen and
  Opacus' hooks off (:class:`genlab.models.gan.GAN`). One discriminator step per Poisson batch:
  the accountant's steps. Refused with a message: the Gaussian-likelihood VAE (its free
  observation log-variance is a bare parameter Opacus cannot compute per-sample gradients for),
  a spectral-norm GAN, and resuming a DP run (the accountant's history is not in the checkpoint).
  Beyond those, :func:`check_supported` refuses, naming it, any trained parameter of a layer
  type Opacus 1.6 has no per-sample gradient for, and :func:`make_private` any parameter the
  optimiser updates outside the hooked networks (it would be trained without clipping or noise).

The accountant's ε after training (:meth:`DPState.epsilon`) goes into the training report and
``artifacts/dp.json``, which the privacy audit reads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from genlab.ops.runs import atomic_write_text

DP_FILE = "dp.json"


class DPError(ValueError):
    """A model or setting DP-SGD training cannot handle here."""


@dataclass
class DPState:
    engine: Any
    optimizer: Any
    train_loader: DataLoader
    target_epsilon: float
    target_delta: float
    max_grad_norm: float
    noise_multiplier: float
    sample_rate: float
    accountant: str

    def epsilon(self) -> float:
        """The accountant's ε at ``target_delta`` for the steps actually taken."""
        return float(self.engine.get_epsilon(self.target_delta))

    def record(self, epochs_run: int) -> dict:
        return {"dp": True, "accountant": self.accountant, "epsilon": self.epsilon(),
                "delta": self.target_delta, "target_epsilon": self.target_epsilon,
                "max_grad_norm": self.max_grad_norm, "noise_multiplier": self.noise_multiplier,
                "sample_rate": self.sample_rate, "epochs_run": int(epochs_run),
                "sampling": "poisson"}


def check_supported(model, *, resume: bool = False) -> None:
    """Raise :class:`DPError`, naming the setting or parameter, if DP-SGD cannot train ``model``."""
    kind = getattr(model, "model_kind", type(model).__name__)
    if resume:
        raise DPError("dp=True with resume_from: the privacy accountant's history is not stored in "
                      "checkpoints, so a resumed DP run could not state its ε; train from scratch")
    if kind == "gan":
        if getattr(model, "hparams", {}).get("spectral_norm", True):
            raise DPError(
                "dp=True with model='gan': the discriminator must be built with "
                "spectral_norm=False (experiment.model_from_params does so when dp=True): its "
                "spectral-norm parametrisation keeps power-iteration buffers that Opacus 1.6 "
                "refuses (GradSampleModule: 'trainable layer with buffers')")
    elif kind not in ("vae", "ddpm"):
        raise DPError(f"dp=True: DP-SGD is implemented for model='vae', 'gan' and 'ddpm' only, got "
                      f"model={kind!r}")
    elif kind == "vae" and getattr(model, "likelihood", None) != "bernoulli":
        raise DPError("dp=True: the VAE needs likelihood='bernoulli' (image data); the Gaussian "
                      "likelihood's free log-variance has no per-sample gradient in Opacus, got "
                      f"likelihood={getattr(model, 'likelihood', None)!r}")
    _check_layers(model, private_nets(model))


def private_nets(model) -> torch.nn.Module:
    """The networks whose gradients see the members, which Opacus hooks: the GAN's discriminator,
    the DDPM's denoiser (not its EMA copy), the VAE's encoder and decoder."""
    kind = getattr(model, "model_kind", None)
    if kind == "gan":
        return model.discriminator
    if kind == "ddpm":
        return model.net
    return torch.nn.ModuleDict({"encoder": model.encoder, "decoder": model.decoder})


def _param_names(model) -> dict[int, str]:
    return {id(p): name for name, p in model.named_parameters()}


def _check_layers(model, nets: torch.nn.Module) -> None:
    """Every trained parameter of ``nets`` must sit in a layer Opacus has a per-sample gradient
    for, and no layer may be one it cannot train privately (BatchNorm: mixes records)."""
    from opacus.grad_sample import GradSampleModule
    from opacus.validators import ModuleValidator

    names = _param_names(model)
    for module in nets.modules():
        for p in module.parameters(recurse=False):
            if p.requires_grad and type(module) not in GradSampleModule.GRAD_SAMPLERS:
                raise DPError(f"dp=True: parameter {names.get(id(p), '?')!r} belongs to a "
                              f"{type(module).__name__} layer, which Opacus 1.6 has no per-sample "
                              f"gradient for (supported: Linear, Conv, GroupNorm, LayerNorm, Embedding, …)")
    errors = ModuleValidator.validate(nets, strict=False)
    if errors:
        raise DPError(f"dp=True: layers Opacus cannot train privately: {errors[:3]}")


def make_private(model, train_loader: DataLoader, *, target_epsilon: float, target_delta: float,
                 max_grad_norm: float, epochs: int, resume: bool = False,
                 accountant: str = "prv") -> DPState:
    """Make ``model``'s training DP-SGD; returns the state holding the DP loader and accountant."""
    check_supported(model, resume=resume)
    for name, v, ok in (("target_epsilon", target_epsilon, target_epsilon > 0),
                        ("target_delta", target_delta, 0 < target_delta < 1),
                        ("max_grad_norm", max_grad_norm, max_grad_norm > 0),
                        ("epochs", epochs, isinstance(epochs, int) and epochs >= 1)):
        if not ok:
            raise DPError(f"{name}: expected a positive value (delta in (0, 1)), got {v!r}")
    from opacus import PrivacyEngine

    gan = getattr(model, "model_kind", None) == "gan"
    nets = private_nets(model)  # checked by check_supported
    base = model.configure_optimizers()
    if gan:  # only the discriminator sees members; the generator learns through it
        opt_g, base = base
    hooked = {id(p) for p in nets.parameters()}
    outside = [p for g in base.param_groups for p in g["params"] if id(p) not in hooked]
    if outside:
        raise DPError(f"dp=True: parameter {_param_names(model).get(id(outside[0]), '?')!r} is "
                      f"trained outside the networks DP-SGD clips and noises")
    engine = PrivacyEngine(accountant=accountant)
    hooks, dp_opt, dp_loader = engine.make_private_with_epsilon(
        module=nets, optimizer=base, data_loader=train_loader, target_epsilon=float(target_epsilon),
        target_delta=float(target_delta), epochs=int(epochs), max_grad_norm=float(max_grad_norm),
        poisson_sampling=True, wrap_model=False)
    if gan:
        model.dp_per_sample = True
        object.__setattr__(model, "dp_hooks", hooks)  # not a submodule: state_dict unchanged
        model.configure_optimizers = lambda: [opt_g, dp_opt]
    else:
        model.configure_optimizers = lambda: dp_opt  # instance override: Lightning gets the DP optimiser
    return DPState(engine=engine, optimizer=dp_opt, train_loader=dp_loader,
                   target_epsilon=float(target_epsilon), target_delta=float(target_delta),
                   max_grad_norm=float(max_grad_norm), noise_multiplier=float(dp_opt.noise_multiplier),
                   sample_rate=float(1 / len(train_loader)), accountant=accountant)


def save_record(artifacts: Path, record: dict) -> None:
    atomic_write_text(Path(artifacts) / DP_FILE, json.dumps(record, sort_keys=True, indent=1) + "\n")


def load_record(artifacts: Path) -> dict:
    """The training's DP record; ``{"dp": False}`` for a run trained without DP."""
    path = Path(artifacts) / DP_FILE
    return json.loads(path.read_text()) if path.exists() else {"dp": False}
