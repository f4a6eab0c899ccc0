"""The privacy audit for the DDPM: the white-box denoising attack (Matsumoto et al. 2023) finds
the members of a deliberately overfit tiny DDPM and nothing between two non-member sets, its
scores and SecMI's t-errors (Duan et al. 2023) are deterministic, LiRA and the full audit run
on a DDPM, and DP-SGD trains a DDPM's denoiser (never its EMA copy) or refuses a layer Opacus
cannot handle, naming the parameter."""

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from genlab import data, params
from genlab.train import dp
from genlab.privacy_audit import statistics as privacy
from genlab.privacy_audit.attacks import DENOISING_FRACTIONS, available_attacks, fit_attacks, model_loss
from genlab.models.scoring import denoising_losses, secmi_t_errors, timesteps_at
from genlab.models import build_model
from genlab.privacy_audit.audit import run_audit
from genlab.train.training import TrainConfig, fit, quiet_lightning, seed_everything

pytestmark = pytest.mark.slow  # every test here trains a model

@pytest.fixture(scope="module")
def overfit(d32, train_ddpm):
    return train_ddpm(d32.x("members"), steps=100)


def _audit_params(**kw):
    return params.PrivacyAuditParams(**kw)


def test_denoising_attack_finds_members_and_not_between_non_members(d32, overfit):
    hold = d32.x("holdout_a")
    assert len(hold) >= 96
    fitted = fit_attacks(overfit, hold[:20], d32.x("holdout_b")[:100], mc_samples=4)
    assert "denoising" in fitted.names and fitted.info["denoising_timesteps"] == [5, 10, 20, 30]
    members = fitted.score(d32.x("members"))["denoising"]
    non_a, non_b = fitted.score(hold[:32])["denoising"], fitted.score(hold[32:96])["denoising"]
    auc = privacy.roc_auc(members, non_a).auc
    null = privacy.roc_auc(non_a, non_b).auc
    print(f"overfit DDPM (32 records, 100 steps): denoising AUC {auc:.3f}; non-member vs "
          f"non-member {null:.3f}")
    assert auc > 0.75
    assert 0.3 < null < 0.7


def test_denoising_scores_are_deterministic_and_leave_rng_and_mode(d32, overfit):
    x = d32.x("holdout_a")[:8]
    overfit.train()
    rng = torch.get_rng_state()
    ts = timesteps_at(overfit, DENOISING_FRACTIONS)
    a = denoising_losses(overfit, x, ts, draws=3, seed=1)
    b = denoising_losses(overfit, x.numpy(), ts, draws=3, seed=1)
    assert torch.equal(torch.get_rng_state(), rng) and overfit.training
    overfit.eval()
    assert a.shape == (8, 4) and a.dtype == np.float64 and np.array_equal(a, b)
    assert not np.array_equal(a, denoising_losses(overfit, x, ts, draws=3, seed=2))
    # LiRA's loss: the raw losses at the attack's timesteps, averaged
    loss = model_loss(overfit, x, mc_samples=3, seed=0)
    assert loss.shape == (8,) and np.isfinite(loss).all()
    np.testing.assert_array_equal(loss, model_loss(overfit, x, mc_samples=3, seed=0))


def test_unconditional_ddpm_ignores_labels_and_gets_only_its_attacks(d32, overfit):
    assert available_attacks(overfit) == ["denoising", "secmi", "distance", "mc_ball", "domias"]
    x = d32.x("holdout_a")[:6]
    y = torch.from_numpy(d32.ds.y[d32.spec.pool("holdout_a")][:6])
    np.testing.assert_array_equal(model_loss(overfit, x, mc_samples=2, labels=y),
                                  model_loss(overfit, x, mc_samples=2))


def test_audit_runs_end_to_end_on_a_ddpm(d32, tmp_path, overfit):
    p = _audit_params(n_audit=32, n_generated=40, mc_samples=2, ct_cells=3)
    audit = run_audit(overfit, d32.ds, d32.spec, tmp_path, p)
    rows = {r["attack"]: r for r in audit.attacks}
    assert set(rows) == {"denoising", "secmi", "distance", "mc_ball", "domias"}
    assert set(rows["denoising"]) == set(rows["distance"])
    n = audit.numbers
    assert n["mia_auc_denoising"] == rows["denoising"]["auc"] > 0.7
    assert n["mia_best_attack"] == "denoising" and n["privacy_verdict"] in ("elevated", "high")
    fit_info = audit.tables["attack_fit"]
    assert fit_info["denoising_timesteps"] == [5, 10, 20, 30]
    assert (fit_info["secmi_t"], fit_info["secmi_k"]) == (10, 1)


def test_secmi_round_trip_is_exact_for_a_constant_denoiser_and_deterministic(d32, overfit):
    x = d32.x("holdout_a")[:8]
    untrained = build_model("ddpm", list(d32.ds.data_shape), width=8, timesteps=100)  # ε̂ ≡ 0 at init
    assert np.abs(secmi_t_errors(untrained, x, 10, 1)).max() < 1e-20
    rng = torch.get_rng_state()
    a, b = secmi_t_errors(overfit, x, 10, 1), secmi_t_errors(overfit, x.numpy(), 10, 1)
    assert torch.equal(torch.get_rng_state(), rng)
    assert a.shape == (8,) and (a > 0).all() and np.array_equal(a, b)
    with pytest.raises(ValueError, match=r"1 <= k <= t < T=100"):
        secmi_t_errors(overfit, x, 100, 1)


def test_lira_shadows_of_a_ddpm(d32, train_ddpm, tmp_path):
    """LiRA rebuilds shadows from the DDPM's hyper-parameters and trains them with Lightning."""
    from genlab.privacy_audit.lira import ShadowRecipe

    model = train_ddpm(d32.x("members"), steps=20, timesteps=20)
    p = _audit_params(n_audit=32, n_generated=40, mc_samples=2, ct_cells=3, lira_shadows=4)
    audit = run_audit(model, d32.ds, d32.spec, tmp_path, p, recipe=ShadowRecipe(epochs=1, batch_size=32))
    assert "lira" in {r["attack"] for r in audit.attacks}
    assert sorted(d.name for d in (tmp_path / "shadows").iterdir()) == ["0", "1", "2", "3"]
    assert np.isfinite(audit.numbers["mia_auc_lira"])


def test_dp_trains_the_ddpm_denoiser_and_never_its_ema(d32, tmp_path):
    seed_everything(0)
    model = build_model("ddpm", list(d32.ds.data_shape), width=8, timesteps=50)
    dp.check_supported(model)
    x = d32.x("holdout_b")[:128]
    loader = DataLoader(TensorDataset(x, torch.full((len(x),), -1)), batch_size=32)
    state = dp.make_private(model, loader, target_epsilon=4.0, target_delta=1e-5, max_grad_norm=1.0,
                            epochs=2, accountant="rdp")
    before = [p.clone() for p in model.ema.parameters()]
    result = fit(model, train_dataloaders=state.train_loader, ckpt_dir=tmp_path,
                 cfg=TrainConfig(max_epochs=2, batch_size=32, seed=0))
    record = state.record(result.epochs_run)
    assert record["dp"] and np.isfinite(record["epsilon"]) and 0 < record["epsilon"] <= 4.05
    assert all(hasattr(p, "grad_sample") for p in model.net.parameters())
    assert not any(hasattr(p, "grad_sample") or p.requires_grad for p in model.ema.parameters())
    assert not any(m._forward_hooks or m._backward_hooks for m in model.ema.modules())
    assert int(model.ema_steps) > 0  # the EMA followed the DP-trained weights
    assert any(not torch.equal(a, b) for a, b in zip(before, model.ema.parameters()))


def test_dp_refuses_a_layer_opacus_cannot_handle_naming_the_parameter(d32):
    model = build_model("ddpm", list(d32.ds.data_shape), width=8, timesteps=10)
    model.net.scale = torch.nn.Parameter(torch.ones(1))  # a bare parameter: no per-sample gradient
    with pytest.raises(dp.DPError, match=r"parameter 'net\.scale' belongs to a UNet layer"):
        dp.check_supported(model)
    model = build_model("ddpm", list(d32.ds.data_shape), width=8, timesteps=10)
    model.net.out[0] = torch.nn.BatchNorm2d(8)
    with pytest.raises(dp.DPError, match="BatchNorm"):
        dp.check_supported(model)
