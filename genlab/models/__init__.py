"""Generative models (Lightning modules) and their registry.

``build_model("vae", data_shape, **hparams)`` builds a model; ``load_model(path)`` rebuilds one
from a checkpoint file alone (``torch.load(..., weights_only=True)``): every model stores its
``model_kind`` and its constructor arguments (plain types) as hyper-parameters.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import lightning as L
import torch

from ._common import is_conditional
from .diffusion import DDPM
from .gan import GAN
from .vae import VAE

__all__ = ["MODELS", "VAE", "GAN", "DDPM", "build_model", "load_model", "hparam_names", "is_conditional"]

MODELS: dict[str, type[L.LightningModule]] = {"vae": VAE, "gan": GAN, "ddpm": DDPM}


def _model_class(kind: str) -> type[L.LightningModule]:
    if kind not in MODELS:
        raise ValueError(f"model must be one of {sorted(MODELS)}, got {kind!r}")
    return MODELS[kind]


def hparam_names(kind: str) -> list[str]:
    """The hyper-parameters ``build_model(kind, data_shape, **hparams)`` accepts (besides data_shape)."""
    params = inspect.signature(_model_class(kind).__init__).parameters
    return [p for p in params if p not in ("self", "data_shape")]


def build_model(kind: str, data_shape, **hparams) -> L.LightningModule:
    """Build model ``kind`` ("vae" | "gan" | "ddpm") for records of shape ``data_shape``.

    Seed first (``genlab.train.training.seed_everything(seed)``): the initial weights come from the
    global torch RNG.
    """
    cls = _model_class(kind)
    allowed = hparam_names(kind)
    unknown = [k for k in hparams if k not in allowed]
    if unknown:
        raise TypeError(f"unknown hyper-parameter {unknown[0]!r} for model {kind!r}; expected one of {allowed}")
    return cls(data_shape, **hparams)


def load_model(ckpt_path) -> L.LightningModule:
    """Rebuild a model from a genlab/Lightning checkpoint file alone; returned in eval mode.

    Reads with ``weights_only=True``, dispatches on the ``model_kind`` hyper-parameter, rebuilds
    the module from its hyper-parameters and loads the state dict strictly. Does not disturb the
    global torch RNG.
    """
    path = Path(ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure means "not a checkpoint we can read"
        raise ValueError(f"{path} is not a readable genlab checkpoint: torch.load failed ({type(e).__name__}: {e})") from e
    hp = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
    if not isinstance(hp, dict) or "state_dict" not in ckpt or hp.get("model_kind") not in MODELS:
        raise ValueError(
            f"{path} is not a genlab checkpoint: expected a Lightning checkpoint whose hyper_parameters name "
            f"a model_kind in {sorted(MODELS)}"
        )
    hp = dict(hp)
    kind = hp.pop("model_kind")
    with torch.random.fork_rng(devices=[]):
        model = MODELS[kind](**hp)
    model.load_state_dict(ckpt["state_dict"])
    return model.eval()
