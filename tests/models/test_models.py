"""Unit tests for genlab.models: shapes, losses, sampling, checkpoints, errors."""

from __future__ import annotations

import pytest
import torch

from genlab.models import GAN, MODELS, VAE, build_model, hparam_names, load_model

SHAPES = [(2,), (1, 8, 8), (3, 20, 20), (3, 64, 64)]
CASES = [(kind, arch, shape) for kind in ("vae", "gan") for arch in ("mlp", "conv") for shape in SHAPES
         if not (arch == "conv" and len(shape) == 1)]


def _small(kind, shape, arch="mlp", **kw):
    torch.manual_seed(0)
    return build_model(kind, shape, arch=arch, width=32, depth=1, latent_dim=4, **kw)


@pytest.mark.parametrize("kind,arch,shape", CASES)
def test_shapes(kind, arch, shape):
    m = _small(kind, shape, arch)
    x = torch.rand(5, *shape)
    assert m.sample(3, seed=0).shape == (3, *shape)
    if kind == "vae":
        mu, logvar = m.encode(x)
        assert mu.shape == logvar.shape == (5, 4)
        assert m.decode(mu).shape == x.shape
        assert m.reconstruct(x).shape == x.shape
        assert m.neg_elbo(x).shape == (5,)
    else:
        assert m.discriminate(x).shape == (5,)
    if len(shape) == 3:  # images: outputs are probabilities / sigmoid pixels
        s = m.sample(4, seed=1)
        assert s.min() >= 0 and s.max() <= 1


def test_conv_odd_side():
    m = _small("vae", (3, 30, 27), "conv")
    assert m.sample(2, seed=0).shape == (2, 3, 30, 27)
    assert m.neg_elbo(torch.rand(2, 3, 30, 27)).shape == (2,)


@pytest.mark.parametrize("n_classes", [0, 3])
def test_no_batchnorm_and_spectral_norm_discriminator(n_classes):
    for arch, shape in (("mlp", (1, 8, 8)), ("conv", (3, 20, 20))):
        g = _small("gan", shape, arch, n_classes=n_classes)
        for m in (g, _small("vae", shape, arch, n_classes=n_classes)):
            assert not any(isinstance(mod, torch.nn.modules.batchnorm._BatchNorm) for mod in m.modules())
        names = [n for n, _ in g.discriminator.named_parameters()]
        # the projection head and the label embedding are spectrally normalised too
        assert names and all("parametrizations.weight.original" in n or n.endswith("bias") for n in names)
        assert any(n.startswith("embed.") for n in names) == bool(n_classes)


def test_auto_likelihood():
    assert _small("vae", (2,)).likelihood == "gaussian"
    assert _small("vae", (1, 8, 8)).likelihood == "bernoulli"
    assert _small("vae", (1, 8, 8), likelihood="gaussian").likelihood == "gaussian"


def test_neg_elbo_per_record_nonnegative_bernoulli():
    m = _small("vae", (1, 8, 8))
    x = torch.rand(7, 1, 8, 8)
    with torch.no_grad():
        ne = m.neg_elbo(x, generator=torch.Generator().manual_seed(0))
        x2 = x.clone()
        x2[0] = 1 - x2[0]
        ne2 = m.neg_elbo(x2, generator=torch.Generator().manual_seed(0))
    assert ne.shape == (7,) and (ne >= 0).all()
    # per record: changing record 0 changes only its own value
    assert ne2[0] != ne[0] and torch.allclose(ne[1:], ne2[1:], atol=1e-5)


def _fixed_batch(n=64):
    from sklearn.datasets import load_digits

    return torch.tensor(load_digits().data[:n] / 16, dtype=torch.float32).reshape(n, 1, 8, 8)


@pytest.mark.slow
def test_vae_optimisation_reduces_loss():
    m = _small("vae", (1, 8, 8))
    x = _fixed_batch()
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    before = m.neg_elbo(x, gen()).mean().item()
    for _ in range(30):
        opt.zero_grad()
        m.neg_elbo(x).mean().backward()
        opt.step()
    assert m.neg_elbo(x, gen()).mean().item() < before - 5


@pytest.mark.slow
def test_vae_gaussian_optimisation_reduces_loss():
    m = _small("vae", (2,))
    x = torch.randn(128, 2, generator=torch.Generator().manual_seed(0)) * 0.1 + 3
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    before = m.neg_elbo(x, torch.Generator().manual_seed(0)).mean().item()
    for _ in range(50):
        opt.zero_grad()
        m.neg_elbo(x).mean().backward()
        opt.step()
    assert m.neg_elbo(x, torch.Generator().manual_seed(0)).mean().item() < before - 1


@pytest.mark.slow
def test_gan_discriminator_loss_decreases():
    m = _small("gan", (1, 8, 8))
    x = _fixed_batch()
    opt_g, opt_d = m.configure_optimizers()
    for g in opt_d.param_groups:
        g["lr"] = 1e-2
    z = torch.randn(64, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        fake = m.generate(z)
    before = m._d_loss(x, fake)[0].item()
    for _ in range(30):
        loss = m._d_loss(x, fake)[0]
        opt_d.zero_grad()
        loss.backward()
        opt_d.step()
    m.eval()
    assert m._d_loss(x, fake)[0].item() < before - 0.1


@pytest.mark.parametrize("kind", ["vae", "gan"])
def test_sample_seeded(kind):
    m = _small(kind, (1, 8, 8))
    m.train()
    state = torch.get_rng_state()
    a, b, c = m.sample(6, seed=3), m.sample(6, seed=3), m.sample(6, seed=4)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(state, torch.get_rng_state())  # global RNG untouched
    assert m.training  # mode restored
    assert not a.requires_grad


@pytest.mark.parametrize("kind", ["vae", "gan"])
def test_checkpoint_roundtrip(kind, tmp_path, save_checkpoint):
    m = _small(kind, (2,), arch="mlp")
    path = save_checkpoint(m, tmp_path / "m.ckpt")
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["hyper_parameters"]["model_kind"] == kind
    m2 = load_model(path)
    assert type(m2) is MODELS[kind] and m2.hparams == m.hparams
    assert torch.equal(m.sample(5, seed=2), m2.sample(5, seed=2))


def test_hparam_names():
    assert hparam_names("vae") == ["latent_dim", "arch", "width", "depth", "lr", "beta", "likelihood", "n_classes"]
    assert hparam_names("gan") == ["latent_dim", "arch", "width", "depth", "lr_g", "lr_d", "beta1", "n_critic",
                                   "spectral_norm", "loss", "beta2", "ema_decay", "n_classes"]


def test_build_model_errors():
    with pytest.raises(ValueError, match=r"model.*\['ddpm', 'gan', 'vae'\].*'diffusion'"):
        build_model("diffusion", (2,))
    with pytest.raises(TypeError, match="latnet_dim"):
        build_model("vae", (2,), latnet_dim=3)
    with pytest.raises(TypeError, match="lr"):
        build_model("gan", (2,), lr=1e-3)  # GAN has lr_g / lr_d
    with pytest.raises(ValueError, match="arch"):
        build_model("vae", (2,), arch="conv")
    with pytest.raises(ValueError, match="likelihood"):
        build_model("vae", (2,), likelihood="poisson")
    for bad in (1, -1, 2.5, True):
        with pytest.raises(ValueError, match="n_classes must be 0"):
            build_model("gan", (2,), n_classes=bad)
    assert isinstance(build_model("vae", [2]), VAE) and isinstance(build_model("gan", [2]), GAN)


def test_load_model_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_model(tmp_path / "missing.ckpt")
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="garbage.ckpt is not a checkpoint"):
        load_model(garbage)
    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"lr": 1.0}}, other)
    with pytest.raises(ValueError, match="not a genlab checkpoint"):
        load_model(other)
