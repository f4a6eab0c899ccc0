"""The canary decision: promote the candidate, roll it back, or keep collecting.

    genlab canary requests.jsonl --run reports/<approved run> [--url http://127.0.0.1:8000]

Inputs are the online metrics of both arms (`online.online_metrics`, split by the log's `version`
field). The quality signal is task completion (share of records the evaluation classifier
assigns to the requested class), or simulated user acceptance where no request named a class.
Rules, in order:

1. any failed request (status ≠ 200) on the candidate → roll back;
2. fewer than `min_records` records on either arm → continue;
3. inferiority: one-sided two-proportion z-test of H0 p_cand ≥ p_champ at level α; rejected →
   roll back. A candidate as good as the champion is rolled back with probability ≤ α;
4. non-inferiority: one-sided z-test of H0 p_cand ≤ p_champ − margin at level α; rejected →
   promote. A candidate worse by the margin or more is promoted with probability ≤ α;
5. otherwise continue.

The two tests are taken once, at the end of a fixed canary window: looking after every request
and stopping at the first rejection would inflate both error rates (that needs a sequential test).
Records of one request are independent draws of the model, so they count one by one.
"""

from __future__ import annotations

import json
import math
import urllib.request
from dataclasses import asdict, dataclass
from typing import Any, Mapping

from scipy import stats


@dataclass(frozen=True)
class CanaryDecision:
    action: str  # "promote" | "rollback" | "continue"
    reason: str
    metric: str
    champion: float | None
    candidate: float | None
    n_champion: int
    n_candidate: int
    p_inferior: float | None  # p-value of H0 p_cand >= p_champ
    p_noninferior: float | None  # p-value of H0 p_cand <= p_champ - margin
    alpha: float
    margin: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _z_pvalue(x1: int, n1: int, x2: int, n2: int, margin: float, lower: bool) -> float:
    """One-sided p-value of the difference p2 − p1 against −margin (Farrington–Manning style
    unpooled z): `lower` tests H0 p2 − p1 ≥ −margin (small p: p2 is lower); else H0 p2 − p1 ≤
    −margin (small p: p2 is not lower by the margin)."""
    p1, p2 = x1 / n1, x2 / n2
    se = math.sqrt(max(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2, 1e-12))
    z = (p2 - p1 + margin) / se
    return float(stats.norm.cdf(z) if lower else stats.norm.sf(z))


def decide(metrics: Mapping[str, Any], *, alpha: float = 0.05, margin: float = 0.05,
           min_records: int = 100) -> CanaryDecision:
    """The decision from `online_metrics` output (keys `champion_*`, `candidate_*`)."""
    if not 0 < alpha < 0.5 or not 0 <= margin < 1:
        raise ValueError(f"alpha must be in (0, 0.5) and margin in [0, 1); got {alpha}, {margin}")
    if "candidate_requests" not in metrics:
        raise ValueError("the log holds no candidate requests: nothing to decide")
    metric = "completion" if metrics.get("candidate_completion_n") and \
        metrics.get("champion_completion_n") else "acceptance"
    x1, n1 = metrics.get(f"champion_{metric}_successes", 0), metrics.get(f"champion_{metric}_n", 0)
    x2, n2 = metrics[f"candidate_{metric}_successes"], metrics[f"candidate_{metric}_n"]
    base = dict(metric=metric, champion=x1 / n1 if n1 else None,
                candidate=x2 / n2 if n2 else None, n_champion=n1, n_candidate=n2,
                alpha=alpha, margin=margin)
    failed = metrics.get("candidate_failed_requests", 0)
    if failed:
        return CanaryDecision("rollback", f"{failed} failed request(s) on the candidate",
                              p_inferior=None, p_noninferior=None, **base)
    if min(n1, n2) < min_records:
        return CanaryDecision("continue", f"fewer than {min_records} records on an arm",
                              p_inferior=None, p_noninferior=None, **base)
    p_inf = _z_pvalue(x1, n1, x2, n2, 0.0, lower=True)
    p_ni = _z_pvalue(x1, n1, x2, n2, margin, lower=False)
    if p_inf <= alpha:
        return CanaryDecision("rollback", f"candidate {metric} lower than the champion's "
                              f"(one-sided p = {p_inf:.3g} ≤ α = {alpha})",
                              p_inferior=p_inf, p_noninferior=p_ni, **base)
    if p_ni <= alpha:
        return CanaryDecision("promote", f"candidate {metric} not lower than the champion's by "
                              f"{margin} or more (one-sided p = {p_ni:.3g} ≤ α = {alpha})",
                              p_inferior=p_inf, p_noninferior=p_ni, **base)
    return CanaryDecision("continue", "neither test decides yet: collect more requests",
                          p_inferior=p_inf, p_noninferior=p_ni, **base)


def apply(url: str, decision: CanaryDecision, *, token: str | None = None,
          timeout: float = 30.0) -> dict[str, Any] | None:
    """POST the server's /admin/promote or /admin/rollback; None for "continue"."""
    if decision.action == "continue":
        return None
    endpoint = {"promote": "/admin/promote", "rollback": "/admin/rollback"}[decision.action]
    req = urllib.request.Request(url.rstrip("/") + endpoint, data=b"", method="POST")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read() or b"null")
