"""Glue between `01_train.ipynb` and the library, kept out of the notebook.

Maps the training parameters (:class:`genlab.params.TrainParams`) to a model, a TrainConfig,
the run's published checkpoint and the headline numbers (also used by ``python -m
genlab.train``); :class:`TrainReport` is the notebook's sections, one method each.
"""

from __future__ import annotations

import shutil
from typing import Any, Mapping

import numpy as np
import torch
from IPython.display import display

from genlab import data, data_quality, params, plots
from genlab.data import DataSpec, Dataset
from genlab.datamodule import GenDataModule
from genlab.models import build_model, is_conditional, load_model
from genlab.ops.open_run import open_run
from genlab.ops.reports import Table, provenance, provenance_table, write_headline
from genlab.ops.runs import RunFolder, resolve_input
from genlab.params import TrainParams
from genlab.train import dp as dp_mod
from genlab.train import training
from genlab.train.canaries import CANARY_FILE, CanaryDataModule, make_canaries
from genlab.train.training import FitResult, TrainConfig, fit


def check_params(p: TrainParams, ds: Dataset) -> None:
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
                f"cannot train on; got canaries={p.canaries} with conditional=True")


def model_from_params(p: TrainParams, data_shape, n_classes: int | None = None) -> Any:
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
        # the GAN: lr is the generator's; the discriminator's follows from it (the model's lr_d=None)
        hparams.update({"lr_g": p.lr} if kind == "gan" else {"lr": p.lr})
    if p.conditional:
        if not n_classes:
            raise ValueError("model_from_params: conditional=True needs n_classes (the dataset's)")
        hparams["n_classes"] = int(n_classes)
        if kind == "ddpm":
            hparams["guidance_scale"] = p.guidance_scale
    if kind == "gan" and p.dp:
        hparams["spectral_norm"] = False  # Opacus cannot take the spectral-norm parametrisation
    return build_model(kind, list(data_shape), **hparams)


def train_config(p: TrainParams, num_nodes: int = 1) -> TrainConfig:
    return TrainConfig(
        max_epochs=p.max_epochs, batch_size=p.batch_size, seed=p.seed,
        accelerator=p.accelerator, devices=p.devices, precision=p.precision,
        strategy=p.strategy, early_stopping_patience=p.early_stopping_patience,
        checkpoint_every_n_epochs=p.checkpoint_every_n_epochs,
        num_nodes=num_nodes,
    )


def publish_model(result: FitResult, run: RunFolder, p: TrainParams):
    """Copy the checkpoint the later notebooks audit to `artifacts/model.ckpt` and load it.

    With early stopping that is the best-validation checkpoint, otherwise the last one (a GAN's
    validation loss is the discriminator's, no measure of sample quality)."""
    chosen = result.best_ckpt if p.early_stopping_patience else result.last_ckpt
    tmp = run.model_ckpt.with_suffix(".ckpt.tmp")
    shutil.copyfile(chosen, tmp)
    tmp.replace(run.model_ckpt)
    return load_model(run.model_ckpt)


def datamodule(ds: Dataset, spec: DataSpec, run: RunFolder, p: TrainParams) -> GenDataModule:
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


def train(model, dm: GenDataModule, run: RunFolder, p: TrainParams, *,
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


class TrainReport:
    """`01_train.ipynb`, one method per section: the notebook narrates, this does the work."""

    def __init__(self, p: TrainParams):
        self.p = p
        self.run = open_run(p, trained=False).run

    def check_data(self) -> None:
        """Load the data, check the parameters against it and show (then assert) its quality."""
        p = self.p
        self.ds = ds = data.load_dataset(resolve_input(p.dataset))
        check_params(p, ds)  # the model's parameters against the data (labels, canaries)
        self.checks = checks = data_quality.quality_checks(ds)
        display(Table(data_quality.quality_table(checks), title=f"Data quality: {ds.name} {tuple(ds.x.shape)}"))
        data_quality.assert_quality(checks)

    def pools(self) -> Table:
        p = self.p
        self.spec = data.DataSpec.build(self.ds, seed=p.seed, val_frac=p.val_frac,
                                        holdout_a_frac=p.holdout_a_frac,
                                        holdout_b_frac=p.holdout_b_frac, n_train=p.n_train)
        self.spec.save(self.run.data_spec)
        self.screen_rows = []
        if p.screen:
            self.screen_table()
        return Table.from_mapping(self.spec.summary(), title="Pools")

    def screen_table(self) -> None:
        """With screen=True: the pre-training screens of the members (label issues, outliers,
        near duplicates; thresholds from holdout_a) as rows of the data-quality table. They
        flag, nothing is dropped: the model trains on the members as they are."""
        from genlab.security.screens import quality_rows

        ds, spec = self.ds, self.spec
        mem = spec.pool("members")
        self.screen_rows = quality_rows(ds.x[mem], None if ds.y is None else ds.y[mem],
                                        ds.x[spec.pool("holdout_a")], seed=self.p.seed)
        display(Table(data_quality.quality_table(self.checks) + self.screen_rows,
                      title=f"Data quality with pre-training screens: {ds.name} members"))

    def provenance(self) -> Table:
        self.prov = provenance(self.p, dataset=self.ds.name, data_fingerprint=self.spec.fingerprint)
        return provenance_table(self.prov)

    def fit(self) -> None:
        """Build, train (DP-SGD when dp) and publish the model; its hyper-parameters and curves."""
        p, ds = self.p, self.ds
        training.seed_everything(p.seed)
        model = model_from_params(p, ds.data_shape, ds.n_classes)
        if p.init_from:
            training.init_from_checkpoint(model, resolve_input(p.init_from))
        # members (+ the included canaries when canaries > 0, recorded in artifacts/canaries.json)
        self.datamodule = datamodule(ds, self.spec, self.run, p)
        # DP-SGD with Opacus when dp=True; the accountant's ε goes to artifacts/dp.json
        self.result, self.dp_record = train(model, self.datamodule, self.run, p,
                                            resume_from=resolve_input(p.resume_from))
        self.model = publish_model(self.result, self.run, p)
        display(Table.from_mapping({k: v for k, v in self.model.hparams.items() if k != "data_shape"},
                                   title="Model hyper-parameters"))
        plots.loss_curves(self.result.history, title=f"{p.model.upper()} on {ds.name}")

    def samples(self) -> None:
        p, ds = self.p, self.ds
        self.real = self.datamodule.pool_tensor("holdout_a")
        plots.samples(self.model.sample(64, seed=p.seed), self.real,
                      title=f"Generated samples ({p.model})")
        if p.conditional:
            plots.class_samples(self.model, ds.class_names, per_class=8 if ds.is_image else 100,
                                seed=p.seed, title=f"Samples per requested class ({p.model}, conditional)")

    def reconstructions(self) -> None:
        p, ds, real = self.p, self.ds, self.real
        if p.model == "vae" and ds.is_image:
            labels = torch.as_tensor(ds.y[self.spec.pool("holdout_a")][:12]) if p.conditional else None
            plots.reconstructions(real[:12], self.model.reconstruct(real[:12], labels=labels).detach())

    def headline(self) -> Table:
        numbers = train_headline(self.result, self.spec, self.dp_record, self.datamodule)
        for row in self.screen_rows:  # screen=True: how many members each screen flagged
            numbers[f"{row['check']}_flagged"] = row["flagged"]
        write_headline(self.run, "01_train", numbers, provenance=self.prov)
        return Table.from_mapping(numbers, title="Headline", digits=4)
