"""Two-sample drift tests on representations: MMD, per-dimension KS, a classifier test, χ².

Everything here takes plain arrays: a *representation* is any callable `x -> (n, d) array`
(raw pixels, PCA, a VAE's latent mean, a model's per-record score, a classifier's softmax), and
each test compares a reference sample with a production sample of that representation.

Why these implementations rather than a library: the drift study runs thousands of tests, so
each must cost milliseconds (alibi-detect's MMDDrift costs ~0.25 s at 500 vs 500 × 64 and does
not fit our dependencies). The MMD permutation test computes the kernel matrix
once and evaluates all permutations with one matrix product; KS statistics are computed for all
dimensions at once. Every random choice comes from a caller's `np.random.Generator`.

Decision rule everywhere: drift is detected when p ≤ α. Permutation p-values are (b+1)/(B+1)
(b = permuted statistics ≥ the observed one), which makes P(p ≤ α) ≤ α exact under the null.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from genlab.numerics import flatten, sq_dists


@dataclass(frozen=True)
class TestResult:
    """One test's outcome. `statistic` is the effect size each test reports: MMD² (unbiased),
    the largest KS distance, the classifier's held-out AUC, or Cramér's V for χ²."""

    test: str
    p_value: float
    statistic: float
    alpha: float

    @property
    def detected(self) -> bool:
        return bool(self.p_value <= self.alpha)


def _check_pair(x, y) -> tuple[np.ndarray, np.ndarray]:
    x, y = flatten(x), flatten(y)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"reference and production must have the same dimension: "
                         f"expected {x.shape[1]}, got {y.shape[1]}")
    if len(x) < 2 or len(y) < 2:
        raise ValueError(f"each sample needs at least 2 records, got {len(x)} and {len(y)}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("samples must be finite (NaN/inf found)")
    return x, y


def _check_alpha(alpha: float) -> float:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha: expected a level in (0, 1), got {alpha!r}")
    return float(alpha)


# ------------------------------------------------------------------------------------- MMD
def median_bandwidth(z: np.ndarray) -> float:
    """Median heuristic σ: the median pairwise distance of the pooled sample (ties to 0 skipped;
    1.0 if all records are equal, so the kernel stays defined)."""
    d = sq_dists(z, z)[np.triu_indices(len(z), 1)]
    d = d[d > 0]
    return float(np.sqrt(np.median(d))) if len(d) else 1.0


def gaussian_kernel(a: np.ndarray, b: np.ndarray, sigma: float) -> np.ndarray:
    return np.exp(-sq_dists(a, b) / (2.0 * sigma * sigma))


def mmd2_unbiased(k: np.ndarray, n: int) -> float:
    """Unbiased MMD² from the pooled kernel matrix whose first `n` rows are the reference."""
    return float(mmd2_permuted(k, _membership(n, len(k))[None])[0])


def _membership(n: int, total: int) -> np.ndarray:
    a = np.zeros(total)
    a[:n] = 1.0
    return a


def mmd2_permuted(k: np.ndarray, a: np.ndarray) -> np.ndarray:
    """Unbiased MMD² for each row of the 0/1 membership matrix `a` (B, N): one product A·K.

    With K₀ = K without its diagonal, Sxx = aᵀK₀a, Sxy = aᵀK₀(1−a), Syy = 1ᵀK₀1 − Sxx − 2Sxy."""
    k0 = k - np.diag(np.diag(k))
    n = a[0].sum()
    m = a.shape[1] - n
    ka = a @ k0
    sxx = np.einsum("bi,bi->b", ka, a)
    sxy = ka.sum(1) - sxx
    syy = k0.sum() - sxx - 2.0 * sxy
    return sxx / (n * (n - 1)) + syy / (m * (m - 1)) - 2.0 * sxy / (n * m)


def permutation_pvalue(observed: float, null: np.ndarray) -> float:
    """(b + 1) / (B + 1), b = #{null ≥ observed}: never 0, exact level under exchangeability."""
    null = np.asarray(null)
    return float((np.count_nonzero(null >= observed) + 1) / (len(null) + 1))


def _permutation_memberships(n: int, total: int, n_permutations: int,
                             rng: np.random.Generator) -> np.ndarray:
    keys = rng.random((n_permutations, total))
    ranks = np.argsort(keys, axis=1)  # a random permutation per row
    a = np.zeros((n_permutations, total))
    np.put_along_axis(a, ranks[:, :n], 1.0, axis=1)
    return a


def mmd_test(x, y, *, alpha: float = 0.05, n_permutations: int = 100,
             rng: np.random.Generator, sigma: float | None = None) -> TestResult:
    """Gaussian-kernel MMD² (median heuristic on the pooled sample) with a permutation p-value.

    The kernel matrix is computed once; all permutations are scored by one matrix product."""
    x, y = _check_pair(x, y)
    alpha = _check_alpha(alpha)
    if n_permutations < 1:
        raise ValueError(f"n_permutations: expected an int >= 1, got {n_permutations!r}")
    z = np.concatenate([x, y])
    sigma = median_bandwidth(z) if sigma is None else float(sigma)
    k = gaussian_kernel(z, z, sigma)
    observed = mmd2_unbiased(k, len(x))
    null = mmd2_permuted(k, _permutation_memberships(len(x), len(z), n_permutations, rng))
    return TestResult("mmd", permutation_pvalue(observed, null), observed, alpha)


def mmd_test_naive(x, y, *, alpha: float = 0.05, n_permutations: int = 100,
                   rng: np.random.Generator, sigma: float | None = None) -> TestResult:
    """The textbook permutation test: recompute the kernel for every permutation. Same
    permutations (same `rng` state) → the same p-value as `mmd_test`; kept as the benchmark's
    baseline and the vectorised version's cross-check."""
    x, y = _check_pair(x, y)
    z = np.concatenate([x, y])
    sigma = median_bandwidth(z) if sigma is None else float(sigma)

    def stat(xs, ys):
        kxx, kyy, kxy = (gaussian_kernel(xs, xs, sigma), gaussian_kernel(ys, ys, sigma),
                         gaussian_kernel(xs, ys, sigma))
        n, m = len(xs), len(ys)
        return ((kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy))
                / (m * (m - 1)) - 2.0 * kxy.mean())

    observed = stat(x, y)
    a = _permutation_memberships(len(x), len(z), n_permutations, rng).astype(bool)
    null = np.array([stat(z[row], z[~row]) for row in a])
    return TestResult("mmd", permutation_pvalue(observed, null), float(observed), alpha)


# -------------------------------------------------------------------------------------- KS
def ks_statistics(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Two-sample KS distance per column, all columns at once; ties are handled (the ECDF
    difference is read only after the last of equal values)."""
    n, m = len(x), len(y)
    z = np.concatenate([x, y])
    order = np.argsort(z, axis=0, kind="stable")
    zs = np.take_along_axis(z, order, axis=0)
    step = np.where(order < n, 1.0 / n, -1.0 / m)
    diff = np.cumsum(step, axis=0)
    last_of_tie = np.ones_like(zs, dtype=bool)
    last_of_tie[:-1] = zs[1:] != zs[:-1]
    return np.abs(np.where(last_of_tie, diff, 0.0)).max(axis=0)


def ks_pvalues(d: np.ndarray, n: int, m: int) -> np.ndarray:
    """Two-sided p-values as scipy's `ks_2samp(method="asymp")` computes them: the one-sample
    Kolmogorov distribution at the effective size round(nm/(n+m)).

    A KS distance between samples of n and m records is a multiple of 1/lcm(n, m), so the
    p-values of all possible distances are tabulated once per (n, m) and then looked up: the
    study calls this thousands of times with the same sizes."""
    table, lcm = _ks_table(int(n), int(m))
    d = np.asarray(d, dtype=np.float64)
    return table[np.clip(np.rint(d * lcm).astype(np.int64), 0, lcm)]


@functools.lru_cache(maxsize=64)
def _ks_table(n: int, m: int) -> tuple[np.ndarray, int]:
    lcm = n * m // math.gcd(n, m)
    en = int(np.round(n * m / (n + m)))
    grid = np.arange(lcm + 1) / lcm
    return np.clip(stats.kstwo.sf(grid, en), 0.0, 1.0), lcm


def bonferroni_pvalue(p: np.ndarray) -> float:
    return float(min(1.0, len(p) * np.min(p)))


def fdr_pvalue(p: np.ndarray) -> float:
    """Simes' combined p-value: Benjamini–Hochberg at level α rejects any hypothesis exactly
    when this is ≤ α, so it is the FDR-corrected "any dimension drifted" decision."""
    ps = np.sort(np.asarray(p))
    return float(min(1.0, np.min(ps * len(ps) / np.arange(1, len(ps) + 1))))


def ks_test(x, y, *, alpha: float = 0.05, correction: str = "bonferroni",
            drop_constant: bool = True) -> TestResult:
    """Per-dimension KS, combined with Bonferroni or Benjamini–Hochberg (FDR).

    `drop_constant` skips dimensions that are constant in the *reference*: there KS measures
    only "some production value differs" (digits' always-zero border pixels after noise and
    clipping), which flags any perturbation however small. The decision uses the
    reference alone, so it cannot peek at production."""
    if correction not in ("bonferroni", "fdr"):
        raise ValueError(f"correction: expected 'bonferroni' or 'fdr', got {correction!r}")
    return ks_tests(x, y, alpha=alpha, drop_constant=drop_constant)[f"ks_{correction}"]


def ks_tests(x, y, *, alpha: float = 0.05, drop_constant: bool = True) -> dict[str, TestResult]:
    """Both corrections from one set of per-dimension statistics (see `ks_test`)."""
    x, y = _check_pair(x, y)
    alpha = _check_alpha(alpha)
    if drop_constant:
        keep = x.max(0) > x.min(0)
        if not keep.any():
            return {f"ks_{c}": TestResult(f"ks_{c}", 1.0, 0.0, alpha) for c in ("bonferroni", "fdr")}
        x, y = x[:, keep], y[:, keep]
    d = ks_statistics(x, y)
    p = ks_pvalues(d, len(x), len(y))
    return {"ks_bonferroni": TestResult("ks_bonferroni", bonferroni_pvalue(p), float(d.max()), alpha),
            "ks_fdr": TestResult("ks_fdr", fdr_pvalue(p), float(d.max()), alpha)}


# ------------------------------------------------------------------------- classifier test
def c2st_test(x, y, *, alpha: float = 0.05, rng: np.random.Generator,
              k: int | None = None) -> TestResult:
    """Classifier two-sample test (Lopez-Paz & Oquab 2017) with a k-nearest-neighbour classifier.

    Half of each sample trains, the other half is scored by the share of production records
    among its k nearest training records. Under no drift those held-out scores are exchangeable
    between the two groups whatever the classifier learnt, so a one-sided Mann–Whitney test on
    them is valid for any group sizes; the effect size is the held-out AUC. kNN (not a fitted
    model) keeps a test at milliseconds and sees any kind of difference, not only linear ones."""
    x, y = _check_pair(x, y)
    alpha = _check_alpha(alpha)
    if len(x) < 4 or len(y) < 4:
        raise ValueError(f"c2st needs at least 4 records per sample, got {len(x)} and {len(y)}")
    ix, iy = rng.permutation(len(x)), rng.permutation(len(y))
    hx, hy = len(x) // 2, len(y) // 2
    train = np.concatenate([x[ix[:hx]], y[iy[:hy]]])
    label = np.r_[np.zeros(hx), np.ones(hy)]
    test_x, test_y = x[ix[hx:]], y[iy[hy:]]
    scale = train.std(0)
    scale[scale == 0] = 1.0
    k = int(k or max(1, round(np.sqrt(len(train)))))
    test = np.concatenate([test_x, test_y]) / scale
    d = sq_dists(test, train / scale)
    # ties broken by a random jitter so that no training order is favoured
    d = d + rng.random(d.shape) * 1e-12
    nearest = np.argpartition(d, k - 1, axis=1)[:, :k]
    score = label[nearest].mean(1)
    sx, sy = score[: len(test_x)], score[len(test_x):]
    res = stats.mannwhitneyu(sy, sx, alternative="greater", method="asymptotic")
    auc = res.statistic / (len(sx) * len(sy))
    return TestResult("c2st", float(res.pvalue), float(auc), alpha)


# ------------------------------------------------------------------------------ labels, χ²
def chi2_label_test(labels_x, labels_y, *, alpha: float = 0.05) -> TestResult:
    """χ² test of homogeneity of predicted-label counts (BBSD with hard labels); classes
    predicted for no record are dropped. Effect size: Cramér's V."""
    alpha = _check_alpha(alpha)
    lx, ly = np.asarray(labels_x, dtype=np.int64), np.asarray(labels_y, dtype=np.int64)
    if lx.ndim != 1 or ly.ndim != 1 or len(lx) < 2 or len(ly) < 2:
        raise ValueError(f"labels must be 1-D with >= 2 entries each, got shapes "
                         f"{lx.shape} and {ly.shape}")
    k = int(max(lx.max(), ly.max())) + 1
    table = np.stack([np.bincount(lx, minlength=k), np.bincount(ly, minlength=k)])
    table = table[:, table.sum(0) > 0]
    if table.shape[1] < 2:
        return TestResult("chi2", 1.0, 0.0, alpha)
    chi2, p, _, _ = stats.chi2_contingency(table, correction=False)
    v = np.sqrt(chi2 / (table.sum() * (min(table.shape) - 1)))
    return TestResult("chi2", float(p), float(v), alpha)


# ------------------------------------------------------------------------ rates, calibration
def wilson_ci(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval for a binomial share k/n (good at 0 and 1, unlike k/n ± z·se)."""
    if n <= 0:
        raise ValueError(f"n: expected trials >= 1, got {n}")
    p = k / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    # min/max with p: at k = 0 (k = n) the bound is exactly 0 (1), not a rounding residue
    return float(min(p, max(0.0, centre - half))), float(max(p, min(1.0, centre + half)))


def binomial_band_high(n: int, alpha: float, level: float = 0.05) -> int:
    """The most false alarms in n no-drift trials a test at level α may raise before a
    one-sided binomial test at `level` calls it mis-calibrated."""
    return int(stats.binom.isf(level, n, alpha))


def calibration_flag(k: int, n: int, alpha: float, level: float = 0.05) -> str:
    """'mis-calibrated' if k false alarms in n no-drift trials are more than Binomial(n, α) allows
    at one-sided `level`; 'conservative' if fewer; else 'ok'."""
    if stats.binom.sf(k - 1, n, alpha) < level:
        return "mis-calibrated"
    if stats.binom.cdf(k, n, alpha) < level:
        return "conservative"
    return "ok"
