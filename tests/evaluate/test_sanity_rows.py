"""The sanity rows as a gate: on every headline fidelity metric of 02_evaluate the real-vs-real
floor is the best row and the noise baseline the worst, on a small VAE (default architecture,
30 epochs) with the default evaluation parameters. The rows are read back from the headline JSON
keys `<metric>`, `<metric>_real_vs_real` and `<metric>_baseline`, so the keys are tested too.

Per metric, four checks:
- ``floor_best``: the floor beats noise and the model is not clearly (intervals apart) better
  than the floor; ``noise_worst``: the point estimates order floor and model above noise;
- ``floor_vs_noise_ci``: the floor's and the noise row's CIs do not overlap (the metric tells
  real records from noise at this m);
- ``model_vs_noise_ci``: the model's CI is clear of the noise row's (noise is *clearly* the worst).
The model's CI is not required to be clear of the floor's: a good generator overlaps the floor.

Every check passes, the pseudo-label TSTR diagnostic's included. Measured here (seed 0, 20 draws,
m = 181, normal intervals) the closest calls are precision (model 0.858 [0.776, 0.940], noise
0.340 [0.206, 0.473]) and recall (model 0.831, noise 0.128); in the classifier space without the
extractor's "not a record" class noise scored precision 0.923, inside the model's interval."""

import numpy as np
import pytest

from genlab import params
from genlab.evaluate import evaluation as E
from genlab.evaluate import sanity as S
from genlab.evaluate.notebook import gmm_note, pseudo_label_note
from genlab.ops import reports

# the pseudo-label diagnostic is ordered too (in the tests, not in the report's gate: it is a
# diagnostic whose failure against noise is the point of printing it beside the noise row)
ORDERED = {**S.ORDERED, "tstr_pseudo_label_accuracy": S.HIGHER}
PAIRS = S.PAIRS
# authenticity is a memorisation measure, not fidelity: noise far from every member is "authentic"
# (it is in the headline with both rows, but no ordering is asserted)
NOT_ORDERED = {"authenticity"}


@pytest.fixture(scope="module")
def headline(vae_run):
    p = params.EvaluateParams(run_dir=str(vae_run.path))
    ctx = E.load_context(p)
    ext = E.make_extractor(ctx, p)
    ev = E.evaluate(ctx, ext, p)
    return reports.headline(E.headline(ev, ext, ctx)), ev


def _check(h, metric, which):
    for suffix in S.ROWS.values():
        assert h[metric + suffix] is not None, (metric + suffix, h.get(f"{metric}{suffix}_na_reason"))
    problem = S.check(h, metric, which, ORDERED[metric])
    assert problem is None, problem


@pytest.mark.parametrize("which", list(PAIRS))
@pytest.mark.parametrize("metric", list(ORDERED))
def test_floor_is_best_and_noise_is_worst(headline, metric, which):
    _check(headline[0], metric, which)


def test_every_sanity_metric_has_both_rows_in_the_headline(headline):
    h, _ = headline
    for metric in E.SANITY_METRICS:
        for tag in ("real_vs_real", "baseline"):
            key = f"{metric}_{tag}"
            assert key in h and (h[key] is not None or h[f"{key}_na_reason"]), key
    assert set(E.SANITY_METRICS) == set(ORDERED) - {"tstr_pseudo_label_accuracy"} | NOT_ORDERED


def test_the_headline_counts_the_failed_checks(headline):
    """`sanity_violations` is what a gate reads: the number of failed checks, here none."""
    h, _ = headline
    failed = [r for r in S.sanity_checks(h) if not r["passed"]]
    assert h["sanity_checks"] == len(S.sanity_checks(h)) == 4 * len(S.ORDERED)
    assert h["sanity_violations"] == len(failed) == 0, failed


def test_a_metric_that_ranks_noise_above_the_model_is_named():
    h = {"fd": 30.0, "fd_real_vs_real": 6.0, "fd_baseline": 20.0}
    assert "fd noise_worst: model not better than noise" in S.check(h, "fd", "noise_worst")
    assert S.check(h, "fd", "floor_best") is None
    assert S.sanity_headline(h) == {"sanity_checks": 4, "sanity_violations": 2}


def test_a_model_is_failed_only_when_clearly_better_than_the_floor():
    """floor_best fails a model whose interval lies wholly on the better side of the floor's,
    not one that beats the floor's point estimate within the intervals."""
    h = {"recall": 0.99, "recall_ci_low": 0.98, "recall_ci_high": 1.0, "recall_real_vs_real": 0.97,
         "recall_real_vs_real_ci_low": 0.95, "recall_real_vs_real_ci_high": 0.99,
         "recall_baseline": 0.2, "recall_baseline_ci_low": 0.1, "recall_baseline_ci_high": 0.3}
    assert S.check(h, "recall", "floor_best") is None
    h["recall_real_vs_real_ci_high"] = 0.975  # now the model's interval is clear of the floor's
    assert "floor not better than model" in S.check(h, "recall", "floor_best")


def test_floor_best_rarely_fails_a_model_as_good_as_the_data():
    """False-alarm rate of floor_best when model and floor are draws of one estimator: a point
    rule fails half such models, the interval rule about 0.6% (two 95% intervals apart)."""
    rng = np.random.default_rng(0)
    sd, n = 0.01, 4000
    fails_point = fails_rule = 0
    for model, floor in 0.9 + sd * rng.standard_normal((n, 2)):
        h = {"precision": model, "precision_ci_low": model - 1.96 * sd,
             "precision_ci_high": model + 1.96 * sd, "precision_real_vs_real": floor,
             "precision_real_vs_real_ci_low": floor - 1.96 * sd,
             "precision_real_vs_real_ci_high": floor + 1.96 * sd, "precision_baseline": 0.3}
        fails_point += model > floor
        fails_rule += S.check(h, "precision", "floor_best") is not None
    assert 0.45 < fails_point / n < 0.55
    assert fails_rule / n < 0.015


def test_unconditional_tstr_is_null_and_pseudo_label_diagnostic_sits_beside_noise(headline):
    h, ev = headline
    for key in ("tstr_accuracy", "tstr_ece"):
        assert h[key] is None and "unconditional model" in h[f"{key}_na_reason"], key
        assert "tstr_pseudo_label_accuracy" in h[f"{key}_na_reason"]
    model, floor, base, _ = ev.rows
    # the noise row's own TSTR is null too, its pseudo-label diagnostic is reported
    assert base["tstr_accuracy"] is None and base["tstr_pseudo_label_accuracy"] is not None
    assert h["tstr_pseudo_label_accuracy_baseline"] == base["tstr_pseudo_label_accuracy"]
    assert h["tstr_pseudo_label_lift_over_noise"] == pytest.approx(
        h["tstr_pseudo_label_accuracy"] - h["tstr_pseudo_label_accuracy_baseline"])
    # the floor has true labels: its TSTR is a number
    assert h["tstr_accuracy_real_vs_real"] > 0.85
    note = pseudo_label_note(ev.rows)
    assert "noise baseline" in note and "lift over noise" in note and "n/a" in note


def test_every_ece_is_at_one_n(headline, digits_spec):
    """TSTR, pseudo-label TSTR and TRTR ECEs all on subsets of one size of holdout_b."""
    h, ev = headline
    m_test = round(0.5 * len(digits_spec.pool("holdout_b")))  # subsample_frac × |holdout_b|
    assert h["tstr_pseudo_label_ece_n"] == h["trtr_ece_n"] == m_test
    assert "tstr_ece_n" not in h  # no own-label TSTR for an unconditional model
    for r in ev.rows:
        ns = {r[k] for k in ("tstr_ece_n", "tstr_pseudo_label_ece_n", "trtr_ece_n") if k in r}
        assert ns == {m_test}, r["row"]


def test_gmm_baseline_row_sits_between_floor_and_noise_and_the_report_says_who_wins(headline):
    """The classical GaussianMixture generator is a real generator: worse than the floor, far
    better than noise on FD; the headline carries its rows and whether the model beats it."""
    h, ev = headline
    assert ev.rows[3]["row"] == "baseline (GMM)"
    for metric in E.SANITY_METRICS:
        assert f"{metric}_gmm" in h, metric
    assert h["fd_real_vs_real"] < h["fd_gmm"] < h["fd_baseline"]
    assert h["fd_ratio_to_gmm"] == pytest.approx(h["fd"] / h["fd_gmm"])
    assert h["beats_gmm"] == (h["fd_ci_high"] < h["fd_gmm_ci_low"])
    note = gmm_note(ev.rows)
    assert ("does NOT beat it" in note) == (not h["beats_gmm"])
    better = [dict(ev.rows[0], fd=1.0, fd_ci_low=0.5, fd_ci_high=1.5), *ev.rows[1:]]
    assert "the model beats it" in gmm_note(better)
