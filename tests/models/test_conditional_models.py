"""Class-conditional models (n_classes >= 2): the label API, checkpoints, classifier-free guidance,
DP-SGD, that conditioning is learnt, and that unconditional models are exactly as before."""

from __future__ import annotations

import hashlib

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from genlab.models import build_model, load_model
from genlab.train.training import TrainConfig, fit, quiet_lightning, seed_everything

quiet_lightning()
pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec", "ignore:.*does not have many workers")

KINDS = ("vae", "gan", "ddpm")
SMALL = {"vae": dict(width=32, depth=1, latent_dim=4), "gan": dict(width=32, depth=1, latent_dim=4),
         "ddpm": dict(width=16, timesteps=20)}
DIGITS = (1, 8, 8)


def _model(kind, shape=DIGITS, n_classes=3, **kw):
    seed_everything(0)
    return build_model(kind, list(shape), n_classes=n_classes, **{**SMALL[kind], **kw})


def _sample(m, n, **kw):
    return m.sample(n, **({"steps": 5, **kw} if m.model_kind == "ddpm" else kw))


def _perturbed(m):
    """A DDPM whose sampling network depends on the label (a fresh one starts label-blind: its
    label embedding and output layer are zero-initialised)."""
    if m.model_kind == "ddpm":
        gen = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for p in m.ema.parameters():
                p.add_(0.3 * torch.randn(p.shape, generator=gen))
    return m


def _digest(m) -> str:
    """Hash of every state-dict key (in order) and every parameter's values. Buffers computed at
    build time (spectral norm's power-iteration vectors) are left out: BLAS makes their last bits
    depend on the thread count."""
    h = hashlib.sha256()
    params = dict(m.named_parameters())
    for k in m.state_dict():
        h.update(k.encode())
        if k in params:
            h.update(params[k].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


# ------------------------------------------------------------------------ unconditional unchanged
# Computed with the code before conditioning existed (1 and 2 threads gave the same numbers):
# seed_everything(0), build_model(kind, shape, arch=arch), then the names, shapes and dtypes of
# the state dict (exact), the sum and the sum of squares of every parameter, and
# float(model.sample(5, seed=1 [, steps=10, method="ddpm" for ddpm]).double().sum()).
# Initial weights come from the seeded RNG, but the scaling of uniform draws rounds differently
# in torch's portable and AVX kernels (up to 6e-8 per weight, measured), so the sums are
# compared within 1e-6 relative: far above rounding, far below any change of the initialisation.
GOLDEN = [
    ("vae", DIGITS, "mlp", "d3b4664d7d8da1c2", 37.54623328894377, 382.8930540624562, 162.09472981095314),
    ("vae", DIGITS, "conv", "3875463b368be236", 213.98746922951582, 655.4896240315661, 152.40792095661163),
    ("vae", (2,), "mlp", "75043a7296aa18c3", -13.512742658262141, 437.91523205196313, -0.019267253577709198),
    ("gan", DIGITS, "mlp", "1edfa05b21675c62", 12.39317125827074, 369.62834939415086, 161.08876818418503),
    ("gan", DIGITS, "conv", "b6ca62390672c9f3", 84.4474673134738, 512.8893593260922, 146.5242289453745),
    ("gan", (2,), "mlp", "d56fc03ec098bc54", -17.76707871747203, 387.48713055401, 0.8970659617334604),
    ("ddpm", DIGITS, "mlp", "358e374213773c04", 1580.073788240552, 3080.90842932097, 163.43248230218887),
    ("ddpm", DIGITS, "unet", "34638392634d91db", 1590.9453453054548, 2549.458129806789, 163.43248230218887),
    ("ddpm", (2,), "mlp", "ccf83fef1fae9ac1", 1604.441811408382, 3160.4581109529054, -19.94019317626953),
]


def _structure(m) -> str:
    """Hash of the state dict's names, shapes and dtypes, in order: what no hardware changes."""
    h = hashlib.sha256()
    for k, v in m.state_dict().items():
        h.update(f"{k}:{tuple(v.shape)}:{v.dtype};".encode())
    return h.hexdigest()[:16]


# the GAN's EMA copy of its generator came later than conditioning (it copies the generator, so
# it changes neither the networks nor their initial draws): left out here
WITHOUT_LATER_ADDITIONS = {"gan": {"ema_decay": 0.0}}

OLD_HPARAMS = {
    "vae": {"model_kind", "data_shape", "latent_dim", "arch", "width", "depth", "lr", "beta", "likelihood"},
    "gan": {"model_kind", "data_shape", "latent_dim", "arch", "width", "depth", "lr_g", "lr_d", "beta1", "n_critic"},
    "ddpm": {"model_kind", "data_shape", "arch", "width", "timesteps", "schedule", "lr", "ema_decay"},
}


@pytest.mark.parametrize("kind,shape,arch,structure,param_sum,param_sumsq,sample_sum", GOLDEN)
def test_unconditional_models_unchanged(kind, shape, arch, structure, param_sum, param_sumsq,
                                        sample_sum):
    kw = WITHOUT_LATER_ADDITIONS.get(kind, {})
    seed_everything(0)
    m = build_model(kind, list(shape), arch=arch, **kw)
    seed_everything(0)
    explicit = build_model(kind, list(shape), arch=arch, n_classes=0, **kw)
    assert _digest(m) == _digest(explicit)  # same parameters, order and values on this machine
    assert _structure(m) == structure
    w = torch.cat([p.detach().double().ravel() for p in m.parameters()])
    assert float(w.sum()) == pytest.approx(param_sum, rel=1e-6)
    assert float((w * w).sum()) == pytest.approx(param_sumsq, rel=1e-6)
    assert m.hparams == explicit.hparams and m.n_classes == 0
    # no conditional hyper-parameter is recorded (other issues may add their own ones)
    assert OLD_HPARAMS[kind] <= set(m.hparams) and not {"n_classes", "cond_drop", "guidance_scale"} & set(m.hparams)
    assert "class_prior" not in m.state_dict()
    s = m.sample(5, seed=1, **({"steps": 10, "method": "ddpm"} if kind == "ddpm" else {}))
    # a forward pass rounds differently on another instruction set: 4e-8 on this sum between
    # an AVX-512 and an AVX2 CPU; 1e-5 is far above that and far below what a change moves
    assert float(s.double().sum()) == pytest.approx(sample_sum, rel=1e-5, abs=1e-5)


# ------------------------------------------------------------------------------------ label API
@pytest.mark.parametrize("kind", KINDS)
def test_hparams_prior_and_sample_labels(kind):
    m = _model(kind)
    assert m.n_classes == m.hparams.n_classes == 3
    if kind == "ddpm":
        assert (m.hparams.cond_drop, m.hparams.guidance_scale) == (0.1, 2.0)
    assert m.class_prior.dtype == torch.float32 and torch.equal(m.class_prior, torch.full((3,), 1 / 3))
    assert "class_prior" in m.state_dict()
    state = torch.get_rng_state()
    a, b = m.sample_labels(400, seed=5), m.sample_labels(400, seed=5)
    assert torch.equal(state, torch.get_rng_state())  # seeded draws leave the global RNG alone
    assert a.dtype == torch.long and a.shape == (400,) and torch.equal(a, b) and set(a.tolist()) == {0, 1, 2}
    m.set_class_prior([0, 30, 10])  # counts -> shares
    assert torch.allclose(m.class_prior, torch.tensor([0.0, 0.75, 0.25]))
    shares = torch.bincount(m.sample_labels(4000, seed=0), minlength=3) / 4000
    assert shares[0] == 0 and abs(shares[1] - 0.75) < 0.03
    for bad in ([1, 2], [1, -1, 1], [0, 0, 0], [1, float("nan"), 1]):
        with pytest.raises(ValueError, match="set_class_prior: expected 3"):
            m.set_class_prior(bad)


@pytest.mark.parametrize("kind", KINDS)
def test_sample_default_labels_and_determinism(kind):
    m = _perturbed(_model(kind))
    m.set_class_prior([1, 2, 3])
    m.train()
    state = torch.get_rng_state()
    a = _sample(m, 12, seed=3)
    assert torch.equal(state, torch.get_rng_state()) and m.training and not a.requires_grad
    assert torch.equal(a, _sample(m, 12, seed=3))
    assert torch.equal(a, _sample(m, 12, seed=3, labels=m.sample_labels(12, 3)))
    assert not torch.equal(a, _sample(m, 12, seed=4))
    # the label matters: same noise, different labels -> different samples
    zeros, ones = _sample(m, 12, seed=3, labels=[0] * 12), _sample(m, 12, seed=3, labels=torch.ones(12, dtype=torch.int32))
    assert not torch.allclose(zeros, ones)
    assert torch.equal(zeros, _sample(m, 12, seed=3, labels=np.zeros(12, dtype=np.int64)))


@pytest.mark.parametrize("kind", KINDS)
def test_label_errors(kind):
    cond, plain = _model(kind), _model(kind, n_classes=0)
    x, y = torch.rand(4, *DIGITS), torch.tensor([0, 1, 2, 0])
    with pytest.raises(ValueError, match=r"unconditional \(n_classes=0\).*labels"):
        _sample(plain, 4, labels=y)
    for call in (lambda: plain.sample_labels(3), lambda: plain.set_class_prior([1, 1])):
        with pytest.raises(ValueError, match=r"unconditional \(n_classes=0\)"):
            call()
    for bad, given in (([0, 1, 2], r"shape \(3,\)"), ([0, 1, 2, 3], r"\[0, 3\]"), ([-1, 0, 0, 0], r"\[-1, 0\]"),
                       (torch.zeros(4), "float32"), (torch.zeros(4, 1, dtype=torch.long), r"shape \(4, 1\)")):
        with pytest.raises(ValueError, match=rf"labels: expected integers of shape \(4,\) in \[0, 3\), given.*{given}"):
            _sample(cond, 4, labels=bad)
    # conditional scoring functions need labels (the DDPM's denoising_loss falls back to the null label)
    z = torch.zeros(4, 4)
    needs = {"vae": (lambda: cond.neg_elbo(x), lambda: cond.encode(x), lambda: cond.reconstruct(x),
                     lambda: cond.decode(z)),
             "gan": (lambda: cond.discriminate(x), lambda: cond.generate(z))}.get(kind, ())
    for call in needs:
        with pytest.raises(ValueError, match=r"class-conditional \(n_classes=3\) and needs labels"):
            call()
    if kind == "ddpm":
        with pytest.raises(ValueError, match="unconditional"):
            plain.denoising_loss(x, 3, labels=y)
        with pytest.raises(ValueError, match=r"guidance_scale given, but this ddpm is unconditional"):
            plain.sample(2, steps=2, guidance_scale=1.0)
        with pytest.raises(ValueError, match="guidance_scale must be"):
            cond.sample(2, steps=2, guidance_scale=-1.0)
        for bad in ({"cond_drop": 1.0}, {"guidance_scale": float("inf")}):
            with pytest.raises(ValueError, match=next(iter(bad))):
                _model("ddpm", **bad)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("step", ["training_step", "validation_step"])
def test_conditional_steps_need_labelled_batches(kind, step):
    m = _model(kind)
    x = torch.rand(4, *DIGITS)
    for y in (torch.full((4,), -1), torch.tensor([0, 1, 3, 0]), None):
        batch = (x, y) if y is not None else (x,)
        with pytest.raises(ValueError, match=r"n_classes=3\) and needs labelled data"):
            getattr(m, step)(batch, 0)


# ---------------------------------------------------------------------------------- checkpoints
class _Labelled(L.LightningDataModule):
    def __init__(self, x, y, batch_size=64):
        super().__init__()
        self.data, self.batch_size = TensorDataset(x, y), batch_size

    def train_dataloader(self):
        return DataLoader(self.data, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self.data, batch_size=256)


@pytest.fixture(scope="module")
def labelled3(digits):
    """256 digits records with three classes (the digit mod 3)."""
    return torch.from_numpy(digits.x[:256]), torch.from_numpy(digits.y[:256] % 3)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.slow
def test_fit_and_checkpoint_roundtrip(kind, labelled3, tmp_path, one_thread):
    """A short real fit on labelled data; the checkpoint reloads (weights_only) with its n_classes,
    class prior and weights, and samples exactly as the trained model."""
    m = _model(kind)
    m.set_class_prior([5, 3, 2])
    result = fit(m, _Labelled(*labelled3), ckpt_dir=tmp_path, cfg=TrainConfig(max_epochs=1, seed=0))
    assert torch.isfinite(torch.tensor(result.final_val_loss))
    hp = torch.load(result.last_ckpt, weights_only=True)["hyper_parameters"]
    assert hp["n_classes"] == 3
    m2 = load_model(result.last_ckpt)
    assert m2.hparams == m.hparams and m2.n_classes == 3
    assert torch.equal(m2.class_prior, torch.tensor([0.5, 0.3, 0.2]))
    assert torch.equal(m2.sample_labels(50, seed=1), m.sample_labels(50, seed=1))
    assert torch.equal(_sample(m2, 6, seed=2), _sample(m, 6, seed=2))
    assert torch.equal(_sample(m2, 6, seed=2, labels=[2] * 6), _sample(m, 6, seed=2, labels=[2] * 6))


# ------------------------------------------------------------------------- classifier-free guidance
def test_guidance_combines_conditional_and_null_denoisers():
    m = _perturbed(_model("ddpm"))
    x, t, y = torch.randn(4, *DIGITS), torch.tensor([0, 5, 10, 19]), torch.tensor([0, 1, 2, 1])
    null = torch.full((4,), 3)
    with torch.no_grad():
        eps_c, eps_u = m.ema(x, t, y), m.ema(x, t, null)
        assert not torch.allclose(eps_c, eps_u)
        assert torch.equal(m.guided_eps(x, t, y, 0.0), eps_u)
        assert torch.equal(m.guided_eps(x, t, y, 1.0), eps_c)
        torch.testing.assert_close(m.guided_eps(x, t, y, 2.5), eps_u + 2.5 * (eps_c - eps_u))
        # denoising_loss without labels scores the unconditional (null-label) denoiser
        gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
        eps = torch.randn(x.shape, generator=gen())
        assert torch.equal(m.denoising_loss(x, t, gen()), m._loss(m.ema, x, t, eps, null))
        assert torch.equal(m.denoising_loss(x, t, gen(), labels=y), m._loss(m.ema, x, t, eps, y))
    # w = 0 is the unconditional sampler: the labels no longer matter; w = 1 and 3 differ from it
    s0 = m.sample(6, seed=1, steps=5, labels=[0] * 6, guidance_scale=0)
    assert torch.equal(s0, m.sample(6, seed=1, steps=5, labels=[2] * 6, guidance_scale=0))
    for w in (1.0, 3.0):
        assert not torch.allclose(s0, m.sample(6, seed=1, steps=5, labels=[0] * 6, guidance_scale=w))
    assert torch.equal(m.sample(6, seed=1, steps=5, labels=[1] * 6),
                       m.sample(6, seed=1, steps=5, labels=[1] * 6, guidance_scale=2.0))  # the default


def test_cond_drop_replaces_training_labels_by_null():
    m = _model("ddpm", cond_drop=0.5)
    seen = []
    forward = m.net.forward
    m.net.forward = lambda x, t, labels=None: seen.append(labels) or forward(x, t, labels)
    y = torch.arange(2000) % 3
    m.training_step((torch.rand(2000, *DIGITS), y), 0)
    (labels,) = seen
    dropped = labels == 3
    assert abs(dropped.float().mean() - 0.5) < 0.05 and torch.equal(labels[~dropped], y[~dropped])


# -------------------------------------------------------------------------------------- DP-SGD
@pytest.mark.slow  # Opacus' import and noise search take seconds
@pytest.mark.parametrize("kind", ["vae", "gan"])
def test_dp_per_sample_gradients_see_labels(kind):
    """Opacus' per-sample gradients of a conditional model (labels as one-hot inputs; the GAN's
    projection embedding) are each record's own loss gradient."""
    from genlab.train import dp

    seed_everything(0)
    kw = {"spectral_norm": False} if kind == "gan" else {}
    m = build_model(kind, list(DIGITS), n_classes=3, width=32, depth=1, latent_dim=4, **kw)
    x, y = torch.rand(8, *DIGITS), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    if kind == "vae":
        params = [*m.encoder.parameters(), *m.decoder.parameters()]

        def losses():  # the same reparameterisation noise on every call
            rec, kl = m.loss_terms(x, torch.Generator().manual_seed(0), y)
            return rec + kl
    else:
        params = list(m.discriminator.parameters())
        assert any(isinstance(mod, torch.nn.Embedding) for mod in m.discriminator.modules())

        def losses():
            return F.softplus(-m.discriminate(x, y))
    # each record's own gradient, before Opacus' hooks are on
    own = {i: torch.autograd.grad(losses()[i], params, allow_unused=True) for i in (0, 5)}
    dp.make_private(m, DataLoader(TensorDataset(x, y), batch_size=4), target_epsilon=2.0, target_delta=1e-5,
                    max_grad_norm=1.0, epochs=1, accountant="rdp")  # rdp: a faster noise search than prv
    losses().mean().backward()
    for i, grads in own.items():  # records of different labels
        for p, g in zip(params, grads):
            assert p.grad_sample.shape[0] == 8
            torch.testing.assert_close(p.grad_sample[i], torch.zeros_like(p) if g is None else g,
                                       rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_dp_conditional_vae_fits(labelled3, tmp_path, one_thread):
    """DP-SGD training of a conditional VAE runs end to end on the Poisson loader Opacus returns."""
    from genlab.train import dp

    seed_everything(0)
    m = build_model("vae", list(DIGITS), n_classes=3, width=32, depth=1, latent_dim=4)
    x, y = labelled3
    st = dp.make_private(m, DataLoader(TensorDataset(x, y), batch_size=64), target_epsilon=4.0,
                         target_delta=1e-5, max_grad_norm=1.0, epochs=2)
    before = [p.detach().clone() for p in m.parameters()]
    result = fit(m, ckpt_dir=tmp_path, cfg=TrainConfig(max_epochs=2, seed=0), train_dataloaders=st.train_loader,
                 val_dataloaders=DataLoader(TensorDataset(x, y), batch_size=256))
    assert result.epochs_run == 2 and torch.isfinite(torch.tensor(result.final_val_loss))
    assert all(not torch.equal(a, b) for a, b in zip(before, m.parameters()))
    assert 0 < st.epsilon() <= 4.0 + 1e-6
    assert load_model(result.last_ckpt).n_classes == 3


# ------------------------------------------------------------------------ conditioning is learnt
def _two_blobs(n=1024):
    """Label 0 near (-2, 0), label 1 near (+2, 0): the label decides the sign of x₀."""
    gen = torch.Generator().manual_seed(0)
    y = torch.arange(n) % 2
    x = torch.randn(n, 2, generator=gen) * 0.3 + torch.stack([4.0 * y - 2, torch.zeros(n)], 1)
    return x, y


@pytest.mark.parametrize("kind,epochs,kw", [
    # β = 1: with a weaker KL term a 2-d latent also encodes the side, and prior samples put
    # 18% of label 1 on the wrong side (β = 0.25); the label still decides most of them
    ("vae", 60, {"width": 64, "latent_dim": 2, "beta": 1.0}),
    ("gan", 10, {"width": 64, "latent_dim": 2, "lr_g": 1e-3, "lr_d": 1e-3}),
    ("ddpm", 40, {"width": 64, "timesteps": 50}),
])
@pytest.mark.slow
def test_conditioning_is_learnt_on_two_blobs(kind, epochs, kw, one_thread):
    """A label-blind model would put half of each label's samples on the wrong side."""
    x, y = _two_blobs()
    seed_everything(0)
    m = build_model(kind, [2], n_classes=2, **kw)
    trainer = L.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, accelerator="cpu")
    trainer.fit(m, train_dataloaders=DataLoader(TensorDataset(x, y), batch_size=128, shuffle=True))
    for label, sign in ((0, -1), (1, 1)):
        s = _sample(m, 400, seed=0, labels=[label] * 400, **({"steps": 20} if kind == "ddpm" else {}))
        share = (torch.sign(s[:, 0]) == sign).float().mean()
        assert share > 0.9, (kind, label, float(share))
