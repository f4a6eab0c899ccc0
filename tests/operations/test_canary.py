"""The canary decision: its stated error rates hold in simulation, failures roll back."""

import numpy as np
import pytest

from genlab.operations.canary import decide


def _metrics(x1, n1, x2, n2, failed=0):
    return {"champion_completion_successes": x1, "champion_completion_n": n1,
            "candidate_completion_successes": x2, "candidate_completion_n": n2,
            "candidate_requests": 10, "candidate_failed_requests": failed}


def test_clear_cases():
    assert decide(_metrics(900, 1000, 450, 500)).action == "promote"
    assert decide(_metrics(900, 1000, 150, 500)).action == "rollback"
    assert decide(_metrics(900, 1000, 30, 50)).action == "continue"  # too few records
    assert decide(_metrics(900, 1000, 450, 500, failed=1)).action == "rollback"


def test_error_rates_hold_in_simulation():
    rng = np.random.default_rng(0)
    trials, alpha, margin = 2000, 0.05, 0.05
    # equal arms: a rollback is the error; its rate is at most alpha (plus Monte-Carlo error)
    equal = [decide(_metrics(rng.binomial(800, 0.85), 800, rng.binomial(200, 0.85), 200),
                    alpha=alpha, margin=margin).action for _ in range(trials)]
    assert np.mean([a == "rollback" for a in equal]) < alpha + 3 * np.sqrt(alpha / trials)
    # a candidate worse by exactly the margin: a promotion is the error
    worse = [decide(_metrics(rng.binomial(800, 0.85), 800, rng.binomial(200, 0.80), 200),
                    alpha=alpha, margin=margin).action for _ in range(trials)]
    assert np.mean([a == "promote" for a in worse]) < alpha + 3 * np.sqrt(alpha / trials)


def test_acceptance_when_no_class_was_requested():
    m = {"champion_completion_n": 0, "candidate_completion_n": 0, "candidate_requests": 5,
         "champion_acceptance_successes": 850, "champion_acceptance_n": 1000,
         "candidate_acceptance_successes": 100, "candidate_acceptance_n": 400}
    d = decide(m)
    assert d.metric == "acceptance" and d.action == "rollback"
    with pytest.raises(ValueError, match="no candidate requests"):
        decide({"champion_completion_n": 10})
