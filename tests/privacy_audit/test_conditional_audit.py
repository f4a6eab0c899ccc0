"""Class-conditional models in the privacy audit and the drift study: white-box scores use the
records' true labels when given and are label-free otherwise (CVAE marginal, DDPM null label,
GAN's largest logit), the audit passes the data's labels, shadows and fine-tuning train on
labels, and DP-SGD trains a conditional VAE and DDPM."""

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from genlab import params
from genlab.train import dp
from genlab.drift_study import retrain as drift_retrain
from genlab.train import training
from genlab.privacy_audit.attacks import fit_attacks, model_loss
from genlab.models.scoring import cvae_neg_elbos, model_representations
from genlab.models import build_model, load_model
from genlab.privacy_audit.audit import run_audit
from genlab.privacy_audit.lira import Population, ShadowRecipe, train_shadows
from genlab.ops.runs import RunFolder
from genlab.drift_study.shifts import Pool

pytestmark = pytest.mark.slow  # every test here trains a model

K = 10


@pytest.fixture(scope="module")
def cddpm(d32, train_ddpm):
    return train_ddpm(d32.x("members"), steps=100, y=d32.y("members"), n_classes=K)


@pytest.fixture(scope="module")
def cvae(d32):
    training.seed_everything(0)
    model = build_model("vae", list(d32.ds.data_shape), latent_dim=4, width=32, depth=1, n_classes=K)
    model.set_class_prior(np.bincount(d32.ds.y, minlength=K))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    x, y = d32.x("holdout_b"), d32.y("holdout_b")
    for _ in range(30):
        loss = model.training_step((x, y), 0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def test_conditional_ddpm_scores_use_true_labels_else_are_label_free(d32, cddpm):
    x, y = d32.x("members")[:16], d32.y("members")[:16]
    fitted = fit_attacks(cddpm, d32.x("holdout_a")[:20], d32.x("holdout_b")[:60], mc_samples=2,
                         reference_labels=d32.y("holdout_b")[:60])
    true, free = fitted.score(x, labels=y)["denoising"], fitted.score(x)["denoising"]
    assert not np.allclose(true, free)
    np.testing.assert_array_equal(true, fitted.score(x.numpy(), labels=y.numpy())["denoising"])
    with pytest.raises(ValueError, match=r"labels: expected integers of shape \(16,\) in \[0, 10\)"):
        fitted.score(x, labels=y + 10)
    wrong = model_loss(cddpm, x, mc_samples=2, labels=(y + 1) % K)
    right = model_loss(cddpm, x, mc_samples=2, labels=y)
    assert right.mean() < wrong.mean()  # members fit their own class best


def test_audit_scores_a_conditional_ddpm_with_the_data_labels(d32, tmp_path, cddpm, monkeypatch):
    seen = []
    real = cddpm.denoising_loss

    def spy(x, t, generator=None, ema=True, labels=None):
        seen.append(labels)
        return real(x, t, generator, ema, labels)

    monkeypatch.setattr(cddpm, "denoising_loss", spy)
    p = params.PrivacyAuditParams(n_audit=32, n_generated=40, mc_samples=1, ct_cells=3)
    audit = run_audit(cddpm, d32.ds, d32.spec, tmp_path, p)
    assert seen and all(y is not None for y in seen)
    assert {tuple(y.tolist()) for y in seen} >= {tuple(d32.y("members").tolist())}
    assert audit.numbers["mia_auc_denoising"] > 0.6


def test_cvae_label_free_score_is_the_marginal_over_classes(d32, cvae):
    x = d32.x("holdout_a")[:12]
    per_class = cvae_neg_elbos(cvae, x, draws=4, seed=12_345)
    reps = model_representations(cvae)
    score, latent = reps["score"](x), reps["latent"](x)
    assert score.shape == (12, 1) and latent.shape == (12, 4)
    np.testing.assert_array_equal(score, reps["score"](x))
    lo = per_class.min(1)
    assert np.all(score[:, 0] >= lo + np.log(cvae.class_prior.min().item()) - 1e-9)
    assert np.all(score[:, 0] <= lo - np.log(cvae.class_prior.max().item()) + 1e-9)
    # the attack: labelled ELBO, else the same marginal; recon at the true or the likeliest class
    fitted = fit_attacks(cvae, x, d32.x("holdout_b")[:30], mc_samples=2)
    with_y, free = fitted.score(x, labels=d32.y("holdout_a")[:12]), fitted.score(x)
    assert set(with_y) == set(free) >= {"elbo", "recon"}
    assert not np.allclose(with_y["elbo"], free["elbo"])


def test_conditional_gan_label_free_score_is_the_largest_logit(d32):
    training.seed_everything(0)
    gan = build_model("gan", list(d32.ds.data_shape), width=16, depth=1, n_classes=K).eval()
    x = d32.x("holdout_a")[:5]
    with torch.no_grad():
        logits = torch.stack([gan.discriminate(x, labels=torch.full((5,), c)) for c in range(K)], 1)
    np.testing.assert_allclose(model_representations(gan)["score"](x)[:, 0],
                               -logits.amax(1).double().numpy(), rtol=1e-6)


def test_shadows_of_a_conditional_model_train_on_labels(d32, tmp_path, cvae):
    x, y = d32.x("holdout_b"), d32.y("holdout_b")
    pop = Population(x, y, len(x) // 2, {})
    half = np.arange(len(x)) < len(x) // 2
    (shadow,) = train_shadows(cvae, pop, half[None], ShadowRecipe(epochs=1, batch_size=64),
                              tmp_path / "shadows", seed=0)
    assert shadow.n_classes == K and (tmp_path / "shadows" / "0").is_dir()
    assert shadow.class_prior.sum().item() == pytest.approx(1.0)
    assert not torch.allclose(shadow.class_prior, torch.full((K,), 0.1))  # its half's label shares


@pytest.mark.parametrize("kind", ["vae", "ddpm"])
def test_dp_trains_a_conditional_model(d32, tmp_path, kind):
    training.seed_everything(0)
    hp = {"width": 8, "timesteps": 20} if kind == "ddpm" else {"width": 16, "depth": 1, "latent_dim": 4}
    model = build_model(kind, list(d32.ds.data_shape), n_classes=K, **hp)
    x, y = d32.x("holdout_b")[:128], d32.y("holdout_b")[:128]
    state = dp.make_private(model, DataLoader(TensorDataset(x, y), batch_size=32), target_epsilon=4.0,
                            target_delta=1e-5, max_grad_norm=1.0, epochs=1, accountant="rdp")
    result = training.fit(model, train_dataloaders=state.train_loader, ckpt_dir=tmp_path,
                          cfg=training.TrainConfig(max_epochs=1, batch_size=32, seed=0))
    assert np.isfinite(state.record(result.epochs_run)["epsilon"])


def test_fine_tuning_a_conditional_model_uses_predicted_labels(d32, tmp_path, cvae):
    run = RunFolder(tmp_path / "run")
    torch.save({"state_dict": cvae.state_dict(), "hyper_parameters": dict(cvae.hparams)}, run.model_ckpt)
    x = d32.ds.x[d32.spec.pool("holdout_b")][:64]
    only_threes = np.full(64, 3)
    new = drift_retrain.fine_tune(run, x, params.DriftStudyParams(retrain_epochs=1), labels=only_threes)
    assert new.n_classes == K and new.class_prior[3].item() == pytest.approx(1.0)
    assert load_model(run.model_ckpt).class_prior[3].item() < 0.2  # the run's own model untouched
    # the scenario predicts the labels with the classifier (softmax representation)
    reps = {"pca": lambda a: a.reshape(len(a), -1)[:, :5].astype(np.float64),
            "softmax": lambda a: np.eye(K)[np.full(len(a), 3)]}
    prod = Pool(d32.ds.x[d32.spec.pool("holdout_b")], d32.ds.y[d32.spec.pool("holdout_b")])
    p = params.DriftStudyParams(n_permutations=19, retrain_threshold=0.5, retrain_min_window=20,
                                retrain_shift="transform:large", retrain_epochs=1)
    out = drift_retrain.retrain_scenario(run, d32.ds.x[d32.spec.pool("holdout_a")], prod, reps, p)
    assert out["retrain_recommended"] and np.isfinite(out["score_after_retrain"])
    del reps["softmax"]
    with pytest.raises(ValueError, match="predicted labels"):
        drift_retrain.retrain_scenario(run, d32.ds.x[d32.spec.pool("holdout_a")], prod, reps, p)
