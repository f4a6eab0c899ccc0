"""Poisoned pools (genlab.security.poisoning): each kind changes the training pool as specified
and nothing else, and the trigger detector separates stamped records from real ones."""

import numpy as np
import pytest

from genlab.security import poisoning as PZ


@pytest.fixture(scope="module")
def members(digits, digits_spec):
    idx = digits_spec.pool("members")
    return digits.x[idx], digits.y[idx]


def _pool(kind, members, rate=0.1, conditional=True, **kw):
    x, y = members
    return PZ.poison(kind, x, y, rate, seed=0, conditional=conditional, is_image=True,
                     n_classes=10, **kw)


def _clean_part_unchanged(pool, x, y, relabelled=False):
    n = len(x)
    np.testing.assert_array_equal(pool.x[:n], x)
    np.testing.assert_array_equal(pool.source[:n], np.arange(n))
    if not relabelled:
        np.testing.assert_array_equal(pool.y[:n], y)
        assert not pool.poisoned[:n].any()


def test_backdoor_appends_stamped_copies_relabelled_to_the_target(members):
    x, y = members
    pool = _pool("backdoor", members, target_class=3)
    k = int(round(0.1 * len(x)))
    assert len(pool.x) == len(x) + k and pool.n_poisoned == k
    _clean_part_unchanged(pool, x, y)
    inj, src = pool.x[len(x):], pool.source[len(x):]
    assert (y[src] != 3).all() and (pool.y[len(x):] == 3).all()
    region = PZ.trigger_region(x.shape[1:])
    assert (inj[region] == 1.0).all()
    outside = np.ones(x.shape[1:], bool)
    outside[region[1:]] = False
    np.testing.assert_array_equal(inj[:, outside], x[src][:, outside])  # only the patch changed


def test_unconditional_backdoor_keeps_labels(members):
    x, y = members
    pool = _pool("backdoor", members, conditional=False)
    np.testing.assert_array_equal(pool.y[len(x):], y[pool.source[len(x):]])


def test_label_flip_changes_only_labels_of_the_masked_records(members):
    x, y = members
    pool = _pool("label_flip", members, rate=0.05)
    assert len(pool.x) == len(x) and pool.n_poisoned == int(round(0.05 * len(x)))
    np.testing.assert_array_equal(pool.x, x)
    assert (pool.y[pool.poisoned] != y[pool.poisoned]).all()
    np.testing.assert_array_equal(pool.y[~pool.poisoned], y[~pool.poisoned])
    with pytest.raises(ValueError, match="class-conditional"):
        _pool("label_flip", members, conditional=False)


def test_outliers_are_made_up_records_in_range(members):
    x, y = members
    pool = _pool("outlier", members, rate=0.02)
    _clean_part_unchanged(pool, x, y)
    inj = pool.x[len(x):]
    assert len(inj) == int(round(0.02 * len(x))) and (pool.source[len(x):] == -1).all()
    assert inj.min() >= 0 and inj.max() <= 1 and inj.std() > 0.2


def test_near_duplicates_copy_few_members_closely(members):
    x, y = members
    pool = _pool("near_duplicate", members, duplicate_sources=4)
    _clean_part_unchanged(pool, x, y)
    src = pool.source[len(x):]
    assert set(src) == set(pool.duplicated) and len(pool.duplicated) == 4
    diff = np.abs(pool.x[len(x):] - x[src]).reshape(len(src), -1).mean(1)
    assert diff.max() < 0.05
    np.testing.assert_array_equal(pool.y[len(x):], y[src])
    # the same members are duplicated at every rate
    np.testing.assert_array_equal(_pool("near_duplicate", members, rate=0.02,
                                        duplicate_sources=4).duplicated, pool.duplicated)


def test_fingerprints_are_seeded_and_distinct(members):
    a = _pool("backdoor", members).fingerprint()
    assert a == _pool("backdoor", members).fingerprint()
    assert a != _pool("backdoor", members, rate=0.02).fingerprint()
    x, y = members
    other = PZ.poison("backdoor", x, y, 0.1, seed=1, conditional=True, is_image=True, n_classes=10)
    assert other.fingerprint() != a


def test_bad_rate_and_kind_are_refused(members):
    with pytest.raises(ValueError, match="poison rate"):
        _pool("outlier", members, rate=1.5)
    with pytest.raises(ValueError, match="poison kind"):
        _pool("gradient", members)


def test_trigger_detector_reference_rows(digits, digits_spec, members):
    x, _ = members
    real = digits.x[digits_spec.pool("holdout_b")]
    thr = PZ.calibrate_trigger_threshold(digits.x[digits_spec.pool("holdout_a")], 1.0)
    det = PZ.trigger_detector(thr)
    assert det(real).mean() <= 0.02
    assert det(PZ.stamp_trigger(real, 1.0)).all()
    with pytest.raises(ValueError, match="no trigger can be told apart"):
        PZ.calibrate_trigger_threshold(np.ones((10, 1, 8, 8), np.float32), 1.0)


def test_flat_records_get_a_trigger_off_their_range():
    x = np.random.default_rng(0).normal(size=(200, 16)).astype(np.float32)
    value = PZ.trigger_value(x, is_image=False)
    assert value > x.max()
    det = PZ.trigger_detector(PZ.calibrate_trigger_threshold(x, value))
    assert not det(x).any() and det(PZ.stamp_trigger(x, value)).all()
