"""Online LiRA: the balanced IN/OUT design, the population holding every scored record, the
score against scipy's Gaussian log-densities, the recipe read from a run, and (slow) replica
shadows that take exactly the audited model's optimiser steps, under artifacts/shadows/ only."""

import json

import numpy as np
import pytest
import torch
from scipy import stats

from genlab import data, params
from genlab.privacy_audit import lira
from genlab.privacy_audit.audit import draw_scored, run_audit
from genlab.train.canaries import make_canaries

DS = data.load_dataset("digits")


@pytest.mark.parametrize("n_pop,n_train,k", [(20, 10, 4), (20, 10, 8), (30, 18, 6), (128, 64, 5)])
def test_inclusion_matrix_rows_hold_n_train_and_records_are_balanced(n_pop, n_train, k):
    inc = lira.inclusion_matrix(n_pop, n_train, k, seed=3)
    assert inc.shape == (k, n_pop) and (inc.sum(1) == n_train).all()
    per_record = inc.sum(0)
    assert per_record.max() - per_record.min() <= 1
    if 2 * n_train == n_pop and k % 2 == 0:
        assert (per_record == k // 2).all()  # a random half for each shadow, each record IN half
    np.testing.assert_array_equal(inc, lira.inclusion_matrix(n_pop, n_train, k, seed=3))
    assert not np.array_equal(inc, lira.inclusion_matrix(n_pop, n_train, k, seed=4))
    with pytest.raises(ValueError, match="0 < n_train < n_pop"):
        lira.inclusion_matrix(10, 10, 4, seed=0)


@pytest.mark.parametrize("n_train,canaries", [(None, 0), (32, 0), (100, 20)])
def test_population_is_the_training_set_plus_the_scored_records_up_to_2n(n_train, canaries):
    spec = data.DataSpec.build(DS, seed=0, n_train=n_train)
    can = make_canaries(DS, canaries, seed=0) if canaries else None
    mem, non, n = draw_scored(spec, None, seed=0)
    pop = lira.shadow_population(DS, spec, mem, non, can, seed=0, labelled=False)
    n_inc = int(can.included_mask().sum()) if can else 0
    assert pop.n_train == len(spec.pool("members")) + n_inc
    # 2N records when the data has them (digits: 1797 >= 2 * 896)
    assert len(pop.x) == min(2 * pop.n_train, len(DS.x) + canaries)
    np.testing.assert_array_equal(pop.x[: len(spec.pool("members"))], DS.x[spec.pool("members")])
    np.testing.assert_array_equal(pop.x[pop.scored["mem"]], DS.x[mem])
    np.testing.assert_array_equal(pop.x[pop.scored["non"]], DS.x[non])
    assert (pop.scored["non"] >= pop.n_train).all() and (pop.scored["mem"] < pop.n_train).all()
    if can:
        np.testing.assert_array_equal(pop.x[pop.scored["can"]], can.x())
        inc = can.included_mask()
        assert (pop.scored["can"][inc] < pop.n_train).all() and (pop.scored["can"][~inc] >= pop.n_train).all()
    flat = pop.x.reshape(len(pop.x), -1).numpy()
    assert len(np.unique(flat, axis=0)) == len(flat)  # no record twice


def test_lira_online_matches_scipy_gaussian_likelihood_ratio():
    rng = np.random.default_rng(0)
    k, n = 6, 50
    inc = lira.inclusion_matrix(n, n // 2, k, seed=0)
    s = rng.normal(size=(k, n)) + np.where(inc, -1.0, 0.0)  # lower loss when IN
    t = rng.normal(size=n)
    mu_in = np.array([s[inc[:, j], j].mean() for j in range(n)])
    mu_out = np.array([s[~inc[:, j], j].mean() for j in range(n)])
    dev_in = np.concatenate([s[inc[:, j], j] - mu_in[j] for j in range(n)])
    dev_out = np.concatenate([s[~inc[:, j], j] - mu_out[j] for j in range(n)])
    sd_in = np.sqrt((dev_in ** 2).sum() / (inc.sum() - n))  # pooled, one dof per record's mean
    sd_out = np.sqrt((dev_out ** 2).sum() / ((~inc).sum() - n))
    want = stats.norm.logpdf(t, mu_in, sd_in) - stats.norm.logpdf(t, mu_out, sd_out)
    np.testing.assert_allclose(lira.lira_online(t, s, inc), want, rtol=1e-10, atol=1e-12)
    bad = inc.copy()
    bad[:, 0] = False
    with pytest.raises(ValueError, match="every record needs an IN and an OUT shadow"):
        lira.lira_online(t, s, bad)
    with pytest.raises(ValueError, match=r"expected shape \(K, 50\)"):
        lira.lira_online(t, s[:, :10], inc)


def test_recipe_from_the_runs_training_record(tmp_path):
    assert "no 01_train.json" in lira.recipe_from_run(tmp_path)
    base = {"epochs_run": 40, "best_epoch": 11,
            "parameters": {"batch_size": 32, "max_epochs": 40, "early_stopping_patience": 0,
                           "dp": False, "init_from": None, "target_epsilon": 8.0,
                           "target_delta": 1e-5, "max_grad_norm": 1.0}}
    js = tmp_path / "01_train.json"
    js.write_text(json.dumps(base))
    assert lira.recipe_from_run(tmp_path) == lira.ShadowRecipe(epochs=40, batch_size=32)
    base["parameters"].update(early_stopping_patience=5, dp=True)  # the published best epoch
    js.write_text(json.dumps(base))
    r = lira.recipe_from_run(tmp_path)
    assert r.epochs == 12 and r.dp == {"target_epsilon": 8.0, "target_delta": 1e-5,
                                       "max_grad_norm": 1.0, "noise_epochs": 40}
    base["parameters"]["init_from"] = "other.ckpt"
    js.write_text(json.dumps(base))
    assert "fine-tuned" in lira.recipe_from_run(tmp_path)


def test_too_few_shadows_is_a_parameter_error(tmp_path):
    spec = data.DataSpec.build(DS, seed=0)

    class Stub:
        def sample(self, n, seed=None):
            return torch.zeros(n, *DS.data_shape)

    with pytest.raises(params.ParameterError, match="parameter 'lira_shadows': expected 0 or an integer >= 4"):
        run_audit(Stub(), DS, spec, tmp_path, params.PrivacyAuditParams(lira_shadows=2))
