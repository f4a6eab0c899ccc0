"""Glue between the training notebook's parameters and the library, kept out of the notebook.

Maps the flat parameter dict (genlab.params.TRAIN) to a model, a TrainConfig, the run's
published checkpoint and the headline numbers, so `01_train.ipynb` only narrates and plots.
"""

from __future__ import annotations

import shutil
from typing import Any, Mapping

from genlab.data import DataSpec
from genlab.models import build_model, load_model
from genlab.runs import RunFolder
from genlab.training import FitResult, TrainConfig


def model_from_params(p: Mapping[str, Any], data_shape) -> Any:
    hparams = {k: p[k] for k in ("latent_dim", "arch", "width", "depth")}
    if p["lr"] is not None:
        if p["model"] == "gan":
            hparams.update(lr_g=p["lr"], lr_d=p["lr"])
        else:
            hparams["lr"] = p["lr"]
    return build_model(p["model"], list(data_shape), **hparams)


def train_config(p: Mapping[str, Any]) -> TrainConfig:
    return TrainConfig(
        max_epochs=p["max_epochs"], batch_size=p["batch_size"], seed=p["seed"],
        accelerator=p["accelerator"], devices=p["devices"], precision=p["precision"],
        strategy=p["strategy"], early_stopping_patience=p["early_stopping_patience"],
    )


def publish_model(result: FitResult, run: RunFolder, p: Mapping[str, Any]):
    """Copy the checkpoint the later notebooks audit to `artifacts/model.ckpt` and load it.

    With early stopping that is the best-validation checkpoint, otherwise the last one (a GAN's
    validation loss is the discriminator's, no measure of sample quality)."""
    chosen = result.best_ckpt if p["early_stopping_patience"] else result.last_ckpt
    tmp = run.model_ckpt.with_suffix(".ckpt.tmp")
    shutil.copyfile(chosen, tmp)
    tmp.replace(run.model_ckpt)
    return load_model(run.model_ckpt)


def train_headline(result: FitResult, spec: DataSpec) -> dict[str, Any]:
    summary = spec.summary()
    return {
        "final_val_loss": result.final_val_loss,
        "best_val_loss": result.best_val_loss,
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "stopped_early": result.stopped_early,
        # final_train_loss (VAE), final_train_loss_d / _g (GAN): the last epoch's means
        **{f"final_{k}": v for k, v in result.history[-1].items() if k.startswith("train_")},
        **{k: summary[k] for k in ("n_members", "n_val", "n_holdout_a", "n_holdout_b",
                                   "n_excluded", "data_fingerprint")},
        "dataset": spec.dataset,
    }
