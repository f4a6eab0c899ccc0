"""Training pools of the self-consuming loops (genlab.security.feedback.next_pool)."""

import numpy as np
import pytest

from genlab.security import feedback as FB


def _history():
    return [(np.full((10, 2), g, np.float32), np.full(10, g)) for g in (1, 2)]


def test_replace_mix_accumulate_pools():
    real_x, real_y = np.zeros((10, 2), np.float32), np.zeros(10, int)
    rng = np.random.default_rng(0)
    x, y = FB.next_pool("replace", real_x, real_y, _history(), rng)
    assert (x == 2).all() and (y == 2).all() and len(x) == 10
    x, y = FB.next_pool("mix", real_x, real_y, _history(), rng)
    assert (x[:, 0] == 0).sum() == 5 and (x[:, 0] == 2).sum() == 5 and len(y) == 10
    x, y = FB.next_pool("accumulate", real_x, real_y, _history(), rng)
    assert len(x) == 30 and sorted(set(x[:, 0])) == [0, 1, 2] and len(y) == 30
    x, y = FB.next_pool("accumulate", real_x, None, _history(), rng)
    assert y is None
    with pytest.raises(ValueError, match="loop mode"):
        FB.next_pool("drop", real_x, real_y, _history(), rng)


def test_class_spread_interval_covers_the_value():
    pred = np.r_[np.zeros(60, int), np.ones(40, int)]
    out = FB.class_spread(pred, 3, seed=0)
    assert out["class_spread"] == pytest.approx(0.6)
    assert out["class_spread_ci_low"] <= 0.6 <= out["class_spread_ci_high"]
    assert out["class_shares"] == pytest.approx([0.6, 0.4, 0.0])
