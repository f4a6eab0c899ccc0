"""Derived headline numbers (genlab.security.headline): ratios and the share of damage undone
carry the conservative interval of their parts, or null with a reason."""

import pytest

from genlab.security import headline as H


def _r(v, lo, hi, key="fd"):
    return {key: v, f"{key}_ci_low": lo, f"{key}_ci_high": hi}


def test_ratio_interval_spans_the_corners():
    out = {}
    H._ratio(out, "x", _r(80, 70, 90), _r(40, 35, 50), "fd")
    assert out["x"] == 2.0 and out["x_ci_low"] == pytest.approx(70 / 50)
    assert out["x_ci_high"] == pytest.approx(90 / 35)
    out = {}
    H._ratio(out, "x", _r(0.1, 0.0, 0.2, "recall"), _r(0.0, 0.0, 0.0, "recall"), "recall")
    assert out["x"] is None and "reaches 0" in out["x_na_reason"]


def test_damage_undone_needs_damage_and_brackets_its_value():
    out = {}
    H._undone(out, "u", _r(40, 38, 42), _r(60, 56, 64), _r(45, 43, 47), "fd")
    assert out["u"] == pytest.approx(0.75)
    assert out["u_ci_low"] <= 0.75 <= out["u_ci_high"]
    out = {}
    H._undone(out, "u", _r(40, 35, 45), _r(43, 39, 47), _r(41, 37, 45), "fd")
    assert out["u"] is None and "overlaps" in out["u_na_reason"]


def test_poisoning_table_writes_intervals_as_text():
    (row,) = H.poisoning_table([{"kind": "clean", "rate": 0.0, "n_poisoned": 0,
                                 **_r(41.0, 37.1, 45.0)}])
    assert row["fd"] == "41 [37.1, 45]"
