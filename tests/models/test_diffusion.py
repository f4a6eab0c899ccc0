"""Tests for genlab.models.diffusion (DDPM): shapes, schedules, loss, sampling, EMA, checkpoints, fit."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from genlab.models import DDPM, MODELS, build_model, hparam_names, load_model
from genlab.models.diffusion import alpha_bar_schedule
from genlab.train.training import TrainConfig, fit, quiet_lightning, seed_everything, validation_loss

quiet_lightning()
pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec")

SHAPES = [(2,), (1, 8, 8), (3, 20, 20), (3, 64, 64)]


def _small(shape, **kw):
    torch.manual_seed(0)
    return build_model("ddpm", shape, **{"width": 16 if len(shape) == 3 else 32, "timesteps": 20, **kw})


@pytest.mark.parametrize("shape", SHAPES)
def test_shapes(shape):
    m = _small(shape)
    assert m.hparams.arch == ("unet" if len(shape) == 3 else "mlp")
    x = torch.rand(5, *shape)
    assert m.denoising_loss(x, 3).shape == (5,)
    assert m.denoising_loss(x, torch.arange(5)).shape == (5,)
    assert m.net(x * 2 - 1, torch.arange(5)).shape == x.shape
    for method, steps in (("ddpm", None), ("ddim", 5)):
        s = m.sample(3, seed=0, method=method, steps=steps)
        assert s.shape == (3, *shape) and torch.isfinite(s).all()
        if len(shape) == 3:
            assert s.min() >= 0 and s.max() <= 1


def test_odd_sides_and_mlp_on_images():
    m = _small((1, 15, 9))
    assert m.sample(2, seed=0, method="ddim", steps=3).shape == (2, 1, 15, 9)
    m = _small((1, 8, 8), arch="mlp")
    assert m.sample(2, seed=0, method="ddim", steps=3).shape == (2, 1, 8, 8)


def test_defaults_and_registry():
    assert MODELS["ddpm"] is DDPM
    assert hparam_names("ddpm") == ["arch", "width", "timesteps", "schedule", "lr", "ema_decay", "n_classes",
                                    "cond_drop", "guidance_scale", "sampler", "sampling_steps"]
    img, toy = build_model("ddpm", [1, 8, 8]), build_model("ddpm", [2])
    assert (img.hparams.arch, img.hparams.width, toy.hparams.arch, toy.hparams.width) == ("unet", 32, "mlp", 256)
    assert img.hparams.timesteps == 1000 and img.hparams.schedule == "cosine"
    for m in (img, toy):
        assert not any(isinstance(mod, torch.nn.modules.batchnorm._BatchNorm) for mod in m.modules())
        # the EMA copy has no gradients and is not optimised; it starts equal to the weights
        assert not any(p.requires_grad for p in m.ema.parameters())
        opt_params = {id(p) for g in m.configure_optimizers().param_groups for p in g["params"]}
        assert opt_params == {id(p) for p in m.net.parameters()}
        assert all(torch.equal(a, b) for a, b in zip(m.ema.parameters(), m.net.parameters()))


def test_errors():
    with pytest.raises(ValueError, match="arch"):
        build_model("ddpm", (2,), arch="unet")
    with pytest.raises(ValueError, match="arch"):
        build_model("ddpm", (2,), arch="conv")
    with pytest.raises(ValueError, match="schedule"):
        build_model("ddpm", (2,), schedule="quadratic")
    with pytest.raises(ValueError, match="timesteps"):
        build_model("ddpm", (2,), timesteps=1)
    with pytest.raises(ValueError, match="ema_decay"):
        build_model("ddpm", (2,), ema_decay=1.0)
    with pytest.raises(TypeError, match="latent_dim"):
        build_model("ddpm", (2,), latent_dim=3)
    m = _small((2,))
    with pytest.raises(ValueError, match="method"):
        m.sample(2, method="euler")
    with pytest.raises(ValueError, match="steps"):
        m.sample(2, method="ddim", steps=21)
    with pytest.raises(ValueError, match="timesteps in"):
        m.denoising_loss(torch.zeros(3, 2), 20)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("T", [1000, 50, 10])
def test_schedule_monotone_in_unit_interval(schedule, T):
    ab = alpha_bar_schedule(schedule, T)
    assert ab.shape == (T,)
    assert (ab > 0).all() and (ab < 1).all()
    assert (ab[1:] < ab[:-1]).all()
    assert ab[-1] < 0.01 and ab[0] > (0.99 if T >= 50 else 0.9)


def test_schedule_values():
    lin = alpha_bar_schedule("linear", 1000)
    assert lin[0].item() == pytest.approx(1 - 1e-4, abs=1e-12)
    b1 = 1e-4 + (0.02 - 1e-4) / 999  # second beta of linspace(1e-4, 0.02, 1000)
    assert lin[1].item() == pytest.approx((1 - 1e-4) * (1 - b1), rel=1e-12)
    assert lin[-1].item() == pytest.approx(4.04e-5, rel=0.01)  # Ho et al.'s alpha-bar_T

    def f(u, s=0.008):
        return math.cos((u + s) / (1 + s) * math.pi / 2) ** 2

    cos = alpha_bar_schedule("cosine", 1000)
    for t in (0, 249, 499, 749):  # index t is step t + 1: alpha-bar = f((t+1)/T) / f(0)
        assert cos[t].item() == pytest.approx(f((t + 1) / 1000) / f(0), rel=1e-9)
    assert cos[499].item() == pytest.approx(0.4938, abs=1e-4)
    # the model keeps the schedule as a float32 buffer
    m = _small((2,), timesteps=1000, schedule="linear")
    assert torch.allclose(m.alphas_cumprod, lin.float())


@pytest.mark.slow
def test_optimisation_reduces_loss_on_fixed_batch():
    torch.manual_seed(0)
    m = build_model("ddpm", (1, 8, 8), width=16, timesteps=100)
    x = torch.rand(32, 1, 8, 8)
    t = torch.randint(0, 100, (32,))
    eps = torch.randn_like(x)
    opt = m.configure_optimizers()
    losses = []
    for _ in range(30):
        loss = m._loss(m.net, x, t, eps).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_denoising_loss_seeded_and_ema_switch():
    m = _small((1, 8, 8))
    x = torch.rand(4, 1, 8, 8)
    a = m.denoising_loss(x, 7, torch.Generator().manual_seed(1))
    b = m.denoising_loss(x, 7, torch.Generator().manual_seed(1))
    c = m.denoising_loss(x, 7, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c) and (a >= 0).all()
    with torch.no_grad():
        for p in m.net.parameters():
            p.add_(0.01)
    assert torch.equal(m.denoising_loss(x, 7, torch.Generator().manual_seed(1)), a)  # EMA unchanged
    assert not torch.equal(m.denoising_loss(x, 7, torch.Generator().manual_seed(1), ema=False), a)


def test_ema_update_warmup():
    m = _small((2,))
    with torch.no_grad():
        for p in m.net.parameters():
            p.add_(1.0)
    before = [p.clone() for p in m.ema.parameters()]
    m.update_ema()  # first step: decay (1 + 0) / (10 + 0) = 0.1
    for e, b, p in zip(m.ema.parameters(), before, m.net.parameters()):
        assert torch.allclose(e, 0.1 * b + 0.9 * p)
    assert int(m.ema_steps) == 1


@pytest.mark.parametrize("shape", [(2,), (1, 8, 8)])
def test_sample_reproducible_and_quiet(shape):
    m = _small(shape)
    m.train()
    state = torch.get_rng_state()
    for method in ("ddpm", "ddim"):
        a, b, c = (m.sample(4, seed=s, method=method) for s in (3, 3, 4))
        assert torch.equal(a, b) and not torch.equal(a, c)
        assert not a.requires_grad
    assert torch.equal(state, torch.get_rng_state())  # global RNG untouched
    assert m.training  # mode restored


def test_ddim_deterministic_given_start_noise():
    m = _small((1, 8, 8))
    assert m.sample_timesteps("ddim", 5) == [16, 12, 8, 4, 0]
    assert m.sample_timesteps("ddim", 3) == [13, 6, 0]
    assert m.sample_timesteps("ddpm", None) == list(range(19, -1, -1))
    # eta = 0: the result depends only on the starting noise, so one seed always gives one image
    torch.manual_seed(5)
    a = m.sample(3, method="ddim", steps=5)
    torch.manual_seed(5)
    b = m.sample(3, method="ddim", steps=5)
    assert torch.equal(a, b)
    assert torch.equal(m.sample(3, seed=1, method="ddim", steps=5), m.sample(3, seed=1, method="ddim", steps=5))
    # ancestral sampling draws fresh noise each step, DDIM does not: they differ for the same seed
    assert not torch.equal(m.sample(3, seed=1, method="ddim", steps=20), m.sample(3, seed=1, method="ddpm"))


class _LinearEps(torch.nn.Module):
    def forward(self, x, t):
        return 0.3 * x + 0.01 * t.float()[:, None]


def test_ancestral_sampling_is_ho_et_al():
    """All steps with eta = 1: each step is Ho et al.'s posterior mean plus sqrt(beta-tilde) z."""
    m = _small((2,), timesteps=3, schedule="linear")
    m.ema = _LinearEps()
    ab = m.alphas_cumprod
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(4, 2, generator=gen)
    for t in (2, 1, 0):
        ab_prev = ab[t - 1] if t > 0 else torch.tensor(1.0)
        beta = 1 - ab[t] / ab_prev
        eps = m.ema(x, torch.full((4,), t))
        x0 = (x - (1 - ab[t]).sqrt() * eps) / ab[t].sqrt()
        mean = ab_prev.sqrt() * beta / (1 - ab[t]) * x0 + (1 - beta).sqrt() * (1 - ab_prev) / (1 - ab[t]) * x
        x = mean + ((1 - ab_prev) / (1 - ab[t]) * beta).sqrt() * torch.randn(4, 2, generator=gen) if t > 0 else mean
    assert torch.allclose(m.sample(4, seed=7, method="ddpm"), x, atol=1e-5)


def test_checkpoint_roundtrip_with_ema(tmp_path, save_checkpoint):
    m = _small((1, 8, 8))
    with torch.no_grad():
        for p in m.net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    m.update_ema()
    assert not all(torch.equal(a, b) for a, b in zip(m.ema.parameters(), m.net.parameters()))
    path = save_checkpoint(m, tmp_path / "m.ckpt")
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["hyper_parameters"]["model_kind"] == "ddpm"
    assert any(k.startswith("ema.") for k in ckpt["state_dict"])
    m2 = load_model(path)
    assert type(m2) is DDPM and m2.hparams == m.hparams and not m2.training
    assert all(torch.equal(v, m2.state_dict()[k]) for k, v in m.state_dict().items())
    for method in ("ddpm", "ddim"):
        assert torch.equal(m.sample(4, seed=2, method=method), m2.sample(4, seed=2, method=method))


@pytest.fixture(scope="module")
def loaders(digits):
    """Train and val records of digits as TensorDatasets (x, label)."""
    x, y = torch.from_numpy(digits.x), torch.from_numpy(digits.y)
    return TensorDataset(x[:256], y[:256]), TensorDataset(x[256:356], y[256:356])


@pytest.mark.slow
def test_fit_checkpoints_and_val_loss_reproducible(loaders, tmp_path):
    train, val = loaders
    seed_everything(0)
    m = build_model("ddpm", [1, 8, 8], width=8, timesteps=100)
    cfg = TrainConfig(max_epochs=2, seed=0)
    res = fit(m, ckpt_dir=tmp_path / "ck", cfg=cfg,
              train_dataloaders=DataLoader(train, batch_size=64, shuffle=True),
              val_dataloaders=DataLoader(val, batch_size=50))
    assert res.epochs_run == 2 and res.last_ckpt.is_file() and res.best_ckpt.is_file()
    for row in res.history:
        assert {"train_loss", "val_loss"} <= row.keys() and math.isfinite(row["val_loss"])
    assert int(m.ema_steps) == 8  # 4 batches x 2 epochs
    val_loader = DataLoader(val, batch_size=50)
    last = load_model(res.last_ckpt)
    assert validation_loss(last, cfg=cfg, val_dataloaders=val_loader) == pytest.approx(res.final_val_loss, abs=1e-6)
    assert validation_loss(last, cfg=cfg, val_dataloaders=val_loader) == pytest.approx(res.final_val_loss, abs=1e-6)
    assert torch.equal(last.sample(3, seed=0, method="ddim", steps=5), m.sample(3, seed=0, method="ddim", steps=5))


class _ImperfectEps(torch.nn.Module):
    def forward(self, x, t):
        return 0.9 * x


def test_ddim_stable_without_clamping_on_cosine_schedule():
    """Flat data are not clamped: the DDIM steps must avoid t = T-1, where cosine alpha-bar is ~1e-9."""
    m = _small((2,), timesteps=1000, schedule="cosine")
    assert m.alphas_cumprod[-1] < 1e-8 and m.sample_timesteps("ddim", 50)[0] == 980
    m.ema = _ImperfectEps()
    for steps in (50, 20):
        assert m.sample(256, seed=0, method="ddim", steps=steps).abs().max() < 20
