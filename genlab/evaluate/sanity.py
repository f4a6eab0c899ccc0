"""The sanity rows as a check anyone can gate on: on every fidelity metric the real-vs-real
floor must be the best row and the noise baseline the worst, with non-overlapping intervals.

A metric that ranks per-pixel noise above a trained generator, or cannot tell real records from
noise at the evaluated sample size, is not measuring what its name says in this feature space;
`sanity_checks` says which metric fails which check, from the headline JSON alone (keys
`<metric>`, `<metric>_real_vs_real`, `<metric>_baseline` and their `_ci_low` / `_ci_high`), so
the same rule runs in the report, in `genlab gate` (key `sanity_violations`) and in the tests.

Checks per metric:
- ``floor_best``: the floor's point estimate is better than the noise row's, and the model is
  not *clearly* better than the floor (its interval entirely on the better side of the floor's);
- ``noise_worst``: the point estimates order model and floor better than noise;
- ``floor_vs_noise_ci``: the floor's and the noise row's intervals do not overlap;
- ``model_vs_noise_ci``: the model's interval is clear of the noise row's.
Why the model is held to "not clearly better" rather than "not better" than the floor: a
generator as good as the data beats the floor's point estimate half the time, so a point rule
would fail a perfect model at random; a model clearly better than held-out real records says
the metric rewards something other than realism (precision and density reward dropped modes,
the Inception Score over-confident classes).
"""

from __future__ import annotations

from typing import Any, Mapping

LOWER, HIGHER, HALF = "lower", "higher", "half"
# metric -> which way is better (a C2ST AUC is best at 0.5: indistinguishable from real)
ORDERED = {"fd": LOWER, "fd_infinity": LOWER, "kid": LOWER, "inception_score": HIGHER,
           "precision": HIGHER, "recall": HIGHER, "density": HIGHER, "coverage": HIGHER,
           "c2st_auc": HALF}
ROWS = {"floor": "_real_vs_real", "model": "", "noise": "_baseline"}
POINT, APART, NOT_REVERSED = "point", "apart", "not reversed"
# check -> (better row, worse row, rule): POINT orders the point estimates, APART needs the
# intervals apart, NOT_REVERSED fails only when the worse row's interval is clear of the better
# row's on the better side
PAIRS = {"floor_best": [("floor", "model", NOT_REVERSED), ("floor", "noise", POINT)],
         "noise_worst": [("model", "noise", POINT), ("floor", "noise", POINT)],
         "floor_vs_noise_ci": [("floor", "noise", APART)],
         "model_vs_noise_ci": [("model", "noise", APART)]}


def badness(h: Mapping[str, Any], key: str, direction: str) -> tuple[float, float, float]:
    """(point, low, high) of a row's badness, smaller is better, from its value and interval."""
    v = h[key]
    lo, hi = h.get(f"{key}_ci_low", v), h.get(f"{key}_ci_high", v)
    if direction == LOWER:
        return v, lo, hi
    if direction == HIGHER:
        return -v, -hi, -lo
    d = sorted((abs(lo - 0.5), abs(hi - 0.5)))
    return abs(v - 0.5), (0.0 if lo <= 0.5 <= hi else d[0]), d[1]


def check(h: Mapping[str, Any], metric: str, which: str, direction: str | None = None
          ) -> str | None:
    """None when `metric` passes check `which`, else what failed (with the rows' values);
    `direction` defaults to the metric's in `ORDERED`."""
    direction = direction or ORDERED[metric]
    keys = {row: metric + suffix for row, suffix in ROWS.items()}
    missing = [k for k in keys.values() if h.get(k) is None]
    if missing:
        return None  # a metric this run cannot compute (e.g. no classifier head) is not judged
    bad = {row: badness(h, key, direction) for row, key in keys.items()}
    for better, worse, rule in PAIRS[which]:
        (b, b_lo, b_hi), (w, w_lo, w_hi) = bad[better], bad[worse]
        ok = {POINT: b < w, APART: b_hi < w_lo, NOT_REVERSED: not w_hi < b_lo}[rule]
        if not ok:
            shown = ", ".join(f"{row} {_fmt(h, key)}" for row, key in keys.items())
            return f"{metric} {which}: {better} not better than {worse} ({shown})"
    return None


def _fmt(h: Mapping[str, Any], key: str) -> str:
    lo, hi = h.get(f"{key}_ci_low"), h.get(f"{key}_ci_high")
    return f"{h[key]:.4g}" + (f" [{lo:.4g}, {hi:.4g}]" if lo is not None and hi is not None else "")


def sanity_checks(h: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every metric × check that applies to this headline: metric, check, passed, detail."""
    rows = []
    for metric in ORDERED:
        if h.get(metric) is None:
            continue
        for which in PAIRS:
            problem = check(h, metric, which)
            rows.append({"metric": metric, "check": which, "passed": problem is None,
                         "detail": problem or ""})
    return rows


def sanity_headline(h: Mapping[str, Any]) -> dict[str, Any]:
    """`sanity_violations` (failed checks) and `sanity_checks` (checks that applied)."""
    rows = sanity_checks(h)
    return {"sanity_checks": len(rows), "sanity_violations": sum(not r["passed"] for r in rows)}
