"""The retraining trigger and the real-production check of 04_drift_study (genlab.drift_study.retrain),
on a tiny VAE trained for one epoch on digits: the rule's decision, the run's own model and
checkpoints left untouched, the old-vs-new comparison on a part disjoint from the fine-tuning
part, and `production=path.npz` reporting drift on shifted records and none on unshifted ones."""

import hashlib
import shutil

import numpy as np
import pytest
import torch

from genlab import data
from genlab.drift_study import retrain as drift_retrain
from genlab.train import training
from genlab.drift_study.study import pca_representation
from genlab.models import build_model, load_model
from genlab.ops.runs import RunFolder
from genlab.drift_study.shifts import Pool, Shift
from genlab.params import DriftStudyParams

pytestmark = pytest.mark.slow  # every test here trains a model


@pytest.fixture(scope="module")
def ctx(digits, digits_spec, tiny_run):
    ds, spec, run = digits, digits_spec, tiny_run
    members = ds.x[spec.pool("members")]
    reps = {"pca": pca_representation(members, 5)}
    reference = ds.x[spec.pool("holdout_a")]
    prod = spec.pool("holdout_b")
    return {"ds": ds, "spec": spec, "run": run, "reps": reps, "reference": reference,
            "pool": Pool(ds.x[prod], ds.y[prod])}


BASE = {"n_permutations": 99, "retrain_shift": "transform:large", "retrain_epochs": 1}


def _p(**kw) -> DriftStudyParams:
    return DriftStudyParams(**{**BASE, **kw})


def _digests(run: RunFolder) -> dict[str, str]:
    files = [run.model_ckpt, *sorted(run.checkpoints.rglob("*"))]
    return {str(f): hashlib.sha256(f.read_bytes()).hexdigest() for f in files if f.is_file()}


def test_no_shift_does_not_trigger_and_fine_tunes_nothing(ctx, monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("fine_tune called although the rule did not fire")

    monkeypatch.setattr(drift_retrain, "fine_tune", refuse)
    out = drift_retrain.retrain_scenario(ctx["run"], ctx["reference"], ctx["pool"], ctx["reps"],
                                         _p(retrain_shift="none"))
    assert out["retrain_recommended"] is False or out["retrain_recommended"] == np.False_
    assert out["retrain_window_pvalue"] > 0.01
    assert out["retrain_rule"] == "mmd@pca p <= 0.01 on >= 50 records"
    for k in ("fd_after_retrain", "score_after_retrain", "pvalue_new_reference_vs_heldout"):
        assert out[k] is None and out[f"{k}_na_reason"] == "retraining not recommended by the rule"
    assert out["fd_before_retrain"] > 0 and out["score_before_retrain"] is not None


def test_threshold_decides(ctx, monkeypatch):
    """The same window, p = 1/(B+1) = 0.01 under large transforms: fires at 0.01, not at 0.005."""
    monkeypatch.setattr(drift_retrain, "fine_tune", lambda run, x, p, labels=None: load_model(run.model_ckpt))
    fired = drift_retrain.retrain_scenario(ctx["run"], ctx["reference"], ctx["pool"], ctx["reps"],
                                           _p())
    assert fired["retrain_window_pvalue"] == pytest.approx(0.01)
    assert fired["retrain_recommended"]
    assert fired["fd_after_retrain"] is not None
    held = drift_retrain.retrain_scenario(ctx["run"], ctx["reference"], ctx["pool"], ctx["reps"],
                                          _p(retrain_threshold=0.005))
    assert not held["retrain_recommended"] and held["fd_after_retrain"] is None


def test_bad_rule_parameters_are_refused(ctx):
    with pytest.raises(ValueError, match="retrain_min_window"):
        drift_retrain.retrain_scenario(ctx["run"], ctx["reference"], ctx["pool"], ctx["reps"],
                                       _p(retrain_min_window=10_000))
    with pytest.raises(ValueError, match="retrain_representation"):
        drift_retrain.retrain_scenario(ctx["run"], ctx["reference"], ctx["pool"], ctx["reps"],
                                       _p(retrain_representation="latent"))
    with pytest.raises(ValueError, match="retrain_detector"):
        drift_retrain.retrain_scenario(ctx["run"], ctx["reference"], ctx["pool"], ctx["reps"],
                                       _p(retrain_detector="chi2"))


def test_fine_tune_leaves_run_untouched_and_compares_on_disjoint_half(ctx, monkeypatch):
    run = ctx["run"]
    before = _digests(run)
    seen: dict[str, list[np.ndarray]] = {"tune": [], "held": []}
    real_fine_tune, real_fd = drift_retrain.fine_tune, drift_retrain._fd

    def fine_tune(run_, x, p, labels=None):
        seen["tune"].append(np.array(x))
        return real_fine_tune(run_, x, p, labels)

    def fd(model, held, feat, seed):
        seen["held"].append(np.array(held))
        return real_fd(model, held, feat, seed)

    monkeypatch.setattr(drift_retrain, "fine_tune", fine_tune)
    monkeypatch.setattr(drift_retrain, "_fd", fd)
    out = drift_retrain.retrain_scenario(run, ctx["reference"], ctx["pool"], ctx["reps"], _p())
    assert out["retrain_recommended"] and out["fd_after_retrain"] is not None
    assert isinstance(out["retrain_helped"], bool)
    lo, hi = out["retrain_fd_change_ci_low"], out["retrain_fd_change_ci_high"]
    assert lo <= out["retrain_fd_change"] <= hi and out["retrain_helped"] == (hi < 0)

    # the run's model.ckpt and artifacts/checkpoints are byte-identical; the new model is apart
    assert _digests(run) == before
    new_ckpt = run.artifacts / drift_retrain.RETRAIN_DIR / "last.ckpt"
    assert new_ckpt.is_file()
    old, new = load_model(run.model_ckpt).state_dict(), load_model(new_ckpt).state_dict()
    assert any(not torch.equal(old[k], new[k]) for k in old)

    # old and new are compared on the held-out part, disjoint from the fine-tuning part
    (tune,), (held_old, held_new) = seen["tune"], seen["held"]
    assert np.array_equal(held_old, held_new)
    assert len(tune) + len(held_old) == len(ctx["pool"].x)
    rows = lambda a: {r.tobytes() for r in a.reshape(len(a), -1)}  # noqa: E731
    assert not rows(tune) & rows(held_old)


# ------------------------------------------------------------------------- production=.npz
def _npz(tmp_path, name, x):
    path = tmp_path / f"{name}.npz"
    np.savez(path, x=x)
    return data.load_dataset(str(path)).x  # the notebook's path: data.load_dataset(npz)


def test_production_npz_drift_and_no_drift(ctx, tmp_path):
    pool = ctx["pool"]
    p = DriftStudyParams(n_permutations=99)
    clean = _npz(tmp_path, "clean", pool.x[:120])
    shifted = _npz(tmp_path, "shifted", Shift("transform", "large", 1.0).draw(
        pool, 120, np.random.default_rng(1)))
    rows = {name: {r["method"]: r for r in drift_retrain.production_check(
        ctx["reference"], x, ctx["reps"], p)} for name, x in (("clean", clean), ("shifted", shifted))}
    assert set(rows["clean"]) == {"mmd@pca", "ks_bonferroni@pca", "ks_fdr@pca", "c2st@pca"}
    for r in rows["clean"].values():
        assert 0 < r["p_value"] <= 1 and np.isfinite(r["effect_size"])
    assert not rows["clean"]["mmd@pca"]["drift"] and rows["clean"]["mmd@pca"]["p_value"] > 0.05
    assert all(r["drift"] for r in rows["shifted"].values()), rows["shifted"]
    assert rows["shifted"]["mmd@pca"]["effect_size"] > rows["clean"]["mmd@pca"]["effect_size"]


def test_production_of_the_wrong_shape_is_refused(ctx, tmp_path):
    x = _npz(tmp_path, "small", np.zeros((10, 4, 4), np.uint8))
    with pytest.raises(ValueError, match="shape"):
        drift_retrain.production_check(ctx["reference"], x, ctx["reps"],
                                       DriftStudyParams(n_permutations=19))
