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
from .checkpoint import CheckpointError, checkpoint_label, read_checkpoint
from .diffusion import DDPM
from .gan import GAN
from .vae import VAE

__all__ = ["MODELS", "VAE", "GAN", "DDPM", "build_model", "load_model", "hparam_names", "is_conditional",
           "CheckpointError", "read_checkpoint"]

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


def load_model(ckpt_path, *, param: str | None = None) -> L.LightningModule:
    """Rebuild a model from a genlab/Lightning checkpoint file alone; returned in eval mode.

    Reads with ``weights_only=True`` (:func:`read_checkpoint`), dispatches on the ``model_kind``
    hyper-parameter, rebuilds the module from its hyper-parameters (one a model added later takes
    the value it had before, the model class's ``CHECKPOINT_DEFAULTS``) and loads the state dict
    strictly. Does not disturb the global torch RNG. ``param`` names the parameter that gave the
    path in error messages. Unusable files raise :class:`CheckpointError` (a ValueError).
    """
    path = Path(ckpt_path)
    ckpt = read_checkpoint(path, param=param)
    label = checkpoint_label(path, param)
    hp = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
    if not isinstance(hp, dict) or "state_dict" not in ckpt:
        raise CheckpointError(
            f"{label} is not a genlab checkpoint: it holds {_holds(ckpt)}; expected a Lightning "
            "checkpoint (a dict with 'state_dict' and 'hyper_parameters') written by genlab")
    if hp.get("model_kind") not in MODELS:
        raise CheckpointError(
            f"{label} is not a genlab checkpoint, or was written by another genlab version or model "
            f"kind: its hyper_parameters name model_kind={hp.get('model_kind')!r}, expected one of "
            f"{sorted(MODELS)}")
    kind = hp["model_kind"]
    # hyper-parameters added after the checkpoint was written take their values of that time
    hp = {**getattr(MODELS[kind], "CHECKPOINT_DEFAULTS", {}), **hp}
    hp.pop("model_kind")
    try:
        with torch.random.fork_rng(devices=[]):
            model = MODELS[kind](**hp)
        model.load_state_dict(ckpt["state_dict"])
    except (TypeError, ValueError, RuntimeError, KeyError) as e:
        detail = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{label} was written by another genlab version or model kind: this genlab cannot "
            f"rebuild its {kind!r} from it ({type(e).__name__}: {detail}); retrain with this "
            "version") from None
    return model.eval()


def _holds(obj) -> str:
    if isinstance(obj, dict):
        return f"a dict with keys {sorted(map(str, obj))[:8]}"
    return f"a {type(obj).__name__}"
