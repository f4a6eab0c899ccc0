"""Pre-training screens (genlab.security.screens) on digits poisoned at 10%: each screen finds
the poison it is built for at a small false-flag rate; scores count what they should."""

import numpy as np
import pytest

from genlab.security import poisoning as PZ
from genlab.security import screens as SC


@pytest.fixture(scope="module")
def setup(digits, digits_spec):
    idx = digits_spec.pool("members")
    return digits.x[idx], digits.y[idx], digits.x[digits_spec.pool("holdout_a")]


def _flags(kind, setup):
    x, y, ref = setup
    pool = PZ.poison(kind, x, y, 0.1, seed=0, conditional=True, is_image=True, n_classes=10)
    return pool, SC.run_screens(pool.x, pool.y, ref, seed=0)


@pytest.mark.parametrize("kind, screen", [("label_flip", "label_issues"),
                                          ("outlier", "outliers"),
                                          ("near_duplicate", "near_duplicates")])
def test_each_screen_catches_its_poison(kind, screen, setup):
    pool, flags = _flags(kind, setup)
    s = SC.screen_scores(flags[screen], pool.poisoned)
    assert s["recall"] >= 0.7 and s["precision"] >= 0.7 and s["false_flag_rate"] <= 0.03


def test_label_issues_flag_few_clean_records(setup):
    """cleanlab's confident learning on unpoisoned digits: a bool mask, under 3% flagged."""
    x, y, _ = setup
    flags = SC.label_issues(x, y, seed=0)
    assert flags.dtype == bool and flags.shape == (len(x),) and flags.mean() < 0.03


def test_scores_count_true_and_false_flags():
    s = SC.screen_scores(np.array([1, 1, 0, 0, 1], bool), np.array([1, 0, 0, 1, 0], bool))
    assert s == {"flagged": 3, "poisoned": 2, "true_positives": 1, "clean": 3, "false_flags": 2,
                 "false_flag_rate": pytest.approx(2 / 3), "precision": pytest.approx(1 / 3),
                 "recall": 0.5}


def test_quality_rows_without_labels_skip_label_issues(setup):
    x, _, ref = setup
    rows = SC.quality_rows(x[:300], None, ref, seed=0)
    assert [r["check"] for r in rows] == ["screen_label_issues", "screen_outliers",
                                         "screen_near_duplicates"]
    assert rows[0]["detail"] == "no labels: not run" and rows[0]["status"] == "ok"
