"""Checkpoints every k epochs: when last.ckpt is written, resuming after a crash between two
writes, and best.ckpt when the best epoch was not a written one."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from genlab.models import CheckpointError, load_model
from genlab.train.training import RunCheckpoint, TrainConfig, check_resumable, fit

from test_training import DigitsDM, _model, _same, loaders  # noqa: F401 - loaders is a fixture

pytestmark = [pytest.mark.filterwarnings("ignore:.*LeafSpec"), pytest.mark.slow]  # they train


class SeenAtEpochStart(L.Callback):
    """How many epochs the last.ckpt on disk holds, at each epoch start (None: no file yet)."""

    def __init__(self, ckpt_dir):
        self.path, self.seen = ckpt_dir / "last.ckpt", []

    def on_train_epoch_start(self, trainer, pl_module):
        self.seen.append(len(torch.load(self.path, weights_only=True)["callbacks"][
            "genlab.RunCheckpoint"]["history"]) if self.path.exists() else None)


class CrashAt(L.Callback):
    def __init__(self, epoch):
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            raise RuntimeError("simulated crash")


def _fit_with(monkeypatch, kind, loaders, ckpt_dir, callbacks, **cfg_kw):
    """fit() with extra callbacks beside its RunCheckpoint (the same Trainer otherwise)."""
    from genlab.train import training

    original = training.build_trainer
    monkeypatch.setattr(training, "build_trainer",
                        lambda cfg, d, callbacks=(): original(cfg, d, [*callbacks, *extra]))
    extra = callbacks
    try:
        return fit(_model(kind), DigitsDM(*loaders), ckpt_dir=ckpt_dir,
                   cfg=TrainConfig(**{"seed": 0, **cfg_kw}))
    finally:
        monkeypatch.undo()


def test_last_ckpt_every_k_epochs_and_after_the_last(loaders, tmp_path, monkeypatch):
    seen = SeenAtEpochStart(tmp_path)
    res = _fit_with(monkeypatch, "vae", loaders, tmp_path, [seen], max_epochs=5, checkpoint_every_n_epochs=2)
    assert seen.seen == [None, None, 2, 2, 4]
    ckpt = torch.load(res.last_ckpt, weights_only=True)
    assert len(ckpt["callbacks"]["genlab.RunCheckpoint"]["history"]) == 5
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("kind", ["vae", "gan"])
def test_crash_between_writes_resumes_to_the_same_weights(loaders, tmp_path, monkeypatch, kind):
    straight = _model(kind)
    r5 = fit(straight, DigitsDM(*loaders), ckpt_dir=tmp_path / "straight",
             cfg=TrainConfig(max_epochs=5, seed=0, checkpoint_every_n_epochs=2))
    with pytest.raises(RuntimeError, match="simulated crash"):
        _fit_with(monkeypatch, kind, loaders, tmp_path / "crashed", [CrashAt(3)], max_epochs=5,
                  checkpoint_every_n_epochs=2)  # dies after 3 epochs; last.ckpt holds 2
    resumed = _model(kind, seed=7)
    rr = fit(resumed, DigitsDM(*loaders), ckpt_dir=tmp_path / "crashed",
             cfg=TrainConfig(max_epochs=5, seed=0, checkpoint_every_n_epochs=2),
             resume_from=tmp_path / "crashed" / "last.ckpt")
    assert _same(straight.state_dict(), resumed.state_dict())
    assert rr.history == r5.history and rr.best_epoch == r5.best_epoch


def test_best_ckpt_between_writes_holds_that_epochs_weights(loaders, tmp_path):
    """lr=0.1 overshoots (at β = 1): the best val_loss is epoch 0, which k=4 does not write."""
    runs = [fit(_model("vae", lr=0.1, beta=1.0), DigitsDM(*loaders), ckpt_dir=tmp_path / f"k{k}",
                cfg=TrainConfig(max_epochs=6, seed=0, checkpoint_every_n_epochs=k))
            for k in (1, 4)]
    every, sparse = runs
    assert every.history == sparse.history and sparse.best_epoch == 0
    best_k1 = torch.load(every.best_ckpt, weights_only=True)
    best_k4 = torch.load(sparse.best_ckpt, weights_only=True)
    assert _same(best_k1["state_dict"], best_k4["state_dict"])
    assert best_k4["epoch"] == 0 and best_k4["callbacks"]["genlab.RunCheckpoint"]["best_epoch"] == 0
    assert _same(load_model(sparse.best_ckpt).state_dict(), best_k1["state_dict"])
    with pytest.raises(CheckpointError, match="no training state"):
        check_resumable(_model("vae"), sparse.best_ckpt)


def test_checkpoint_every_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="checkpoint_every_n_epochs"):
        RunCheckpoint(tmp_path, every_n_epochs=0)
