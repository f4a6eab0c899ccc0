"""03_privacy_audit on samples from another tool (`samples=path.npz`): only the black-box parts
run; a copier is caught by every memorisation metric and the best black-box attack, samples
of a Gaussian mixture fitted on the members are not; the reference rows (copy, fresh records)
bracket the model's."""

import json

import numpy as np
import pytest
from sklearn.mixture import GaussianMixture

from genlab import data, params
from genlab.ops.runs import RunFolder
from genlab.privacy_audit.notebook import AuditReport

DS = data.load_dataset("digits")
SPEC = data.DataSpec.build(DS, seed=0)
WHITE_BOX_NULL = ("mia_auc_white_box", "mia_auc_lira", "epsilon_lower_bound", "dp_epsilon_accountant")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    run = RunFolder(tmp_path_factory.mktemp("ext-audit"))  # what 01_train leaves, no model.ckpt
    SPEC.save(run.data_spec)
    return run.path


def _audit(run_dir, x, tmp_path, **kw):
    path = tmp_path / "samples.npz"
    np.savez(path, x=x.astype(np.float32))
    report = AuditReport(params.PrivacyAuditParams(run_dir=str(run_dir), samples=str(path),
                                                   ct_cells=3, **kw))
    report.provenance()
    report.attacks()
    report.headline()
    doc = json.loads((report.run.path / "03_privacy_audit.json").read_text())
    assert doc["samples_source"] == f"external samples {path}"
    return report.audit.numbers


def _gmm_samples(n=2000):
    members = DS.x[SPEC.pool("members")].reshape(-1, 64)
    gmm = GaussianMixture(10, covariance_type="diag", random_state=0).fit(members)
    return np.clip(gmm.sample(n)[0], 0, 1).reshape(n, *DS.data_shape)


@pytest.fixture(scope="module")
def copier_numbers(run_dir, tmp_path_factory):
    return _audit(run_dir, DS.x[SPEC.pool("members")], tmp_path_factory.mktemp("copy"))


@pytest.fixture(scope="module")
def gmm_numbers(run_dir, tmp_path_factory):
    return _audit(run_dir, _gmm_samples(), tmp_path_factory.mktemp("gmm"))


def test_a_copier_is_flagged_high_by_the_black_box_attacks(copier_numbers):
    n = copier_numbers
    assert n["privacy_verdict"] == "high"
    assert n["mia_auc_black_box"] == pytest.approx(1.0) and n["mia_auc_max"] == pytest.approx(1.0)
    assert n["mia_auc_black_box_ci_low"] <= 1.0 <= n["mia_auc_black_box_ci_high"]
    assert n["n_generated"] == len(SPEC.pool("members"))
    for k in WHITE_BOX_NULL:
        assert n[k] is None and "external samples" in n[f"{k}_na_reason"], k
    assert not any(k in n for k in ("mia_auc_elbo", "mia_auc_recon"))
    # the DCR bank is the members subsampled to holdout_a's size: copies of the others need not win
    assert n["authenticity"] == 0.0 and n["dcr_share_closer_to_members"] >= 0.6


def test_gmm_samples_are_not_flagged_like_a_copier(gmm_numbers, copier_numbers):
    g, c = gmm_numbers, copier_numbers
    assert g["privacy_verdict"] != "high"
    assert g["mia_auc_black_box"] < 0.7 < c["mia_auc_black_box"]
    assert g["authenticity"] > 0.5 and g["n_exact_duplicates"] == 0
    assert g["data_copying_ct"] > -3 > c["data_copying_ct"]


def test_reference_rows_bracket_the_model_and_the_copier_is_flagged_by_every_metric(gmm_numbers):
    """`<metric>_copy` (samples = members) is flagged by every memorisation metric and the best
    black-box attack, beyond the model's and the fresh-records baseline's values."""
    n, p = gmm_numbers, params.PrivacyAuditParams()
    assert n["dcr_share_closer_to_members_copy"] >= p.verdict_share_high
    assert n["data_copying_ct_copy"] <= p.verdict_ct_copying
    assert n["mia_auc_max_copy"] >= p.verdict_auc_high
    assert n["authenticity_copy"] == 0.0 and n["nndr_median_copy"] == 0.0
    assert n["near_duplicate_share_copy"] == 1.0
    more = ("dcr_share_closer_to_members", "near_duplicate_share", "mia_auc_max")
    less = ("data_copying_ct", "authenticity", "nndr_median")
    for k in more:
        assert n[f"{k}_copy"] > max(n[k], n[f"{k}_baseline"]), k
    for k in less:
        assert n[f"{k}_copy"] < min(n[k], n[f"{k}_baseline"]), k
    # fresh real records memorise nothing: the floor the model is read against
    assert 0.4 < n["dcr_share_closer_to_members_baseline"] < 0.6
    assert abs(n["data_copying_ct_baseline"]) < 3 and n["mia_auc_max_baseline"] < 0.65
    assert n["n_samples_baseline"] == len(SPEC.pool("val"))


def test_bad_samples_file_names_the_parameter(run_dir, tmp_path):
    path = tmp_path / "wrong.npz"
    np.savez(path, x=np.zeros((10, 4, 4), np.float32))
    with pytest.raises(data.DataError, match="samples .*expected records of shape"):
        AuditReport(params.PrivacyAuditParams(run_dir=str(run_dir), samples=str(path)))
