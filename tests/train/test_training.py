"""Tests for genlab.train.training: fit, checkpoints, re-evaluation, determinism, resume, fine-tuning."""

from __future__ import annotations

import shutil

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from genlab.models import build_model, load_model
from genlab.train.training import (
    FitResult,
    TrainConfig,
    build_trainer,
    fit,
    init_from_checkpoint,
    quiet_lightning,
    seed_everything,
    validation_loss,
)

KINDS = ["vae", "gan"]
SMALL = dict(width=64, depth=1, latent_dim=8)

quiet_lightning()
pytestmark = [pytest.mark.filterwarnings("ignore:.*LeafSpec"), pytest.mark.slow]  # every test here trains


@pytest.fixture(scope="module")
def loaders(digits):
    """Train and val records of digits as TensorDatasets (x, label)."""
    x, y = torch.from_numpy(digits.x), torch.from_numpy(digits.y)
    return TensorDataset(x[:384], y[:384]), TensorDataset(x[384:512], y[384:512])


class DigitsDM(L.LightningDataModule):
    def __init__(self, train, val, batch_size=64):
        super().__init__()
        self.train, self.val, self.batch_size = train, val, batch_size

    def train_dataloader(self):
        return DataLoader(self.train, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self.val, batch_size=100)


def _model(kind, seed=0, **kw):
    seed_everything(seed)
    return build_model(kind, [1, 8, 8], **{**SMALL, **kw})


def _fit(kind, loaders, ckpt_dir, seed=0, model_seed=None, **cfg_kw):
    cfg = TrainConfig(**{"max_epochs": 2, "seed": seed, **cfg_kw})
    model = _model(kind, seed if model_seed is None else model_seed)
    return model, fit(model, DigitsDM(*loaders), ckpt_dir=ckpt_dir, cfg=cfg)


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("kind", KINDS)
def test_fit_writes_checkpoints_and_history(kind, loaders, tmp_path):
    model, res = _fit(kind, loaders, tmp_path / "ck")
    assert isinstance(res, FitResult)
    assert res.last_ckpt == tmp_path / "ck" / "last.ckpt" and res.last_ckpt.is_file()
    assert res.best_ckpt == tmp_path / "ck" / "best.ckpt" and res.best_ckpt.is_file()
    assert res.epochs_run == 2 and not res.stopped_early
    assert [r["epoch"] for r in res.history] == [0, 1]
    keys = ({"train_loss", "val_loss", "val_rec", "val_kl"} if kind == "vae" else
            {"train_loss_d", "train_loss_g", "val_loss", "val_d_real", "val_d_fake"})
    for row in res.history:
        assert keys <= row.keys()
        assert all(isinstance(v, (int, float)) for v in row.values())
    vals = [r["val_loss"] for r in res.history]
    assert res.best_val_loss == min(vals) and res.final_val_loss == vals[-1]
    assert res.history[res.best_epoch]["val_loss"] == res.best_val_loss
    if kind == "gan":
        assert 0 < res.history[-1]["val_d_real"] < 1
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["best.ckpt", "last.ckpt"]
    # the checkpoint loads with weights_only=True and carries the history
    ckpt = torch.load(res.last_ckpt, weights_only=True)
    assert ckpt["callbacks"]["genlab.RunCheckpoint"]["history"] == res.history


@pytest.mark.parametrize("kind", KINDS)
def test_reevaluate_checkpoints(kind, loaders, tmp_path):
    _, res = _fit(kind, loaders, tmp_path / "ck")
    cfg = TrainConfig()
    dm = DigitsDM(*loaders)
    best = validation_loss(load_model(res.best_ckpt), dm, cfg=cfg)
    last = validation_loss(load_model(res.last_ckpt), cfg=cfg, val_dataloaders=dm.val_dataloader())
    assert best == pytest.approx(res.best_val_loss, abs=1e-6)
    assert last == pytest.approx(res.final_val_loss, abs=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_identical_other_seed_differs(kind, loaders, tmp_path):
    m1, r1 = _fit(kind, loaders, tmp_path / "a")
    m2, r2 = _fit(kind, loaders, tmp_path / "b")
    assert _same(m1.state_dict(), m2.state_dict())
    assert r1.history == r2.history
    assert (tmp_path / "a" / "last.ckpt").read_bytes() == (tmp_path / "b" / "last.ckpt").read_bytes()
    # same initial weights, other training seed (shuffling and noise)
    m3, r3 = _fit(kind, loaders, tmp_path / "c", seed=1, model_seed=0)
    assert not _same(m1.state_dict(), m3.state_dict())


@pytest.mark.parametrize("kind", KINDS)
def test_resume_2_plus_2_equals_4_after_move(kind, loaders, tmp_path):
    straight, r4 = _fit(kind, loaders, tmp_path / "straight", max_epochs=4)
    _, r2 = _fit(kind, loaders, tmp_path / "staging", max_epochs=2)
    shutil.move(tmp_path / "staging", tmp_path / "final")  # the run folder is renamed after writing
    resumed = _model(kind, seed=123)  # whatever the initial weights: they are restored
    rr = fit(resumed, DigitsDM(*loaders), ckpt_dir=tmp_path / "final", cfg=TrainConfig(max_epochs=4, seed=0),
             resume_from=tmp_path / "final" / "last.ckpt")
    assert _same(straight.state_dict(), resumed.state_dict())
    assert rr.history == r4.history and rr.epochs_run == 4
    assert (rr.best_epoch, rr.best_val_loss, rr.final_val_loss) == (r4.best_epoch, r4.best_val_loss, r4.final_val_loss)
    assert rr.last_ckpt == tmp_path / "final" / "last.ckpt"
    # best.ckpt tracking survived the move: it holds the best epoch of the whole run
    best = torch.load(rr.best_ckpt, weights_only=True)
    assert best["callbacks"]["genlab.RunCheckpoint"]["best_epoch"] == r4.best_epoch
    assert _same(best["state_dict"], torch.load(r4.best_ckpt, weights_only=True)["state_dict"])


def test_init_from_checkpoint(loaders, tmp_path):
    src, res = _fit("vae", loaders, tmp_path / "ck")
    dst = _model("vae", seed=7)
    assert not _same(src.state_dict(), dst.state_dict())
    init_from_checkpoint(dst, res.last_ckpt)
    assert _same(src.state_dict(), dst.state_dict())
    wider = _model("vae", seed=7, width=32)
    with pytest.raises(ValueError, match=r"shape mismatch for 'encoder.*\(32, 64\).*\(64, 64\)"):
        init_from_checkpoint(wider, res.last_ckpt)
    with pytest.raises(ValueError, match="another model kind: it holds model_kind='vae', the model is a 'gan'"):
        init_from_checkpoint(_model("gan"), res.last_ckpt)
    with pytest.raises(FileNotFoundError):
        init_from_checkpoint(dst, tmp_path / "nope.ckpt")


def test_early_stopping_stops(loaders, tmp_path):
    # lr so small that the float32 weights never change: val_loss never improves after epoch 0
    model = _model("vae", lr=1e-12)
    res = fit(model, DigitsDM(*loaders), ckpt_dir=tmp_path / "es",
              cfg=TrainConfig(max_epochs=20, early_stopping_patience=2))
    assert res.stopped_early and res.epochs_run == 3 and res.best_epoch == 0


def test_val_every_n_epochs_final_loss(loaders, tmp_path):
    model, res = _fit("vae", loaders, tmp_path / "ck", max_epochs=3, check_val_every_n_epoch=2)
    assert ["val_loss" in r for r in res.history] == [False, True, False]
    assert res.final_val_loss == pytest.approx(
        validation_loss(load_model(res.last_ckpt), DigitsDM(*loaders), cfg=TrainConfig()), abs=1e-6)
    assert res.best_val_loss == res.history[1]["val_loss"]


def test_build_trainer_options(tmp_path):
    cfg = TrainConfig(max_epochs=3, precision="bf16-mixed", check_val_every_n_epoch=2, early_stopping_patience=1)
    t = build_trainer(cfg, tmp_path)
    assert t.max_epochs == 3 and t.check_val_every_n_epoch == 2 and t.logger is None
    assert t.num_sanity_val_steps == 0 and t.progress_bar_callback is None
    assert t.precision == "bf16-mixed"
    assert any(type(c).__name__ == "EarlyStopping" for c in t.callbacks)


def test_quiet(loaders, tmp_path, capfd, recwarn):
    quiet_lightning()
    _fit("vae", loaders, tmp_path / "ck", max_epochs=1)
    out, err = capfd.readouterr()
    text = out + err + "".join(str(w.message) for w in recwarn)
    for noise in ("GPU available", "Seed set", "LeafSpec", "weights_only", "log_every_n_steps", "num_workers"):
        assert noise not in text
