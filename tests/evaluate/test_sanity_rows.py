"""The sanity rows as a gate: on every headline fidelity metric of 02_evaluate the real-vs-real
floor is the best row and the noise baseline the worst, on a small VAE (default architecture,
30 epochs) with the default evaluation parameters. The rows are read back from the headline JSON
keys `<metric>`, `<metric>_real_vs_real` and `<metric>_baseline`, so the keys are tested too.

Per metric, four checks:
- ``floor_best`` / ``noise_worst``: the point estimates order floor ≥ model ≥ noise;
- ``floor_vs_noise_ci``: the floor's and the noise row's CIs do not overlap (the metric tells
  real records from noise at this m);
- ``model_vs_noise_ci``: the model's CI is clear of the noise row's (noise is *clearly* the worst).
The model's CI is not required to be clear of the floor's: a good generator overlaps the floor.

A metric whose current feature space fails a check is marked ``xfail(strict=True)`` with the values
measured here (seed 0, 20 draws, m = 181, normal intervals): the check turns red once the metric is fixed."""

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


def _xfail(reason):
    return pytest.mark.xfail(strict=True, reason=reason)


# checks the current feature space fails, with the values measured here (reason: the numbers)
XFAIL = {
    ("tstr_pseudo_label_accuracy", "noise_worst"): _xfail(
        "pseudo-label TSTR distils the evaluation classifier: noise labelled by it scores 0.800 "
        "on holdout_b, above this VAE's 0.783 (floor 0.939)"),
    ("tstr_pseudo_label_accuracy", "model_vs_noise_ci"): _xfail(
        "pseudo-label TSTR: model 0.783 [0.744, 0.822] vs noise 0.800 [0.760, 0.839]"),
    ("precision", "floor_vs_noise_ci"): _xfail(
        "precision cannot tell real records from noise at m = 181 in the classifier feature "
        "space: floor 0.987 [0.971, 1] overlaps noise 0.923 [0.866, 0.980] (normal intervals)"),
    ("precision", "model_vs_noise_ci"): _xfail(
        "precision in the classifier feature space accepts noise: noise 0.923 [0.866, 0.980] "
        "overlaps the model's 0.958 [0.919, 0.996] (floor 0.987 [0.971, 1])"),
    ("recall", "model_vs_noise_ci"): _xfail(
        "recall in the classifier feature space credits noise: noise 0.379 [0.251, 0.507] "
        "overlaps the model's 0.465 [0.388, 0.542] (floor 0.979 [0.960, 0.997])"),
}


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
def test_floor_is_best_and_noise_is_worst(headline, metric, which, request):
    if (metric, which) in XFAIL:
        request.applymarker(XFAIL[(metric, which)])
    _check(headline[0], metric, which)


def test_every_sanity_metric_has_both_rows_in_the_headline(headline):
    h, _ = headline
    for metric in E.SANITY_METRICS:
        for tag in ("real_vs_real", "baseline"):
            key = f"{metric}_{tag}"
            assert key in h and (h[key] is not None or h[f"{key}_na_reason"]), key
    assert set(E.SANITY_METRICS) == set(ORDERED) - {"tstr_pseudo_label_accuracy"} | NOT_ORDERED


def test_the_headline_counts_the_failed_checks(headline):
    """`sanity_violations` is what a gate reads: here the xfailed precision/recall checks."""
    h, _ = headline
    failed = [r for r in S.sanity_checks(h) if not r["passed"]]
    assert h["sanity_checks"] == len(S.sanity_checks(h)) == 4 * len(S.ORDERED)
    assert h["sanity_violations"] == len(failed)
    assert {(r["metric"], r["check"]) for r in failed} == {
        k for k in XFAIL if k[0] in S.ORDERED}, failed


def test_a_metric_that_ranks_noise_above_the_model_is_named():
    h = {"fd": 30.0, "fd_real_vs_real": 6.0, "fd_baseline": 20.0}
    assert "fd noise_worst: model not better than noise" in S.check(h, "fd", "noise_worst")
    assert S.check(h, "fd", "floor_best") is None
    assert S.sanity_headline(h) == {"sanity_checks": 4, "sanity_violations": 2}


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
