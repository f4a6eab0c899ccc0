"""Memorisation measures on hand cases where the members hold a record twice: a copy of it is
a copy (authenticity 0, NNDR 0), and a near-copy of it is not hidden by its twin."""

import numpy as np

from genlab.evaluate.metrics import authenticity
from genlab.privacy_audit.memorisation import dcr


def _members():
    return np.array([[0.0, 0.0], [0.0, 0.0], [5.0, 0.0], [0.0, 5.0], [5.0, 5.0]])  # row 0 twice


def test_a_copy_of_a_duplicated_member_is_not_authentic():
    m = _members()
    assert authenticity(m, m[:1]) == 0.0  # its nearest member (a twin) is 0 away: was "authentic"
    assert authenticity(m, m) == 0.0
    assert authenticity(m, np.array([[12.0, 12.0]])) == 1.0  # farther than its member's neighbour
    assert authenticity(m, np.array([[0.1, 0.0], [9.0, 9.0]])) == 0.5


def test_nndr_of_a_near_copy_of_a_duplicated_member_uses_the_next_distinct_member():
    m = _members()
    holdout = np.array([[2.0, 2.0], [3.0, 3.0], [1.0, 4.0]])
    near = np.array([[0.1, 0.0]])
    d = dcr(near, m, holdout, seed=0)
    # d1 = 0.1 to the duplicated record, d2 = its next *distinct* member at ~5: NNDR ≈ 0.02, not 1
    assert d["nndr_median"] < 0.05
    assert d["authenticity"] == 0.0
    assert dcr(m[:1], m, holdout, seed=0)["gallery"][0][1] in (0, 1)  # indices are the members'
