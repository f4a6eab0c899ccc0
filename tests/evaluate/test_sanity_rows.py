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
measured here (seed 0, 20 draws, m = 181): the check turns red once the metric is fixed."""

import pytest

from genlab import params
from genlab.evaluate import evaluation as E
from genlab.evaluate.notebook import pseudo_label_note
from genlab.ops import reports

# metric → which way is better; C2ST AUC is best at 0.5 (indistinguishable from real)
LOWER, HIGHER, HALF = "lower", "higher", "half"
ORDERED = {"fd": LOWER, "fd_infinity": LOWER, "kid": LOWER, "inception_score": HIGHER,
           "precision": HIGHER, "recall": HIGHER, "density": HIGHER, "coverage": HIGHER,
           "c2st_auc": HALF, "tstr_pseudo_label_accuracy": HIGHER}
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
        "pseudo-label TSTR: model 0.783 [0.748, 0.807] vs noise 0.800 [0.773, 0.832]"),
    ("precision", "model_vs_noise_ci"): _xfail(
        "precision in the classifier feature space accepts noise: noise 0.923 [0.853, 0.953] "
        "overlaps the model's 0.958 [0.928, 0.986] (floor 0.987 [0.972, 0.997])"),
    ("recall", "model_vs_noise_ci"): _xfail(
        "recall in the classifier feature space credits noise: noise 0.379 [0.262, 0.493] "
        "overlaps the model's 0.465 [0.397, 0.529] (floor 0.979 [0.961, 0.994])"),
}


@pytest.fixture(scope="module")
def headline(vae_run):
    p = params.EvaluateParams(run_dir=str(vae_run.path))
    ctx = E.load_context(p)
    ext = E.make_extractor(ctx, p)
    ev = E.evaluate(ctx, ext, p)
    return reports.headline(E.headline(ev, ext, ctx)), ev


def _badness(h, key, direction):
    """(point, low, high) of the row's badness: smaller is better."""
    v = h[key]
    lo, hi = h.get(f"{key}_ci_low", v), h.get(f"{key}_ci_high", v)
    if direction == LOWER:
        return v, lo, hi
    if direction == HIGHER:
        return -v, -hi, -lo
    d = sorted((abs(lo - 0.5), abs(hi - 0.5)))
    return abs(v - 0.5), (0.0 if lo <= 0.5 <= hi else d[0]), d[1]


def _rows(h, metric):
    return {"floor": f"{metric}_real_vs_real", "model": metric, "noise": f"{metric}_baseline"}


PAIRS = {"floor_best": [("floor", "model"), ("floor", "noise")],
         "noise_worst": [("model", "noise"), ("floor", "noise")],
         "floor_vs_noise_ci": [("floor", "noise")],
         "model_vs_noise_ci": [("model", "noise")]}


def _check(h, metric, which):
    direction = ORDERED[metric]
    keys = _rows(h, metric)
    for key in keys.values():
        assert h[key] is not None, (key, h.get(f"{key}_na_reason"))
    bad = {row: _badness(h, key, direction) for row, key in keys.items()}
    values = {row: (h[key], h.get(f"{key}_ci_low"), h.get(f"{key}_ci_high"))
              for row, key in keys.items()}
    for better, worse in PAIRS[which]:
        if which.endswith("_ci"):
            # non-overlapping: the better row's whole interval lies on the good side of the worse one's
            assert bad[better][2] < bad[worse][1], (metric, which, values)
        else:
            assert bad[better][0] < bad[worse][0], (metric, which, values)


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


def test_unconditional_tstr_is_null_and_pseudo_label_diagnostic_sits_beside_noise(headline):
    h, ev = headline
    for key in ("tstr_accuracy", "tstr_ece"):
        assert h[key] is None and "unconditional model" in h[f"{key}_na_reason"], key
        assert "tstr_pseudo_label_accuracy" in h[f"{key}_na_reason"]
    model, floor, base = ev.rows
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
