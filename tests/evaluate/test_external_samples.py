"""External samples (`samples=path.npz`) through the evaluation glue, end to end: run folder with
no checkpoint → load_context → extractor → evaluate → headline JSON."""

import json

import numpy as np
import pytest

from genlab import data, params
from genlab.evaluate import evaluation as E
from genlab.ops import reports

DS = data.load_dataset("digits")
SPEC = data.DataSpec.build(DS, seed=0)


@pytest.fixture(scope="module")
def run_dir(digits_run):
    return str(digits_run.path)  # what 01_train leaves; no model.ckpt: samples come from elsewhere


def _evaluate(run_dir, path):
    p = params.EvaluateParams(run_dir=run_dir, samples=str(path), n_draws=3)
    ctx = E.load_context(p)
    assert ctx.model is None and str(path) in ctx.samples_source
    ext = E.make_extractor(ctx, p)
    ev = E.evaluate(ctx, ext, p)
    h = E.headline(ev, ext, ctx)
    doc = reports.write_headline(ctx.run, "02_evaluate", h, provenance=reports.provenance(p),
                                 tables=E.tables(ev))
    json.dumps(doc, allow_nan=False)
    assert json.loads((ctx.run.path / "02_evaluate.json").read_text())["fd"] == doc["fd"]
    return ev, doc


def test_real_holdout_records_as_samples_score_like_the_floor(run_dir, tmp_path):
    a = SPEC.pool("holdout_a")
    path = tmp_path / "real.npz"
    np.savez(path, x=DS.x[a], y=DS.y[a])  # samples with labels of their own: TSTR uses them
    ev, h = _evaluate(run_dir, path)
    assert ev.rows[0]["row"] == "samples" and h["n"] == len(a)
    for key in ("fd", "fd_infinity", "kid", "inception_score", "precision", "recall", "density",
                "coverage", "authenticity", "c2st_auc", "tstr_accuracy", "trtr_accuracy",
                "tstr_ece", "extractor_accuracy", "fd_real_vs_real"):
        assert h[key] is not None, key
    for key in ("fd", "kid", "precision", "coverage", "c2st_auc"):
        assert h[f"{key}_ci_low"] <= h[key] <= h[f"{key}_ci_high"], key
    # the same records as the real-vs-real row: the same numbers
    assert h["fd"] == pytest.approx(h["fd_real_vs_real"], rel=1e-12)
    assert h["fd_ratio_to_floor"] == pytest.approx(1.0)
    assert h["c2st_auc"] < 0.7 and h["tstr_accuracy"] > 0.8


def test_noise_samples_are_judged_bad(run_dir, tmp_path):
    path = tmp_path / "noise.npz"
    np.savez(path, x=np.random.default_rng(0).uniform(0, 1, (300, 1, 8, 8)).astype(np.float32))
    ev, h = _evaluate(run_dir, path)
    assert h["n"] == 300 and h["c2st_auc"] >= 0.95
    assert h["fd"] > 3 * h["fd_real_vs_real"] and h["samples_source"].startswith("external")
    # no 'y' in the file: no labels of their own, so no TSTR; the pseudo-label diagnostic stands
    # beside the noise row's
    assert h["tstr_accuracy"] is None and "external samples without 'y'" in h["tstr_accuracy_na_reason"]
    assert h["tstr_pseudo_label_accuracy"] is not None
    assert h["tstr_pseudo_label_accuracy_baseline"] is not None


def test_a_copier_is_caught_by_authenticity_and_the_gmm_is_a_generator(run_dir, tmp_path):
    """Member records given as samples look excellent on fidelity, and authenticity catches
    them: its interval lies below the floor's (real records never trained on). A GaussianMixture
    sampled outside the report, given as samples, is a generator: between floor and noise."""
    mem = SPEC.pool("members")
    path = tmp_path / "copier.npz"
    np.savez(path, x=DS.x[mem][:360])
    _, copier = _evaluate(run_dir, path)
    assert copier["authenticity"] <= 0.05
    assert copier["authenticity_ci_high"] < copier["authenticity_real_vs_real_ci_low"]
    assert copier["fd"] < 2 * copier["fd_real_vs_real"]  # fidelity alone would not notice
    gx = E.gmm_baseline(DS.x[mem], 360, seed=5, is_image=True)
    np.savez(path, x=gx)
    _, gmm = _evaluate(run_dir, path)
    assert gmm["fd_real_vs_real"] < gmm["fd"] < gmm["fd_baseline"]
    assert gmm["authenticity"] > 0.3
