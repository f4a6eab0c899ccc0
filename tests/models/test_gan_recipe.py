"""The GAN's training recipe: losses, two time-scale Adam, the generator's EMA, old checkpoints."""

from __future__ import annotations

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from genlab import params
from genlab.models import build_model, load_model
from genlab.models.gan import discriminator_terms, generator_loss
from genlab.train import notebook as experiment

OLD_RECIPE = dict(loss="non_saturating", lr_g=2e-4, lr_d=2e-4, beta1=0.5, beta2=0.999, ema_decay=0.0)


def _small(**kw):
    torch.manual_seed(0)
    return build_model("gan", (1, 8, 8), width=32, depth=1, latent_dim=4, **kw)


def test_loss_terms_per_row():
    d_real, d_fake = torch.tensor([2.0, 0.5, -1.0]), torch.tensor([-2.0, 0.0, 3.0])
    real, fake = discriminator_terms("hinge", d_real, d_fake)
    assert torch.equal(real, torch.tensor([0.0, 0.5, 2.0])) and torch.equal(fake, torch.tensor([0.0, 1.0, 4.0]))
    real, fake = discriminator_terms("non_saturating", d_real, d_fake)
    assert torch.allclose(real, F.softplus(-d_real)) and torch.allclose(fake, F.softplus(d_fake))
    assert generator_loss("hinge", d_fake).item() == pytest.approx(-1 / 3)
    assert generator_loss("non_saturating", d_fake).item() == pytest.approx(F.softplus(-d_fake).mean().item())


@pytest.mark.parametrize("loss", ["hinge", "non_saturating"])
def test_d_loss_follows_the_loss_option(loss):
    m = _small(loss=loss)
    x, fake = torch.rand(6, 1, 8, 8), torch.rand(6, 1, 8, 8)
    value, d_real, d_fake = m._d_loss(x, fake)
    real_terms, fake_terms = discriminator_terms(loss, d_real, d_fake)
    assert value.item() == pytest.approx((real_terms.mean() + fake_terms.mean()).item())


def test_defaults_are_the_new_recipe_and_optimisers_follow_them():
    m = _small()
    hp = m.hparams
    assert (hp.loss, hp.lr_g, hp.lr_d, hp.beta1, hp.beta2, hp.ema_decay) == ("hinge", 2e-4, 8e-4, 0.0, 0.9, 0.999)
    opt_g, opt_d = m.configure_optimizers()
    assert opt_g.param_groups[0]["lr"] == 2e-4 and opt_d.param_groups[0]["lr"] == 8e-4
    assert opt_g.param_groups[0]["betas"] == opt_d.param_groups[0]["betas"] == (0.0, 0.9)
    # two time-scales for the unconditional GAN only; an explicit lr_d is kept
    assert _small(n_classes=3).hparams.lr_d == 2e-4
    assert _small(lr_g=1e-3, lr_d=5e-4).hparams.lr_d == 5e-4


@pytest.mark.parametrize("conditional,lr_d", [(False, 4e-3), (True, 1e-3)])
def test_lr_parameter_sets_the_generator_rate(conditional, lr_d):
    p = params.typed("train", model="gan", lr=1e-3, conditional=conditional)
    m = experiment.model_from_params(p, (1, 8, 8), n_classes=10 if conditional else None)
    assert m.hparams.lr_g == 1e-3 and m.hparams.lr_d == pytest.approx(lr_d)


@pytest.mark.parametrize("kw,match", [
    ({"loss": "wasserstein"}, r"loss must be one of \['hinge', 'non_saturating'\], got 'wasserstein'"),
    ({"ema_decay": 1.0}, r"ema_decay must be in \[0, 1\), got 1.0"),
    ({"beta2": -0.1}, r"beta2 must be in \[0, 1\), got -0.1"),
])
def test_bad_recipe_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        _small(**kw)


def test_ema_update_and_sampling_from_the_ema_generator():
    m = _small(ema_decay=0.9)
    g, e = m.generator, m.generator_ema
    assert all(not p.requires_grad for p in e.parameters())
    with torch.no_grad():
        for p in g.parameters():
            p.add_(1.0)
    before = [p.clone() for p in e.parameters()]
    m.update_ema()  # n = 0: decay min(0.9, 1/10) = 0.1 (warm-up)
    for b, p, q in zip(before, e.parameters(), g.parameters()):
        torch.testing.assert_close(p, 0.1 * b + 0.9 * q)
    m.ema_steps.fill_(1000)
    before = [p.clone() for p in e.parameters()]
    m.update_ema()  # late: the full decay
    for b, p, q in zip(before, e.parameters(), g.parameters()):
        torch.testing.assert_close(p, 0.9 * b + 0.1 * q)
    assert int(m.ema_steps) == 1001
    z = torch.randn(4, 4, generator=torch.Generator().manual_seed(3))
    assert torch.equal(m.sample(4, seed=3), m.generate(z, ema=True))
    assert not torch.equal(m.sample(4, seed=3), m.generate(z).detach())


def test_no_ema_keeps_the_old_state_dict():
    old, new = _small(**OLD_RECIPE), _small()
    assert old.generator_ema is None and "ema_steps" not in old.state_dict()
    extra = set(new.state_dict()) - set(old.state_dict())
    assert extra and all(k.startswith("generator_ema.") or k == "ema_steps" for k in extra)


@pytest.mark.slow
def test_training_steps_update_ema_once_per_generator_step():
    m = _small(n_critic=2)
    trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, accelerator="cpu")
    x = torch.rand(40, 1, 8, 8)
    trainer.fit(m, train_dataloaders=torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size=8))
    assert int(m.ema_steps) == 3  # batches 0, 2, 4 of 5
    assert any(not torch.equal(a, b) for a, b in zip(m.generator_ema.parameters(), m.generator.parameters()))


def test_checkpoint_without_the_recipe_hparams_loads_with_the_old_recipe(tmp_path, save_checkpoint):
    """A checkpoint written before the recipe options existed (no loss / beta2 / ema_decay, no EMA
    weights) rebuilds as the non-saturating GAN it was; a new one round-trips with weights_only."""
    for kw, stored_hp in ((OLD_RECIPE, lambda hp: {k: v for k, v in hp.items()
                                                   if k not in ("loss", "beta2", "ema_decay")}),
                          ({}, dict)):
        m = _small(**kw)
        path = save_checkpoint(m, tmp_path / "m.ckpt")
        ckpt = torch.load(path, weights_only=True)
        ckpt["hyper_parameters"] = stored_hp(ckpt["hyper_parameters"])
        torch.save(ckpt, path)
        back = load_model(path)
        assert back.hparams == m.hparams
        assert torch.equal(back.sample(5, seed=2), m.sample(5, seed=2))
