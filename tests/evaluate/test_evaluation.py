"""Evaluation glue: rows, headline keys, hand cases (noise → C2ST ≈ 1, copies → authenticity 0)."""

import json

import numpy as np
import pytest
import torch

from genlab import data, params
from genlab.evaluate import evaluation as E
from genlab.evaluate import metrics as M
from genlab.ops import reports
from genlab.evaluate import classifier_metrics as U
from genlab.models import build_model
from genlab.models.scoring import vae_bounds


class _Copier:
    """A 'generator' that returns member records (a perfect memoriser)."""

    model_kind = "stub"

    def __init__(self, x):
        self.x = torch.from_numpy(x)

    def sample(self, n, seed=None):
        idx = np.random.default_rng(seed).choice(len(self.x), n, replace=False)
        return self.x[np.sort(idx)]


@pytest.fixture(scope="module")
def ctx(digits, digits_spec, digits_run):
    model = _Copier(digits.x[digits_spec.pool("members")])
    return E.Context(digits_run, digits, digits_spec, model, "stub copier")


def _p(**kw):
    return params.typed("evaluate", {"n_draws": 3, **kw})


@pytest.mark.slow
def test_copier_scores_as_memoriser_and_headline_is_valid(ctx):
    p = _p()
    ext = E.make_extractor(ctx, p)
    ev = E.evaluate(ctx, ext, p)
    assert [r["row"] for r in ev.rows] == ["model", "real (holdout_a)", "baseline (noise)",
                                          "baseline (GMM)"]
    model, floor, base, gmm = ev.rows
    assert model["authenticity"] == 0.0 and model["precision"] > 0.95
    assert floor["authenticity"] > 0.3
    assert base["c2st_auc"] > model["c2st_auc"]
    h = E.headline(ev, ext, ctx)
    for key in ("fd", "fd_infinity", "kid", "inception_score", "precision", "recall", "density",
                "coverage", "authenticity", "c2st_auc", "tstr_accuracy", "trtr_accuracy",
                "tstr_ece", "extractor_accuracy", "fd_real_vs_real"):
        assert key in h, key
    for key in ("fd", "kid", "precision", "c2st_auc", "tstr_pseudo_label_accuracy", "fd_real_vs_real",
                "fd_baseline", "precision_baseline"):
        assert h[f"{key}_ci_low"] <= h[key] <= h[f"{key}_ci_high"], key
    # member records carry no labels of their own here: no TSTR, the pseudo-label diagnostic instead
    assert h["tstr_accuracy"] is None and "unconditional model" in h["tstr_accuracy_na_reason"]
    assert h["tstr_pseudo_label_lift_over_noise"] == pytest.approx(
        h["tstr_pseudo_label_accuracy"] - h["tstr_pseudo_label_accuracy_baseline"])
    # unconditional samples have no intended class: no conditional accuracy, a reason instead
    assert h["conditional_accuracy"] is None and "no intended classes" in h["conditional_accuracy_na_reason"]
    assert h["conditional_accuracy_real_vs_real"] > 0.85  # the extractor on real records: the ceiling
    doc = reports.headline(h)
    json.dumps(doc, allow_nan=False)
    json.dumps(E.tables(ev), allow_nan=False, default=float)


def test_noise_generator_is_detected(ctx):
    ext = E.make_extractor(ctx, _p())
    real = ext.features(ctx.ds.x[ctx.spec.pool("holdout_b")])
    noise = ext.features(np.random.default_rng(0).uniform(0, 1, (300, 1, 8, 8)).astype(np.float32))
    assert U.c2st_auc(real, noise, seed=0) >= 0.95


def test_pixels_extractor_gives_null_with_reasons(ctx):
    p = _p(feature_extractor="pixels")
    ext = E.make_extractor(ctx, p)
    ev = E.evaluate(ctx, ext, p)
    h = reports.headline(E.headline(ev, ext, ctx))
    for key in ("inception_score", "tstr_accuracy", "tstr_ece", "tstr_pseudo_label_accuracy",
                "tstr_pseudo_label_lift_over_noise", "extractor_accuracy"):
        assert h[key] is None and h[f"{key}_na_reason"], key
    assert h["fd"] > 0


def test_a_dropped_class_is_named(ctx):
    ext = E.make_extractor(ctx, _p())
    ref_x = ctx.ds.x[ctx.spec.pool("holdout_b")]
    ref = E.Candidate("ref", ref_x, ext.features(ref_x), None, ctx.ds.y[ctx.spec.pool("holdout_b")], "true")
    keep = ref.labels != 3
    gen = E.Candidate("g", ref_x[keep], ref.f[keep], None, ref.labels[keep], "true")
    rows, notes = E.class_slices(gen, ref, 10, _p(), [str(k) for k in range(10)])
    assert rows[3]["fd"] is None and "mode dropped" in rows[3]["note"]
    assert any("class 3" in n for n in notes) and rows[0]["precision"] is not None


def test_class_slices_compare_at_one_size(ctx):
    """Every judged class is measured at the smallest judged slice's size: a class given twice
    as many records does not get a smaller (less biased) FD for it."""
    ext = E.make_extractor(ctx, _p())
    idx = ctx.spec.pool("holdout_b")
    ref_x, y = ctx.ds.x[idx], ctx.ds.y[idx]
    ref = E.Candidate("ref", ref_x, ext.features(ref_x), None, y, "true")
    rows, _ = E.class_slices(ref, ref, 10, _p(), [str(k) for k in range(10)])
    sizes = {r["m"] for r in rows if r["fd"] is not None}
    assert sizes == {min(r["n_real"] for r in rows)}, sizes
    again, _ = E.class_slices(ref, ref, 10, _p(), [str(k) for k in range(10)])
    assert again == rows  # seeded subsamples


def _calibrated(n, k, rng):
    """A perfectly calibrated top-label classifier: confidence c, right with probability c."""
    conf = rng.uniform(1 / k + 0.05, 1, n)
    top = rng.integers(0, k, n)
    proba = np.repeat(((1 - conf) / (k - 1))[:, None], k, 1)
    proba[np.arange(n), top] = conf
    y = np.where(rng.uniform(size=n) < conf, top, (top + rng.integers(1, k, n)) % k)
    return proba, y


def test_ece_is_biased_upward_at_small_n_so_every_ece_is_taken_at_one_n():
    rng = np.random.default_rng(0)
    small = np.array([U.ece(*_calibrated(181, 10, rng)) for _ in range(200)])
    large = np.array([U.ece(*_calibrated(362, 10, rng)) for _ in range(200)])
    se = np.sqrt(small.var(ddof=1) / len(small) + large.var(ddof=1) / len(large))
    assert small.mean() - large.mean() > 4 * se  # the same calibration, a larger ECE at n = 181
    # the glue: TSTR and TRTR go through utility_estimates with one m on one test set, so they
    # are scored on the same subsets (two equally calibrated classifiers give equal ECEs)
    proba, y = _calibrated(362, 10, rng)
    p = params.EvaluateParams(n_draws=5)
    tstr = E.utility_estimates(proba, y, 181, p, "tstr")
    trtr = E.utility_estimates(proba.copy(), y, 181, p, "trtr")
    assert tstr["tstr_ece_n"] == trtr["trtr_ece_n"] == 181
    assert tstr["tstr_ece"] == trtr["trtr_ece"] and tstr["tstr_accuracy"] == trtr["trtr_accuracy"]
    # what the full test set gives instead: a different number, not comparable with the m = 181 one
    assert U.ece(proba, y) != pytest.approx(trtr["trtr_ece"], abs=1e-3)


def test_vae_bounds_iw_below_elbo_and_seeded():
    torch.manual_seed(0)
    vae = build_model("vae", [1, 8, 8], width=32)
    x = torch.rand(20, 1, 8, 8).round()
    a = vae_bounds(vae, x, k=16, seed=1)
    b = vae_bounds(vae, x, k=16, seed=1)
    np.testing.assert_array_equal(a["iw_nll"], b["iw_nll"])
    assert (a["iw_nll"] <= a["neg_elbo"] + 1e-9).all()
    with pytest.raises(M.MetricInputError, match="VAE"):
        vae_bounds(_Copier(np.zeros((3, 1, 8, 8), np.float32)), x)


def test_external_samples_shape_is_checked(tmp_path):
    path = tmp_path / "s.npz"
    np.savez(path, x=np.zeros((20, 16, 16), np.uint8))
    with pytest.raises(data.DataError, match=r"expected records of shape \(1, 8, 8\)"):
        E.load_samples(str(path), (1, 8, 8))
    with pytest.raises(data.DataError, match="expected an .npz"):
        E.load_samples(str(tmp_path / "x.png"), (1, 8, 8))


def test_evaluate_params_spec_matches_notebook_defaults():
    assert params.validate("evaluate", params.defaults("evaluate"))["run_dir"] == "reports/interactive"
    with pytest.raises(params.ParameterError, match="'feature_extractor'"):
        params.validate("evaluate", {"feature_extractor": "vgg"}, partial=True)
