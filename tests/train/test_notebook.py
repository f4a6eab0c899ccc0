"""Training parameters → model: model-specific parameters, defaults, conditional checks."""

import pytest

from genlab import data, params
from genlab.train import notebook as experiment
from genlab.params import ParameterError

DIGITS = data.load_dataset("digits")


def _p(**kw):
    return params.TrainParams(**kw)


@pytest.mark.parametrize("kw, fragment", [
    ({"model": "vae", "timesteps": 100}, "'timesteps' applies to model ddpm only"),
    ({"model": "ddpm", "latent_dim": 8}, "'latent_dim' applies to model vae / gan only"),
    ({"model": "ddpm", "guidance_scale": 3.0}, "'guidance_scale' applies to conditional=True only"),
    ({"model": "vae", "conditional": True, "canaries": 4}, "'canaries'"),
])
def test_settings_the_model_ignores_are_refused(kw, fragment):
    with pytest.raises(ParameterError, match=fragment):
        experiment.check_params(_p(**kw), DIGITS)


def test_conditional_needs_labels():
    unlabelled = data.Dataset("blobs", "test", DIGITS.x[:50], None)
    with pytest.raises(ParameterError, match="'conditional'.*labelled.*'blobs' has no labels"):
        experiment.check_params(_p(conditional=True), unlabelled)


def test_model_from_params_maps_arch_width_and_ddpm_settings():
    vae = experiment.model_from_params(_p(), DIGITS.data_shape)
    assert (vae.model_kind, vae.hparams.arch, vae.hparams.width) == ("vae", "mlp", 256)
    ddpm = experiment.model_from_params(
        _p(model="ddpm", timesteps=50, schedule="linear", sampler="ddpm", width=8), DIGITS.data_shape)
    hp = ddpm.hparams
    assert (hp.arch, hp.width, hp.timesteps, hp.schedule, hp.sampler) == ("unet", 8, 50, "linear", "ddpm")
    flat = experiment.model_from_params(_p(model="ddpm", arch="mlp", timesteps=10), DIGITS.data_shape)
    assert flat.hparams.arch == "mlp"


def test_conditional_model_gets_the_datas_classes():
    for model in ("vae", "gan", "ddpm"):
        m = experiment.model_from_params(_p(model=model, conditional=True, timesteps=10, width=8),
                                         DIGITS.data_shape, DIGITS.n_classes)
        assert m.n_classes == 10, model
    m = experiment.model_from_params(_p(model="ddpm", conditional=True, guidance_scale=3.5, width=8),
                                     DIGITS.data_shape, 10)
    assert m.hparams.guidance_scale == 3.5
    with pytest.raises(ValueError, match="needs n_classes"):
        experiment.model_from_params(_p(conditional=True), DIGITS.data_shape)


@pytest.mark.slow
def test_class_prior_is_the_members_shares_except_under_dp(tmp_path):
    import numpy as np

    from genlab.ops.runs import RunFolder

    ds = data.Dataset("skewed", "test", DIGITS.x[:300], np.repeat([0, 1, 2], [200, 50, 50]))
    spec = data.DataSpec.build(ds, seed=0)
    members = np.bincount(ds.y[spec.pool("members")], minlength=3)
    for dp, expected in ((False, members / members.sum()), (True, np.full(3, 1 / 3))):
        p = _p(conditional=True, max_epochs=1, width=8, dp=dp)
        experiment.check_params(p, ds)
        model = experiment.model_from_params(p, ds.data_shape, ds.n_classes)
        run = RunFolder(tmp_path / f"dp{dp}")
        experiment.train(model, experiment.datamodule(ds, spec, run, p), run, p)
        assert np.allclose(model.class_prior.numpy(), expected), dp
