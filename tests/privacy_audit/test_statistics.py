"""Metrics and bounds of genlab.privacy_audit.statistics against scipy / sklearn and hand computations."""

import math

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from genlab.privacy_audit import statistics as pv
from genlab.privacy_audit.memorisation import data_copying_ct, dcr, mann_whitney_z


def test_auc_matches_sklearn_with_ties_and_ci_covers():
    rng = np.random.default_rng(0)
    pos = np.round(rng.normal(0.5, 1, 300), 1)
    neg = np.round(rng.normal(0.0, 1, 250), 1)
    r = pv.roc_auc(pos, neg)
    y = np.r_[np.ones(300), np.zeros(250)]
    assert r.auc == pytest.approx(roc_auc_score(y, np.r_[pos, neg]), abs=1e-12)
    assert r.ci_low < r.auc < r.ci_high
    # DeLong SE for these n is close to Hanley–McNeil's
    a = r.auc
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    hm = math.sqrt((a * (1 - a) + 299 * (q1 - a * a) + 249 * (q2 - a * a)) / (300 * 250))
    assert (r.ci_high - r.ci_low) / (2 * 1.959964) == pytest.approx(hm, rel=0.15)


def test_auc_perfect_and_bad_input():
    assert pv.roc_auc([2, 3], [0, 1]).auc == 1.0
    with pytest.raises(ValueError, match="member_scores: expected finite"):
        pv.roc_auc([np.nan, 1], [0])
    with pytest.raises(ValueError, match="nonmember_scores: expected a non-empty"):
        pv.roc_auc([1.0], [])


def test_roc_curve_endpoints_and_monotone():
    fpr, tpr = pv.roc_curve([3, 2, 2, 1], [2, 0, -1])
    assert (fpr[0], tpr[0]) == (0, 0) and (fpr[-1], tpr[-1]) == (1, 1)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)


def test_tpr_at_fpr_threshold_from_selection_half_and_not_measurable():
    neg_sel = np.arange(100.0)  # threshold for 10 % FPR: above 89
    pos_eval = np.array([95.0, 50.0, 89.5, 200.0])
    neg_eval = np.arange(100.0) + 0.25
    out = pv.tpr_at_fpr(np.zeros(3), neg_sel, pos_eval, neg_eval, 0.1)
    assert out["tpr"] == 0.75 and out["fpr_achieved"] == pytest.approx(0.11)  # 89.25 reaches it
    low = pv.tpr_at_fpr(np.zeros(3), neg_sel, pos_eval, neg_eval, 0.001)
    assert low["tpr"] is None and "not measurable at n=100" in low["na_reason"]


@pytest.mark.parametrize("k,n", [(0, 10), (3, 10), (10, 10), (1, 1000), (57, 120)])
def test_clopper_pearson_matches_scipy(k, n):
    ci = stats.binomtest(k, n).proportion_ci(0.95, method="exact")
    lo, hi = pv.clopper_pearson(k, n, 0.95)
    assert lo == pytest.approx(ci.low, abs=1e-10) and hi == pytest.approx(ci.high, abs=1e-10)
    up = stats.binomtest(k, n, alternative="less").proportion_ci(0.95, method="exact").high
    assert pv.clopper_pearson(k, n, 0.95, sided="upper")[1] == pytest.approx(up, abs=1e-10)


def test_clopper_pearson_bad_input_names_parameter():
    with pytest.raises(ValueError, match=r"k: expected an integer in \[0, 5\], got 6"):
        pv.clopper_pearson(6, 5)
    with pytest.raises(ValueError, match="confidence"):
        pv.clopper_pearson(1, 5, 1.5)


def test_epsilon_from_rates_hand_computed():
    # 0 false positives of 100, 0 false negatives of 100, delta 0, 95 % (97.5 % per rate)
    up = 1 - 0.025 ** (1 / 100)  # CP upper bound for 0 of n: 1 - alpha^(1/n)
    expected = math.log((1 - up) / up)
    assert pv.epsilon_from_rates(0, 100, 0, 100) == pytest.approx(expected, rel=1e-9)
    assert pv.epsilon_from_rates(50, 100, 50, 100) == 0.0


def test_one_run_all_correct_delta0_hand_computation():
    for r in (10, 50, 200):
        q = 0.05 ** (1 / r)
        assert pv.one_run_epsilon(r, r, r, delta=0.0, confidence=0.95) == pytest.approx(
            math.log(q / (1 - q)), abs=1e-5)


def test_one_run_p_value_hand_computation_with_delta():
    # m=4, r=2, v=2, eps=0: q=1/2, beta=1/4; alpha=max(P[B=1]/1, (P[B=1]+P[B=0])/2) = max(.5, .375)
    assert pv.one_run_p_value(4, 2, 2, 0.0, 0.01) == pytest.approx(0.25 + 2 * 4 * 0.01 * 0.5)
    # p-value falls with eps; delta > 0 only weakens the bound
    assert pv.one_run_epsilon(100, 100, 90, delta=1e-5) <= pv.one_run_epsilon(100, 100, 90, delta=0)
    assert pv.one_run_epsilon(100, 100, 50) == 0.0
    with pytest.raises(ValueError, match=r"v \(correct guesses\) <= r"):
        pv.one_run_epsilon(10, 5, 6)


def test_one_run_bound_binomial_definition():
    # the bound is where P[Bin(r, q) >= v] crosses 0.05
    eps = pv.one_run_epsilon(200, 100, 80)
    q = 1 / (1 + math.exp(-eps))
    assert stats.binom.sf(79, 100, q) == pytest.approx(0.05, abs=1e-4)
    assert pv.one_run_epsilon_cap(100) == pytest.approx(pv.one_run_epsilon(100, 100, 100))


def test_canary_guesses_counts():
    s = np.array([5.0, 4, 3, 2, 1, 0])
    inc = np.array([1, 1, 0, 1, 0, 0], bool)
    g = pv.canary_guesses(s, inc, guess_frac=1.0)
    assert (g["m"], g["r"], g["v"]) == (6, 6, 4)
    g2 = pv.canary_guesses(s, inc, guess_frac=0.7)  # k = 2: top 2 in, bottom 2 out
    assert (g2["r"], g2["v"]) == (4, 4)


def test_split_halves_seeded_disjoint():
    a, b = pv.split_halves(11, 3)
    a2, _ = pv.split_halves(11, 3)
    assert np.array_equal(a, a2) and len(a) == 5 and not set(a) & set(b)
    assert sorted(np.r_[a, b]) == list(range(11))


def test_mann_whitney_z_matches_scipy():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=40), rng.normal(0.3, size=55)
    u = stats.mannwhitneyu(a, b, method="asymptotic", use_continuity=False)
    z = mann_whitney_z(a, b)
    assert 2 * stats.norm.sf(abs(z)) == pytest.approx(u.pvalue, rel=1e-9)
    assert z < 0 or u.statistic > 40 * 55 / 2


def test_dcr_and_ct_on_a_copier_and_on_fresh_samples():
    rng = np.random.default_rng(0)
    members, holdout, fresh = rng.normal(size=(300, 8)), rng.normal(size=(300, 8)), rng.normal(size=(300, 8))
    copy = dcr(members, members, holdout, seed=0)  # equal sizes: no member left out of the bank
    assert copy["dcr_share_closer_to_members"] == 1.0 and copy["n_exact_duplicates"] == 300
    # a bank twice the holdout's size is subsampled: copies of left-out members need not win
    half = dcr(members, members, holdout[:150], seed=0)
    assert half["n_bank"] == 150 and half["dcr_share_closer_to_members"] < 1.0
    ok = dcr(fresh, members, holdout, seed=0)
    assert 0.4 < ok["dcr_share_closer_to_members"] < 0.6 and ok["n_exact_duplicates"] == 0
    assert data_copying_ct(members, holdout, members, cells=3)["data_copying_ct"] < -5
    assert abs(data_copying_ct(members, holdout, fresh, cells=3)["data_copying_ct"]) < 3


def _verdict_numbers(memo):
    """Headline numbers of an audit whose attacks found nothing: only the DCR share can speak."""
    from genlab import params
    num = {k: v for k, v in memo.items() if not isinstance(v, (np.ndarray, list))}
    num.update(mia_auc_max=0.5, mia_auc_max_ci_low=0.45, data_copying_ct=None)
    return num, params.PrivacyAuditParams()


def test_dcr_share_of_a_repeating_model_is_one_coin_flip_not_a_verdict():
    """A barely trained model emits nearly the same blob: 2000 samples, one nearest record. The
    share closer to members is 100 % but it is one coin flip: the record-level CI must not be the
    samples' Clopper–Pearson [0.998, 1] and the verdict must not be 'high' on it."""
    from genlab.privacy_audit.audit import _verdict
    rng = np.random.default_rng(1)
    members, holdout = rng.normal(size=(300, 8)), rng.normal(size=(300, 8))
    blob = members[0] + 1e-3 * rng.normal(size=(2000, 8))
    m = dcr(blob, members, holdout, seed=0)
    assert m["dcr_share_closer_to_members"] == 1.0
    assert m["dcr_n_distinct_nearest"] == 1 and m["dcr_n_distinct_nearest_members"] == 1
    verdict, reason = _verdict(*_verdict_numbers(m))
    assert verdict == "low" and "only 1 distinct record" in reason
    # a few blobs (5 records, all members): still too few distinct records to count
    few = members[rng.integers(0, 5, 2000)] + 1e-3 * rng.normal(size=(2000, 8))
    m5 = dcr(few, members, holdout, seed=0)
    assert m5["dcr_n_distinct_nearest"] == 5
    assert _verdict(*_verdict_numbers(m5))[0] == "low"
    # a copier spread over every member: 300 distinct records, CI [1, 1], verdict high
    cp = dcr(members[rng.integers(0, 300, 2000)], members, holdout, seed=0)
    assert cp["dcr_n_distinct_nearest"] == 300 and cp["dcr_share_closer_to_members_ci_low"] == 1.0
    verdict, reason = _verdict(*_verdict_numbers(cp))
    assert verdict == "high" and "300 distinct records" in reason
    # fresh samples: the record-level CI covers 50 % and is wider than the samples' binomial one
    fresh = dcr(rng.normal(size=(2000, 8)), members, holdout, seed=0)
    lo, hi = fresh["dcr_share_closer_to_members_ci_low"], fresh["dcr_share_closer_to_members_ci_high"]
    blo, bhi = pv.clopper_pearson(round(0.5 * 2000), 2000)
    assert lo < 0.5 < hi and hi - lo > bhi - blo
    assert fresh["dcr_n_distinct_nearest"] > 300


def test_dcr_record_share_half_members_half_holdout_blobs():
    """Samples clumped on 40 records, 30 members and 10 holdout: the share (≈ 75 %) is real
    evidence only to the extent 40 records are; its CI stays inside [0, 1] and covers the share."""
    rng = np.random.default_rng(2)
    members, holdout = rng.normal(size=(300, 8)), rng.normal(size=(300, 8))
    recs = np.r_[members[:30], holdout[:10]]
    g = recs[rng.integers(0, 40, 4000)] + 1e-3 * rng.normal(size=(4000, 8))
    m = dcr(g, members, holdout, seed=0)
    assert m["dcr_n_distinct_nearest"] == 40 and m["dcr_n_distinct_nearest_members"] == 30
    lo, hi = m["dcr_share_closer_to_members_ci_low"], m["dcr_share_closer_to_members_ci_high"]
    assert 0.5 < lo < m["dcr_share_closer_to_members"] < hi < 1.0 and hi - lo > 0.15


def test_verdict_reason_fits_a_headline_string_with_every_reason_and_note():
    """The reason goes into the headline JSON, whose strings are capped: the longest combination
    (every elevated reason plus a DCR note) must fit."""
    from genlab import params
    from genlab.privacy_audit.audit import _verdict
    from genlab.ops.reports import MAX_TEXT
    p = params.PrivacyAuditParams()
    base = dict(mia_auc_max=0.6123, mia_auc_max_ci_low=0.5612, dcr_share_closer_to_members=0.9987,
                data_copying_ct=-13.4567, epsilon_lower_bound=12.3456)
    for extra in (dict(dcr_n_distinct_nearest=29), dict(dcr_n_distinct_nearest=1234,
                                                        dcr_share_closer_to_members_ci_low=0.4999)):
        verdict, reason = _verdict({**base, **extra}, p)
        assert verdict == "elevated" and "not counted" in reason and reason.count(";") == 3
        assert len(reason) <= MAX_TEXT, len(reason)
