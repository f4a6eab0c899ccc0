"""The DDPM as a drift sensor: its score representation (denoising loss at T/2, label-free) has
one column, is deterministic, rises on shifted records and feeds the retraining comparison."""

import numpy as np
import pytest

from genlab.drift_study import detectors as drift
from genlab.drift_study import retrain as drift_retrain
from genlab.models.scoring import DRIFT_T_FRACTION, denoising_losses, model_representations, timesteps_at
from genlab.models import build_model
from genlab.drift_study.shifts import Pool, Shift

pytestmark = pytest.mark.slow  # every test here trains a model


@pytest.fixture(scope="module")
def ddpm(d32, train_ddpm):
    return train_ddpm(d32.x("members")[:64], steps=100)


def test_score_representation_is_the_mid_timestep_loss(d32, ddpm):
    reps = model_representations(ddpm)
    assert set(reps) == {"score"}
    x = d32.ds.x[:10]
    s = reps["score"](x)
    assert s.shape == (10, 1) and s.dtype == np.float64
    np.testing.assert_array_equal(s, reps["score"](x))
    assert timesteps_at(ddpm, [DRIFT_T_FRACTION]) == [50]
    np.testing.assert_array_equal(s, denoising_losses(ddpm, x, [50], draws=4, seed=12_345))


def test_score_moves_under_a_shift_and_mmd_sees_it(d32, ddpm):
    score = model_representations(ddpm)["score"]
    reference = d32.x("holdout_a").numpy()[:100]
    prod = Pool(d32.x("holdout_b").numpy())
    rng = np.random.default_rng(0)
    clean = Shift("none").draw(prod, 100, rng)
    noisy = Shift("gaussian_noise", "large").draw(prod, 100, rng)
    s_ref, s_clean, s_noisy = score(reference), score(clean), score(noisy)
    print(f"DDPM score at T/2: reference {s_ref.mean():.4f}, clean {s_clean.mean():.4f}, "
          f"noisy {s_noisy.mean():.4f}")
    assert s_noisy.mean() > s_ref.mean() + 3 * s_ref.std() / 10
    hit = drift.mmd_test(s_ref, s_noisy, alpha=0.05, n_permutations=200, rng=np.random.default_rng(1))
    miss = drift.mmd_test(s_ref, s_clean, alpha=0.05, n_permutations=200, rng=np.random.default_rng(1))
    assert hit.detected and not miss.detected


def test_retrain_score_uses_the_ddpm_score(d32, ddpm):
    held = d32.ds.x[:20]
    expected = float(model_representations(ddpm)["score"](held).mean())
    assert drift_retrain._score(ddpm, held) == pytest.approx(expected)
    assert drift_retrain._score(build_model("gan", list(d32.ds.data_shape)), held) is None
