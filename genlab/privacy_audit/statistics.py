"""Membership-inference evaluation and privacy bounds: one protocol for every attack.

Every attack (see :mod:`genlab.privacy_audit.attacks`) gives each record one score, oriented so that a *higher*
score means "more likely a member". This module turns scores into the figures the privacy
literature reports, identically for every attack:

- :func:`split_halves` — the seeded selection/evaluation split. Anything that is *chosen*
  (a threshold, the best attack, the operating point of an ε bound) is chosen on the selection
  half and measured on the evaluation half: a threshold fitted on the records it is scored on
  overstates leakage, most at low FPR.
- :func:`roc_auc` with a DeLong confidence interval; :func:`roc_curve`;
  :func:`tpr_at_fpr` (threshold from the selection half). An FPR below ``1/n`` cannot be
  resolved with ``n`` non-members: it comes back ``None`` with the reason.
- :func:`clopper_pearson` — exact binomial intervals (the basis of every bound here).
- :func:`epsilon_from_rates` — the hypothesis-testing bound of Jagielski et al. 2020 / Nasr et
  al. 2021: (ε, δ)-DP implies ``FPR + e^ε FNR ≥ 1 − δ`` and ``FNR + e^ε FPR ≥ 1 − δ``; with
  one-sided Clopper–Pearson upper bounds on FPR and FNR this is a valid lower bound on ε for the
  *mechanism applied to these records* — indicative only without canaries (members and
  non-members are not randomised, so it is not a DP audit).
- :func:`one_run_epsilon` — the one-run audit of Steinke, Nasr & Jagielski (2023): m canaries,
  each included with probability ½ independently; the auditor guesses r of them and gets v right.
  Under (ε, δ)-DP the number of correct guesses is dominated by Binomial(r, e^ε/(1+e^ε)) plus a
  δ term; the bound is the largest ε whose p-value is still below ``1 − confidence``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = [
    "AUDIT_FPRS",
    "split_halves",
    "roc_auc",
    "AucResult",
    "roc_curve",
    "tpr_at_fpr",
    "threshold_at_fpr",
    "clopper_pearson",
    "epsilon_from_rates",
    "best_rate_epsilon",
    "one_run_p_value",
    "one_run_epsilon",
    "one_run_epsilon_cap",
    "canary_guesses",
]

AUDIT_FPRS = (0.1, 0.01, 0.001)  # the FPRs the report shows TPR at (10 %, 1 %, 0.1 %)


def _fail(name: str, expected: str, given) -> None:
    raise ValueError(f"{name}: expected {expected}, got {given!r}")


def _scores(name: str, x) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 1 or a.size == 0:
        _fail(name, "a non-empty 1-D array of scores", f"shape {a.shape}")
    if not np.isfinite(a).all():
        _fail(name, "finite scores", f"{int((~np.isfinite(a)).sum())} NaN/inf values")
    return a


def _prob(name: str, v: float, *, open_low: bool = False, open_high: bool = False) -> float:
    ok = (0 < v if open_low else 0 <= v) and (v < 1 if open_high else v <= 1)
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not ok:
        lo, hi = "(0" if open_low else "[0", "1)" if open_high else "1]"
        _fail(name, f"a number in {lo}, {hi}", v)
    return float(v)


# ------------------------------------------------------------------------------- splitting
def split_halves(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of ``range(n)`` into a selection half and an evaluation half (sorted).

    The selection half gets ``n // 2`` records. Members and non-members are split separately by
    the caller so that both halves stay balanced."""
    if not isinstance(n, (int, np.integer)) or n < 2:
        _fail("n", "an integer >= 2 (one record per half at least)", n)
    perm = np.random.default_rng([int(seed), 0x5E1EC7]).permutation(int(n))
    return np.sort(perm[: n // 2]), np.sort(perm[n // 2:])


# ------------------------------------------------------------------------------------- ROC
@dataclass(frozen=True)
class AucResult:
    auc: float
    ci_low: float
    ci_high: float
    n_members: int
    n_nonmembers: int


def _placements(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DeLong's structural components: for each member the share of non-members it beats (ties ½),
    and for each non-member the share of members that beat it."""
    allv = np.concatenate([pos, neg])
    ranks = stats.rankdata(allv)  # average ranks handle ties as ½
    rp = stats.rankdata(pos)
    rn = stats.rankdata(neg)
    v10 = (ranks[: len(pos)] - rp) / len(neg)
    v01 = 1.0 - (ranks[len(pos):] - rn) / len(pos)
    return v10, v01


def roc_auc(member_scores, nonmember_scores, *, confidence: float = 0.95) -> AucResult:
    """ROC AUC (ties count ½) with DeLong's variance and a normal CI clipped to [0, 1].

    DeLong rather than a bootstrap: deterministic (no resampling seed in the report), exact for
    the Mann–Whitney statistic, and cheap. When every placement is equal (AUC 0 or 1) the variance
    is 0 and the CI collapses to the point — honest for the data, but read it with the n."""
    pos, neg = _scores("member_scores", member_scores), _scores("nonmember_scores", nonmember_scores)
    _prob("confidence", confidence, open_low=True, open_high=True)
    v10, v01 = _placements(pos, neg)
    auc = float(v10.mean())
    var = (v10.var(ddof=1) / len(pos) if len(pos) > 1 else 0.0) + (
        v01.var(ddof=1) / len(neg) if len(neg) > 1 else 0.0)
    half = stats.norm.ppf(0.5 + confidence / 2) * math.sqrt(max(var, 0.0))
    return AucResult(auc, max(0.0, auc - half), min(1.0, auc + half), len(pos), len(neg))


def roc_curve(member_scores, nonmember_scores) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, TPR) over every distinct threshold, from (0, 0) to (1, 1)."""
    pos, neg = _scores("member_scores", member_scores), _scores("nonmember_scores", nonmember_scores)
    thresholds = np.unique(np.concatenate([pos, neg]))[::-1]
    pos_s, neg_s = np.sort(pos), np.sort(neg)
    tpr = 1.0 - np.searchsorted(pos_s, thresholds, side="left") / len(pos)
    fpr = 1.0 - np.searchsorted(neg_s, thresholds, side="left") / len(neg)
    return np.concatenate([[0.0], fpr]), np.concatenate([[0.0], tpr])


def threshold_at_fpr(nonmember_scores, fpr: float) -> tuple[float | None, str | None]:
    """The lowest threshold t with share(non-member score >= t) <= ``fpr``, or (None, reason).

    "Predict member when score >= t". An FPR below 1/n cannot be resolved with n non-members
    (the smallest non-zero FPR they can show is 1/n): then (None, "not measurable at n=…")."""
    neg = np.sort(_scores("nonmember_scores", nonmember_scores))
    _prob("fpr", fpr, open_low=True)
    n = len(neg)
    if fpr < 1.0 / n:
        return None, f"not measurable at n={n} non-members (FPR {fpr:g} < 1/n)"
    k = int(math.floor(fpr * n + 1e-9))  # non-members allowed at or above the threshold
    if k >= n:
        return float(neg[0]), None
    # strictly above the (k+1)-th largest score: at most k non-members reach it
    return float(np.nextafter(neg[n - k - 1], np.inf)), None


def tpr_at_fpr(sel_members, sel_nonmembers, eval_members, eval_nonmembers, fpr: float) -> dict:
    """TPR at a target FPR, threshold fitted on the selection half, measured on the evaluation half.

    Returns ``{"tpr", "fpr_achieved", "threshold", "na_reason"}``; ``tpr`` is None when either
    half has too few non-members to resolve ``fpr``."""
    out = {"tpr": None, "fpr_achieved": None, "threshold": None, "na_reason": None}
    eval_neg = _scores("eval_nonmembers", eval_nonmembers)
    if fpr < 1.0 / len(eval_neg):
        out["na_reason"] = f"not measurable at n={len(eval_neg)} non-members (FPR {fpr:g} < 1/n)"
        return out
    t, reason = threshold_at_fpr(sel_nonmembers, fpr)
    if t is None:
        out["na_reason"] = reason
        return out
    pos = _scores("eval_members", eval_members)
    out.update(tpr=float((pos >= t).mean()), fpr_achieved=float((eval_neg >= t).mean()), threshold=t)
    return out


# ---------------------------------------------------------------------------- Clopper–Pearson
def clopper_pearson(k: int, n: int, confidence: float = 0.95, *, sided: str = "two") -> tuple[float, float]:
    """Exact binomial interval for k successes in n trials (Clopper & Pearson 1934).

    ``sided="two"``: the central interval at ``confidence``; ``"upper"``: (0, one-sided upper
    bound); ``"lower"``: (one-sided lower bound, 1). Exact rather than normal-approximate because
    the bounds are used at rates near 0 (low FPR), where the normal interval is wrong."""
    if not isinstance(n, (int, np.integer)) or n < 1:
        _fail("n", "a positive integer", n)
    if not isinstance(k, (int, np.integer)) or not 0 <= k <= n:
        _fail("k", f"an integer in [0, {n}]", k)
    _prob("confidence", confidence, open_low=True, open_high=True)
    if sided not in ("two", "upper", "lower"):
        _fail("sided", "'two', 'upper' or 'lower'", sided)
    alpha = 1.0 - confidence
    tail = alpha / 2 if sided == "two" else alpha
    lo = 0.0 if k == 0 else float(stats.beta.ppf(tail, k, n - k + 1))
    hi = 1.0 if k == n else float(stats.beta.ppf(1 - tail, k + 1, n - k))
    if sided == "upper":
        return 0.0, hi
    if sided == "lower":
        return lo, 1.0
    return lo, hi


def epsilon_from_rates(fp: int, n_neg: int, fn: int, n_pos: int, *, delta: float = 0.0,
                       confidence: float = 0.95) -> float:
    """ε lower bound from one attack's error counts at ``confidence``.

    ``max(ln((1−δ−FPR̄)/FNR̄), ln((1−δ−FNR̄)/FPR̄), 0)`` with FPR̄, FNR̄ one-sided Clopper–Pearson
    upper bounds at ``1 − (1−confidence)/2`` each (a union bound over the two rates). 0 when
    the counts show nothing."""
    _prob("delta", delta, open_high=True)
    each = 1.0 - (1.0 - confidence) / 2
    fpr_hi = clopper_pearson(int(fp), int(n_neg), each, sided="upper")[1]
    fnr_hi = clopper_pearson(int(fn), int(n_pos), each, sided="upper")[1]
    best = 0.0
    for num, den in ((1 - delta - fpr_hi, fnr_hi), (1 - delta - fnr_hi, fpr_hi)):
        if num > 0 and den > 0:
            best = max(best, math.log(num / den))
    return best


def best_rate_epsilon(sel_members, sel_nonmembers, eval_members, eval_nonmembers, *,
                      delta: float = 0.0, confidence: float = 0.95) -> dict:
    """Indicative per-record ε: threshold maximising the point estimate on the selection half,
    :func:`epsilon_from_rates` on the evaluation half (one threshold: no multiple testing)."""
    sp, sn = _scores("sel_members", sel_members), _scores("sel_nonmembers", sel_nonmembers)
    ep, en = _scores("eval_members", eval_members), _scores("eval_nonmembers", eval_nonmembers)
    best_t, best_val = None, -math.inf
    for t in np.unique(np.concatenate([sp, sn])):
        fpr = ((sn >= t).sum() + 0.5) / (len(sn) + 1)  # smoothed: no log(0) on the selection half
        fnr = ((sp < t).sum() + 0.5) / (len(sp) + 1)
        val = max(math.log((1 - fpr) / fnr), math.log((1 - fnr) / fpr))
        if val > best_val:
            best_t, best_val = float(t), val
    fp, fn = int((en >= best_t).sum()), int((ep < best_t).sum())
    eps = epsilon_from_rates(fp, len(en), fn, len(ep), delta=delta, confidence=confidence)
    return {"epsilon": eps, "threshold": best_t, "fp": fp, "fn": fn,
            "n_members": len(ep), "n_nonmembers": len(en)}


# ------------------------------------------------------------------- one-run audit (canaries)
def _check_counts(m: int, r: int, v: int) -> None:
    for name, val in (("m", m), ("r", r), ("v", v)):
        if not isinstance(val, (int, np.integer)) or isinstance(val, bool) or val < 0:
            _fail(name, "a non-negative integer", val)
    if not v <= r <= m:
        _fail("(m, r, v)", "0 <= v (correct guesses) <= r (guesses) <= m (canaries)", (m, r, v))


def one_run_p_value(m: int, r: int, v: int, epsilon: float, delta: float) -> float:
    """P[≥ v correct of r guesses] under (ε, δ)-DP with m randomised canaries.

    Steinke, Nasr & Jagielski (2023), Theorem 3.1 / Appendix D: with q = e^ε/(1+e^ε),
    ``β = P[Bin(r, q) ≥ v]`` and ``α = max_{1≤i≤v} P[v−i ≤ Bin(r, q) < v] / i`` the p-value is
    ``min(1, β + 2 m δ α)``."""
    _check_counts(m, r, v)
    if not epsilon >= 0 or not math.isfinite(epsilon):
        _fail("epsilon", "a finite number >= 0", epsilon)
    _prob("delta", delta)
    q = 1.0 / (1.0 + math.exp(-epsilon))
    beta = float(stats.binom.sf(v - 1, r, q))
    if delta == 0 or v == 0:
        return min(1.0, beta)
    below = stats.binom.pmf(np.arange(v - 1, -1, -1), r, q)  # P[Bin = v-1], P[Bin = v-2], ...
    alpha = float(np.max(np.cumsum(below) / np.arange(1, v + 1)))
    return min(1.0, beta + 2 * m * delta * alpha)


def one_run_epsilon(m: int, r: int, v: int, *, delta: float = 0.0, confidence: float = 0.95,
                    tol: float = 1e-6) -> float:
    """Largest ε with ``one_run_p_value(m, r, v, ε, δ) < 1 − confidence`` (0 if none), by bisection.

    The p-value decreases in ε, so bisection finds the boundary; the result is a lower bound on the
    ε of any (ε, δ)-DP guarantee the training could have, holding with probability ``confidence``
    over the canaries' inclusion coins."""
    _check_counts(m, r, v)
    _prob("confidence", confidence, open_low=True, open_high=True)
    p = 1.0 - confidence
    if one_run_p_value(m, r, v, 0.0, delta) >= p:
        return 0.0
    lo, hi = 0.0, 1.0
    while one_run_p_value(m, r, v, hi, delta) < p:
        lo, hi = hi, 2 * hi
        if hi > 1e3:  # v = r with δ = 0 stays bounded; guard against a degenerate input anyway
            return lo
    while hi - lo > tol:
        mid = (lo + hi) / 2
        if one_run_p_value(m, r, v, mid, delta) < p:
            lo = mid
        else:
            hi = mid
    return lo


def one_run_epsilon_cap(m: int, *, delta: float = 0.0, confidence: float = 0.95) -> float:
    """The largest bound m canaries can ever show: every canary guessed, every guess right.

    An audit whose bound sits at the cap is limited by m, not by the model: more canaries could
    show a larger ε."""
    return one_run_epsilon(m, m, m, delta=delta, confidence=confidence)


def canary_guesses(scores, included, *, guess_frac: float = 1.0) -> dict:
    """Guess "in" for the top-scoring ⌊guess_frac·m/2⌋ canaries and "out" for as many lowest.

    ``guess_frac`` is fixed in advance (a parameter), not tuned on the result: tuning the number
    of guesses on the same canaries would be peeking. Returns m, r, v and the guesses."""
    s = _scores("canary scores", scores)
    inc = np.asarray(included, dtype=bool)
    if inc.shape != s.shape:
        _fail("included", f"one inclusion bit per canary ({len(s)})", f"shape {inc.shape}")
    _prob("guess_frac", guess_frac, open_low=True)
    m = len(s)
    k = int(math.floor(guess_frac * m / 2))
    order = np.argsort(-s, kind="stable")  # ties broken by canary index: deterministic
    guess = np.zeros(m, dtype=np.int8)
    if k:
        guess[order[:k]] = 1
        guess[order[m - k:]] = -1
    r = int((guess != 0).sum())
    v = int(((guess == 1) & inc).sum() + ((guess == -1) & ~inc).sum())
    return {"m": m, "r": r, "v": v, "guesses": guess}
