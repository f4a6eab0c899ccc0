"""Training with Lightning: reproducible, resumable, quiet in notebooks.

Typical use (the training notebook)::

    from genlab.models import build_model
    from genlab.train.training import TrainConfig, fit, quiet_lightning, seed_everything

    quiet_lightning()                      # no Lightning info logs / known warnings in cells
    cfg = TrainConfig(max_epochs=100, seed=0, early_stopping_patience=10)
    seed_everything(cfg.seed)              # BEFORE build_model: initial weights use the global RNG
    model = build_model("vae", data_shape=[1, 8, 8])
    result = fit(model, datamodule, ckpt_dir=run_dir / "artifacts", cfg=cfg)
    result.history                         # one dict per epoch: epoch, train_*, val_* (floats)
    result.best_ckpt                       # ckpt_dir / "best.ckpt" (lowest val_loss)

    # continue a run to more epochs (also after the run folder was moved):
    result = fit(model, datamodule, ckpt_dir=..., cfg=TrainConfig(max_epochs=200),
                 resume_from=ckpt_dir / "last.ckpt")

Reproducibility: ``fit`` seeds everything with ``cfg.seed`` and builds the Trainer with
``deterministic=True``; two fits with the same seed (and a model built after the same seed) give
identical weights and byte-identical checkpoints on the same machine. There is no logger (loggers'
``version_N`` folders would leak into the checkpoints).

Checkpoints (written by :class:`RunCheckpoint`, not Lightning's ModelCheckpoint, whose stored
``dirpath`` breaks best-model tracking once the run folder is renamed): ``ckpt_dir/last.ckpt``
every ``cfg.checkpoint_every_n_epochs`` epochs and after the last epoch (early stop included),
each written to a temporary name and renamed; ``ckpt_dir/best.ckpt`` holds the weights of the
epoch with the lowest ``val_loss``, written at the same moments. They store no paths. An
interrupted run resumes from the last one written and repeats at most k - 1 epochs, which give
the same weights again: resuming stays exact, while a write per epoch (k = 1) cost the default
VAE ~7% of its epoch time (benchmarks/train_overhead.py). The callback's state (also in the checkpoint) holds the per-epoch history, the best
score/epoch and the global RNG states (torch, numpy, random), so that resuming from
``last.ckpt`` continues the *same* random stream: 2 epochs + resume to 4 equals 4 epochs straight,
provided data shuffling draws from the global torch RNG or from a sampler seeded per epoch
(``set_epoch``). All checkpoints load with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import logging
import os
import math
import random
import shutil
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities.model_helpers import is_overridden
from lightning.pytorch.callbacks import Callback, Checkpoint, EarlyStopping

from genlab.models.checkpoint import CheckpointError, check_fits, checkpoint_label, read_checkpoint

__all__ = [
    "TrainConfig",
    "FitResult",
    "RunCheckpoint",
    "quiet_lightning",
    "seed_everything",
    "build_trainer",
    "fit",
    "init_from_checkpoint",
    "check_resumable",
    "validation_loss",
]

LAST_CKPT = "last.ckpt"
BEST_CKPT = "best.ckpt"
MONITOR = "val_loss"


@dataclass
class TrainConfig:
    """Trainer settings. ``accelerator``/``devices``/``precision``/``strategy`` pass through to
    ``lightning.Trainer``. ``early_stopping_patience`` counts validation checks without a
    ``val_loss`` improvement (0 = off). ``checkpoint_every_n_epochs`` (k): ``last.ckpt`` is
    written every k epochs and after the last epoch; an interrupted run loses at most k - 1
    epochs of work, which resuming repeats with the same result."""

    max_epochs: int = 100
    batch_size: int = 64
    seed: int = 0
    accelerator: str = "cpu"
    devices: int | str = 1
    precision: str = "32-true"
    strategy: str = "auto"
    early_stopping_patience: int = 0
    check_val_every_n_epoch: int = 1
    checkpoint_every_n_epochs: int = 10
    num_nodes: int = 1  # multi-node runs only from the script entry (genlab.train), not a kernel


@dataclass
class FitResult:
    history: list[dict]
    final_val_loss: float
    best_val_loss: float
    best_epoch: int
    epochs_run: int
    stopped_early: bool
    last_ckpt: Path
    best_ckpt: Path


# ------------------------------------------------------------------------------------ quiet
_NOISY_WARNINGS = (
    r".*isinstance\(treespec, LeafSpec\).*",
    r".*does not have many workers.*",
    r".*log_every_n_steps.*",
    r".*weights_only.*",
    r".*GPU available but not used.*",
    r".*TPU available but not used.*",
    r".*The number of training batches .* is smaller than the logging interval.*",
    r".*Checkpoint directory .* exists and is not empty.*",
    r".*`srun` command is available.*",
    r".*Total length of `.*` across ranks is zero.*",
    r".*You defined a `validation_step` but have no `val_dataloader`.*",
    # Opacus (DP-SGD): non-cryptographic noise RNG is deliberate (seeded, reproducible runs);
    # the RDP order hint concerns calibration tightness, not correctness; hooks on first layers
    r".*Secure RNG turned off.*",
    r".*Optimal order is the largest alpha.*",
    r".*Full backward hook is firing when gradients are computed with respect to module outputs.*",
)


def quiet_lightning() -> None:
    """Silence Lightning's info logs (GPU/TPU available, "Seed set to", tips, model summary) and
    the known noisy warnings (torch 2.13 LeafSpec FutureWarning, num_workers, log_every_n_steps,
    weights_only, ...) so that notebook cells stay clean. Real warnings still show."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for pattern in _NOISY_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)


def seed_everything(seed: int) -> int:
    """Seed python, numpy and torch (and dataloader workers) quietly; call before ``build_model``."""
    return L.seed_everything(int(seed), workers=True, verbose=False)


# -------------------------------------------------------------------------------- callbacks
def _rng_state() -> dict:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                  int(np_state[3]), float(np_state[4])],
        "python": random.getstate(),
    }


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def _float(v: Any) -> float:
    return float(v.item() if isinstance(v, torch.Tensor) else v)


class RunCheckpoint(Checkpoint):
    """Per-epoch history; ``last.ckpt`` every ``every_n_epochs`` epochs and after the last one;
    ``best.ckpt``: the weights of the best ``val_loss`` epoch so far, written at the same times.

    ``best.ckpt`` is the same file as ``last.ckpt`` (a hard link) when the best epoch is the one
    just saved; otherwise the best epoch's weights were kept in memory (a copy of the model's
    state dict at that epoch, no serialisation) and are written with the model's
    hyper-parameters and this callback's state but without optimiser or loop state: it loads
    with ``load_model`` and can start a fine-tuning (``init_from``), while resuming needs
    ``last.ckpt``.

    Its state (saved inside every checkpoint) is the history, the best score and epoch, and the
    global RNG states at the moment of saving; ``load_state_dict`` (on resume) restores all of it,
    so the history stays complete and the random stream continues where it stopped. Nothing
    path-dependent is stored: the run folder may be moved or renamed between runs.

    A Lightning ``Checkpoint`` subclass so that Lightning runs it after the other callbacks
    (EarlyStopping included) at the end of each training epoch.
    """

    def __init__(self, dirpath: Path | None, monitor: str = MONITOR, every_n_epochs: int = 1):
        super().__init__()
        if int(every_n_epochs) != every_n_epochs or every_n_epochs < 1:
            raise ValueError(f"checkpoint_every_n_epochs must be an int >= 1, got {every_n_epochs!r}")
        self.dirpath = None if dirpath is None else Path(dirpath)
        self.monitor = monitor
        self.every_n_epochs = int(every_n_epochs)
        self._best_weights: dict[str, torch.Tensor] | None = None  # best epoch not yet on disk
        self.history: list[dict] = []
        self.best_score: float = math.inf
        self.best_epoch: int = -1
        self._val_row: dict[str, float] = {}

    @property
    def state_key(self) -> str:  # stable key, independent of the arguments
        return "genlab.RunCheckpoint"

    @property
    def last_path(self) -> Path | None:
        return None if self.dirpath is None else self.dirpath / LAST_CKPT

    @property
    def best_path(self) -> Path | None:
        return None if self.dirpath is None else self.dirpath / BEST_CKPT

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._val_row = {}

    @staticmethod
    def _metrics(trainer, pl_module, prefix: str) -> dict[str, float]:
        # logged metrics plus the model's unlogged epoch means (genlab models: ``epoch_metrics``)
        found = {**trainer.callback_metrics, **getattr(pl_module, "epoch_metrics", {})}
        return {sys.intern(k): _float(v) for k, v in sorted(found.items()) if k.startswith(prefix)}

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        self._val_row = self._metrics(trainer, pl_module, "val_")

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        row: dict[str, float] = {"epoch": trainer.current_epoch}
        row.update(self._metrics(trainer, pl_module, "train_"))
        row.update(self._val_row)
        self._val_row = {}
        self.history.append(row)
        improved = self.monitor in row and row[self.monitor] < self.best_score
        if improved:
            self.best_score, self.best_epoch = row[self.monitor], row["epoch"]
        if self.dirpath is None:
            return
        epoch = trainer.current_epoch + 1
        final = trainer.should_stop or (trainer.max_epochs is not None and epoch >= trainer.max_epochs)
        if final or epoch % self.every_n_epochs == 0:
            self._save(trainer, improved)
        elif improved:
            self._best_weights = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}

    def _save(self, trainer, improved: bool) -> None:
        # last.ckpt is written to a temporary name and renamed (atomic, and a new inode each
        # time), so best.ckpt can be a hard link to it instead of a second serialisation
        # (a copy where the file system has no hard links).
        tmp = self.dirpath / (LAST_CKPT + ".tmp")
        trainer.save_checkpoint(tmp, weights_only=False)
        if not trainer.is_global_zero:
            return
        os.replace(tmp, self.last_path)
        if improved:
            self._best_weights = None
            self.best_path.unlink(missing_ok=True)
            try:
                os.link(self.last_path, self.best_path)
            except OSError:
                shutil.copyfile(self.last_path, self.best_path)
        elif self._best_weights is not None:
            self._write_best_weights(trainer)

    def _write_best_weights(self, trainer) -> None:
        """best.ckpt from the kept weights: loadable by load_model, not resumable."""
        ckpt = trainer._checkpoint_connector.dump_checkpoint(weights_only=True)
        for key in ("loops", "global_step"):
            ckpt.pop(key, None)
        ckpt.update(state_dict=self._best_weights, epoch=self.best_epoch,
                    callbacks={self.state_key: self.state_dict()})
        tmp = self.dirpath / (BEST_CKPT + ".tmp")
        torch.save(ckpt, tmp)
        os.replace(tmp, self.best_path)
        self._best_weights = None

    def state_dict(self) -> dict[str, Any]:
        return {
            "history": [dict(r) for r in self.history],
            "best_score": float(self.best_score),
            "best_epoch": int(self.best_epoch),
            "rng": _rng_state(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # interned keys: the pickled history is then byte-identical to an uninterrupted run's
        self.history = [{sys.intern(k): v for k, v in r.items()} for r in state_dict["history"]]
        self.best_score = float(state_dict["best_score"])
        self.best_epoch = int(state_dict["best_epoch"])
        # Lightning restores callbacks before it builds the train iterator: the shuffling and the
        # model's noise continue exactly as in an uninterrupted run.
        _set_rng_state(state_dict["rng"])


# ----------------------------------------------------------------------------------- trainer
def build_trainer(cfg: TrainConfig, ckpt_dir: Path | None, callbacks: Sequence[Callback] = ()) -> L.Trainer:
    """A quiet, deterministic Trainer: no logger, progress bar or model summary, no sanity check.

    With ``ckpt_dir`` it gets a :class:`RunCheckpoint` writing ``last.ckpt``/``best.ckpt`` there;
    ``cfg.early_stopping_patience > 0`` adds EarlyStopping on ``val_loss``.
    """
    cbs = list(callbacks)
    if ckpt_dir is not None and not any(isinstance(c, RunCheckpoint) for c in cbs):
        cbs.append(RunCheckpoint(Path(ckpt_dir), every_n_epochs=cfg.checkpoint_every_n_epochs))
    if cfg.early_stopping_patience > 0:
        cbs.append(EarlyStopping(monitor=MONITOR, mode="min", patience=int(cfg.early_stopping_patience)))
    return L.Trainer(
        max_epochs=int(cfg.max_epochs),
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        precision=cfg.precision,
        strategy=cfg.strategy,
        num_nodes=int(cfg.num_nodes),
        check_val_every_n_epoch=int(cfg.check_val_every_n_epoch),
        callbacks=cbs,
        logger=False,
        enable_checkpointing=any(isinstance(c, Checkpoint) for c in cbs),
        enable_progress_bar=False,
        enable_model_summary=False,
        deterministic=True,
        num_sanity_val_steps=0,
        # no logger: a step interval only decides how often Lightning gathers step metrics
        # for none (every step costs ~0.1 ms, a few % of a small model's step)
        log_every_n_steps=50,
        default_root_dir=None if ckpt_dir is None else str(ckpt_dir),
    )


def _loader_kwargs(datamodule, train_dataloaders=None, val_dataloaders=None) -> dict:
    if datamodule is not None and (train_dataloaders is not None or val_dataloaders is not None):
        raise ValueError("pass either datamodule or train_dataloaders/val_dataloaders, not both")
    if datamodule is not None:
        return {"datamodule": datamodule}
    return {"train_dataloaders": train_dataloaders, "val_dataloaders": val_dataloaders}


def _has_val_data(datamodule, val_dataloaders) -> bool:
    if datamodule is not None:
        return is_overridden("val_dataloader", datamodule)
    return val_dataloaders is not None


def fit(
    model: L.LightningModule,
    datamodule: L.LightningDataModule | None = None,
    *,
    ckpt_dir: Path,
    cfg: TrainConfig,
    resume_from: Path | None = None,
    train_dataloaders=None,
    val_dataloaders=None,
) -> FitResult:
    """Train ``model`` (seeded with ``cfg.seed``), writing ``ckpt_dir/last.ckpt`` and ``best.ckpt``.

    ``resume_from`` (a ``last.ckpt``, possibly from a moved folder) restores weights, optimiser,
    loop, history, best score and RNG states, then trains on to ``cfg.max_epochs``.
    Build the model after ``seed_everything(cfg.seed)`` for a fully seeded run.
    """
    ckpt_dir = Path(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    if resume_from is not None:
        check_resumable(model, resume_from)
    loaders = _loader_kwargs(datamodule, train_dataloaders, val_dataloaders)
    seed_everything(cfg.seed)
    recorder = RunCheckpoint(ckpt_dir, every_n_epochs=cfg.checkpoint_every_n_epochs)
    trainer = build_trainer(cfg, ckpt_dir, callbacks=[recorder])
    trainer.fit(model, ckpt_path=None if resume_from is None else str(resume_from), weights_only=True, **loaders)

    history = [dict(r) for r in recorder.history]
    last_ckpt, best_ckpt = recorder.last_path, recorder.best_path
    vals = [r[MONITOR] for r in history if MONITOR in r]
    if history and MONITOR in history[-1]:
        final_val = history[-1][MONITOR]
    elif history and _has_val_data(datamodule, val_dataloaders):
        # the last epoch had no validation check: evaluate the final weights
        final_val = validation_loss(model, datamodule, cfg=cfg, val_dataloaders=val_dataloaders)
    else:
        final_val = math.nan
    if not best_ckpt.is_file():  # no validation at all: "best" is the last model
        best_ckpt = last_ckpt
    early = [c for c in trainer.callbacks if isinstance(c, EarlyStopping)]
    stopped_early = bool(early and early[0].stopped_epoch > 0)
    return FitResult(
        history=history,
        final_val_loss=float(final_val),
        best_val_loss=float(min(vals)) if vals else math.nan,
        best_epoch=int(recorder.best_epoch),
        epochs_run=len(history),
        stopped_early=stopped_early,
        last_ckpt=last_ckpt,
        best_ckpt=best_ckpt,
    )


def validation_loss(
    model: L.LightningModule,
    datamodule: L.LightningDataModule | None = None,
    *,
    cfg: TrainConfig,
    val_dataloaders=None,
) -> float:
    """Re-evaluate ``model`` on the validation data (``trainer.validate``) and return ``val_loss``."""
    trainer = build_trainer(cfg, None)
    if datamodule is not None:
        out = trainer.validate(model, datamodule=datamodule, verbose=False)
    else:
        out = trainer.validate(model, dataloaders=val_dataloaders, verbose=False)
    return float(out[0][MONITOR])


def init_from_checkpoint(model: torch.nn.Module, ckpt_path, *, param: str = "init_from") -> None:
    """Copy weights from a checkpoint into ``model`` (fine-tuning); loads with ``weights_only=True``.

    Every tensor of ``model``'s state dict must be present with the same shape; otherwise a
    CheckpointError (a ValueError) names ``param``, the file, the tensor and both shapes (or the
    missing keys). Nothing else is restored (optimiser, epoch, history).
    """
    path = Path(ckpt_path)
    ckpt = read_checkpoint(path, param=param)
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise CheckpointError(f"{checkpoint_label(path, param)} is not a checkpoint: it holds a "
                              f"{type(ckpt).__name__}, no state dict")
    _check_kind(model, ckpt, path, param)
    check_fits(model, state, path, param)
    own = model.state_dict()
    model.load_state_dict({k: state[k] for k in own}, strict=True)


def _check_kind(model, ckpt, path: Path, param: str) -> None:
    """A genlab checkpoint of another model kind (a GAN's weights for a VAE) is refused by name."""
    hp = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
    theirs, ours = (hp or {}).get("model_kind"), getattr(model, "model_kind", None)
    if isinstance(hp, dict) and theirs is None:
        raise CheckpointError(f"{checkpoint_label(path, param)} is not a genlab checkpoint, or was "
                              "written by another genlab version: its hyper_parameters name no "
                              f"model_kind (the model is a {ours!r})")
    if isinstance(hp, dict) and theirs != ours:
        raise CheckpointError(f"{checkpoint_label(path, param)} was written for another model "
                              f"kind: it holds model_kind={theirs!r}, the model is a {ours!r}")


def check_resumable(model: torch.nn.Module, ckpt_path, *, param: str = "resume_from") -> None:
    """Check before Lightning reads it that ``ckpt_path`` is a training checkpoint of ``model``:
    readable, the same model kind and shapes, and with the loop/optimiser state to continue."""
    path = Path(ckpt_path)
    ckpt = read_checkpoint(path, param=param)
    label = checkpoint_label(path, param)
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise CheckpointError(f"{label} is not a genlab training checkpoint: it holds a "
                              f"{type(ckpt).__name__} without a 'state_dict'")
    _check_kind(model, ckpt, path, param)
    check_fits(model, ckpt["state_dict"], path, param)
    lacking = [k for k in ("loops", "optimizer_states", "callbacks") if k not in ckpt]
    if lacking:
        raise CheckpointError(f"{label} holds weights but no training state ({', '.join(lacking)} "
                              f"missing), so training cannot resume from it; use init_from={path} "
                              "to start a new training from its weights")
