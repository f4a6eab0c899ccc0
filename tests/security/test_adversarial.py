"""The PGD attack (genlab.security.adversarial): ε = 0 changes nothing, the perturbation stays
in the L∞ ball and the data range, success grows with ε; the torch copy of the evaluation's
logistic regression matches scikit-learn's own probabilities."""

import numpy as np
import pytest
import torch

from genlab.evaluate import classifier_metrics as U
from genlab.security import adversarial as ADV

EPS = (0.0, 0.05, 0.1, 0.2, 0.3)


@pytest.fixture(scope="module")
def clf(digits, digits_spec):
    mem = digits_spec.pool("members")
    return U.fit_classifier(digits.x[mem], digits.y[mem], 10)


@pytest.fixture(scope="module")
def test_set(digits, digits_spec):
    b = digits_spec.pool("holdout_b")[:80]
    return digits.x[b], digits.y[b]


def test_torch_logits_match_sklearn(clf, test_set):
    x, _ = test_set
    logits = ADV.torch_logits(clf.estimator)(torch.from_numpy(x))
    np.testing.assert_allclose(torch.softmax(logits, 1).numpy(), clf.estimator.predict_proba(
        x.reshape(len(x), -1)), atol=1e-5)


def test_torch_logits_of_a_two_class_fit_match_sklearn(digits, digits_spec, test_set):
    """A two-class fit has one coefficient row; the torch copy still gives one logit per class
    (synthetic samples of a weak generator can carry two pseudo-labels only)."""
    mem = digits_spec.pool("members")
    two = mem[np.isin(digits.y[mem], (3, 8))]
    est = U.fit_classifier(digits.x[two], digits.y[two], 10).estimator
    x, y = test_set
    logits = ADV.torch_logits(est)(torch.from_numpy(x))
    assert logits.shape == (len(x), 2)
    np.testing.assert_allclose(torch.softmax(logits, 1).numpy(),
                               est.predict_proba(x.reshape(len(x), -1)), atol=1e-5)
    assert ADV.robust_adv(est, x, y, 0.1, steps=3).shape == x.shape  # was an IndexError


def test_eps_zero_changes_nothing_and_budget_is_kept(clf, test_set):
    x, y = test_set
    assert np.array_equal(ADV.robust_adv(clf.estimator, x, y, 0.0, steps=10), x)
    for eps in (0.05, 0.2):
        adv = ADV.robust_adv(clf.estimator, x, y, eps, steps=10)
        assert np.abs(adv - x).max() <= eps + 1e-6
        assert adv.min() >= 0 and adv.max() <= 1
        assert np.abs(adv - x).max() > 0.5 * eps  # it moved


def test_accuracy_falls_as_eps_grows_and_pgd_beats_noise(clf, test_set):
    x, y = test_set
    rows = ADV.robust_accuracy(clf.estimator, x, y, EPS, steps=10, seed=0)
    acc = [r["accuracy"] for r in rows]
    assert acc[0] == pytest.approx(float((clf(x).argmax(1) == y).mean()))
    assert all(a >= b for a, b in zip(acc, acc[1:])) and acc[-1] < 0.2
    assert rows[2]["noise_accuracy"] > rows[2]["accuracy"] + 0.2
    for r in rows:
        assert r["accuracy_ci_low"] <= r["accuracy"] <= r["accuracy_ci_high"]


def test_pgd_refuses_negative_eps():
    with pytest.raises(ValueError, match="eps"):
        ADV.pgd(torch.zeros(2, 3), lambda a: a.sum(1), -0.1)


@pytest.mark.slow
def test_vae_latent_attack_success_grows_with_eps(vae_run, digits, digits_spec, one_thread):
    from genlab.evaluate.features import load_or_train_extractor
    from genlab.models import load_model

    model = load_model(vae_run.model_ckpt)
    ext = load_or_train_extractor(vae_run, digits, digits_spec, seed=0)
    a, b = digits_spec.pool("holdout_a")[:60], digits_spec.pool("holdout_b")
    y = digits.y[a]
    target_y = (y + 1) % 10
    pick = np.array([b[digits.y[b] == t][0] for t in target_y])
    rows = ADV.vae_latent_attack(model, digits.x[a], y, digits.x[pick], target_y,
                                 ext.predict_proba, (0.0, 0.1, 0.3), steps=20, seed=0)
    s = [r["success"] for r in rows]
    assert rows[0]["linf_max"] == 0.0 and s[0] <= 0.05
    assert s[0] < s[1] < s[2] and s[2] > 0.3
    assert rows[2]["noise_success"] < s[2]
    assert all(r["linf_max"] <= r["eps"] + 1e-6 for r in rows)


def test_largest_undetected_stops_at_the_first_detected_budget():
    rows = [{"eps": e, "mmd_detection": m, "ks_detection": k}
            for e, m, k in ((0.0, 0.0, 0.1), (0.1, 0.2, 0.4), (0.2, 0.9, 0.1), (0.3, 0.1, 0.1))]
    assert ADV.largest_undetected(rows, 0.5) == 0.1
    assert ADV.largest_undetected(rows[2:], 0.5) is None
