"""Glue between the training notebook's parameters and the library, kept out of the notebook.

Maps the flat parameter dict (genlab.params.TRAIN) to a model, a TrainConfig, the run's
published checkpoint and the headline numbers, so `01_train.ipynb` only narrates and plots.
"""

from __future__ import annotations

import shutil
from typing import Any, Mapping

import numpy as np

from genlab.train import dp as dp_mod
from genlab import params
from genlab.train.canaries import CANARY_FILE, CanaryDataModule, make_canaries
from genlab.data import DataSpec, Dataset, GenDataModule
from genlab.models import build_model, is_conditional, load_model
from genlab.ops.runs import RunFolder
from genlab.train.training import FitResult, TrainConfig, fit


def check_params(p: Mapping[str, Any], ds: Dataset) -> None:
    """Check the training parameters against each other and the data.

    Raises :class:`~genlab.params.ParameterError` naming the parameter for a
    setting the chosen model does not read (:func:`genlab.params.check_train`), a conditional
    model on unlabelled data, and canaries (unlabelled crafted records) with a conditional model.
    """
    params.check_train(p)
    if p.conditional:
        if ds.n_classes is None or ds.n_classes < 2:
            raise params.ParameterError(
                f"parameter 'conditional': a class-conditional model needs a labelled dataset with at least "
                f"2 classes; {ds.name!r} has {'no labels' if ds.n_classes is None else '1 class'}")
        if p.canaries:
            raise params.ParameterError(
                f"parameter 'canaries': canaries are unlabelled crafted records, which a conditional model "
                f"cannot train on; got canaries={p['canaries']} with conditional=True")


def model_from_params(p: Mapping[str, Any], data_shape, n_classes: int | None = None) -> Any:
    """The model the parameters describe; ``n_classes`` (the data's) is needed when conditional."""
    kind = p.model
    if kind == "ddpm":
        arch = {"auto": "auto", "conv": "unet", "mlp": "mlp"}[p.arch]
        hparams = {k: p[k] for k in ("timesteps", "schedule", "ema_decay", "sampler", "sampling_steps")}
    else:
        arch = "mlp" if p.arch == "auto" else p.arch
        hparams = {k: p[k] for k in ("latent_dim", "depth")}
    hparams["arch"] = arch
    if p.width is not None:
        hparams["width"] = p.width
    if p.lr is not None:
        hparams.update({"lr_g": p.lr, "lr_d": p.lr} if kind == "gan" else {"lr": p.lr})
    if p.conditional:
        if not n_classes:
            raise ValueError("model_from_params: conditional=True needs n_classes (the dataset's)")
        hparams["n_classes"] = int(n_classes)
        if kind == "ddpm":
            hparams["guidance_scale"] = p.guidance_scale
    if kind == "gan" and p.dp:
        hparams["spectral_norm"] = False  # Opacus cannot take the spectral-norm parametrisation
    return build_model(kind, list(data_shape), **hparams)


def train_config(p: Mapping[str, Any], num_nodes: int = 1) -> TrainConfig:
    return TrainConfig(
        max_epochs=p.max_epochs, batch_size=p.batch_size, seed=p.seed,
        accelerator=p.accelerator, devices=p.devices, precision=p.precision,
        strategy=p.strategy, early_stopping_patience=p.early_stopping_patience,
        num_nodes=num_nodes,
    )


def publish_model(result: FitResult, run: RunFolder, p: Mapping[str, Any]):
    """Copy the checkpoint the later notebooks audit to `artifacts/model.ckpt` and load it.

    With early stopping that is the best-validation checkpoint, otherwise the last one (a GAN's
    validation loss is the discriminator's, no measure of sample quality)."""
    chosen = result.best_ckpt if p.early_stopping_patience else result.last_ckpt
    tmp = run.model_ckpt.with_suffix(".ckpt.tmp")
    shutil.copyfile(chosen, tmp)
    tmp.replace(run.model_ckpt)
    return load_model(run.model_ckpt)


def datamodule(ds: Dataset, spec: DataSpec, run: RunFolder, p: Mapping[str, Any]) -> GenDataModule:
    """The training data: the members, plus the included canaries when ``canaries > 0``.

    Canaries are recorded in ``artifacts/canaries.json`` (records and inclusion bits); an earlier
    canary file of the run folder is removed when the run has none, so the audit never reads
    stale bits."""
    path = run.artifacts / CANARY_FILE
    if not p.canaries:
        path.unlink(missing_ok=True)
        return GenDataModule(ds, spec, batch_size=p.batch_size)
    canaries = make_canaries(ds, int(p.canaries), seed=p.seed)
    canaries.save(path)
    return CanaryDataModule(ds, spec, canaries, batch_size=p.batch_size)


def train(model, dm: GenDataModule, run: RunFolder, p: Mapping[str, Any], *,
          resume_from: str | None = None, num_nodes: int = 1) -> tuple[FitResult, dict[str, Any]]:
    """Fit (DP-SGD when ``dp``) and write ``artifacts/dp.json``; return the result and DP record."""
    cfg = train_config(p, num_nodes)
    if is_conditional(model) and not p.dp:
        # labels of unlabelled requests follow the members' class shares; under DP the prior stays
        # uniform: the members' label counts would be a release the accountant does not cover
        model.set_class_prior(np.bincount(dm.ds.y[dm.spec.pool("members")], minlength=model.n_classes))
    if p.dp:
        state = dp_mod.make_private(
            model, dm.train_dataloader(), target_epsilon=p.target_epsilon,
            target_delta=p.target_delta, max_grad_norm=p.max_grad_norm,
            epochs=cfg.max_epochs, resume=resume_from is not None)
        result = fit(model, ckpt_dir=run.checkpoints, cfg=cfg, train_dataloaders=state.train_loader,
                     val_dataloaders=dm.val_dataloader())
        record = state.record(result.epochs_run)
    else:
        result = fit(model, dm, ckpt_dir=run.checkpoints, cfg=cfg, resume_from=resume_from)
        record = {"dp": False}
    dp_mod.save_record(run.artifacts, record)
    return result, record


def train_headline(result: FitResult, spec: DataSpec, dp_record: Mapping[str, Any] | None = None,
                   dm: GenDataModule | None = None) -> dict[str, Any]:
    summary = spec.summary()
    dp_record = dp_record or {"dp": False}
    canaries = getattr(dm, "canaries", None)
    extra: dict[str, Any] = {
        "dp_epsilon": dp_record.get("epsilon"),
        "n_canaries": 0 if canaries is None else canaries.m,
        "n_canaries_included": 0 if canaries is None else int(canaries.included_mask().sum()),
    }
    if dp_record.get("dp"):
        extra.update(dp_delta=dp_record["delta"], dp_noise_multiplier=dp_record["noise_multiplier"])
    else:
        extra["dp_epsilon_na_reason"] = "trained without DP (dp=False)"
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
        **extra,
    }
