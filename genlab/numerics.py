"""Numerics every stage shares: records as flat float64 rows, squared distances, the Fréchet
distance, and one thread limit for loops of small matrix products.

- :func:`flatten`: records (arrays or tensors, images included) as a float64 ``(n, d)`` array.
- :func:`sq_dists`: squared Euclidean distances ``‖a‖² + ‖b‖² − 2abᵀ``, clipped at 0.
  :func:`sq_dists_sklearn_order` adds the same terms in scikit-learn's order,
  ``((−2abᵀ) + ‖a‖²) + ‖b‖²``: the exact precision/recall/density/coverage decide ties exactly
  as the ``prdc`` package (which calls scikit-learn) does, so they need its rounding.
- :func:`frechet_distance`: FD between Gaussians fitted to two feature sets, float64.
- :func:`single_threaded`: one BLAS and one torch thread for a block of code.
"""

from __future__ import annotations

import contextlib

import numpy as np

__all__ = ["MetricInputError", "check_features", "flatten", "sq_dists", "sq_dists_sklearn_order",
           "feature_stats", "frechet_distance_from_stats", "frechet_distance", "single_threaded"]


class MetricInputError(ValueError):
    """Bad input to a metric: the message names the argument, what was expected and given."""


def flatten(x) -> np.ndarray:
    """Records as a float64 (n, d) array (tensors detached, images flattened)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    x = np.asarray(x, dtype=np.float64)
    return x.reshape(len(x), -1)


def check_features(f, name: str = "features", min_n: int = 2) -> np.ndarray:
    """float64 C-contiguous N×d with N ≥ min_n and only finite values, or a clear error.

    A NaN would otherwise flow silently into every mean and covariance."""
    a = np.asarray(f)
    if a.ndim != 2:
        raise MetricInputError(f"{name}: expected a 2-D array N×d, got shape {a.shape}")
    if len(a) < min_n:
        raise MetricInputError(f"{name}: expected at least {min_n} rows, got {len(a)}")
    if a.shape[1] < 1:
        raise MetricInputError(f"{name}: expected at least 1 feature column, got {a.shape}")
    a = np.ascontiguousarray(a, dtype=np.float64)
    if not np.isfinite(a).all():
        raise MetricInputError(f"{name}: expected finite values, got "
                               f"{int((~np.isfinite(a)).sum())} NaN/inf")
    return a


def same_dim(a: np.ndarray, b: np.ndarray, na: str, nb: str) -> None:
    if a.shape[1] != b.shape[1]:
        raise MetricInputError(f"{na} and {nb}: expected the same feature dimension, got "
                               f"{a.shape[1]} and {b.shape[1]}")


# ----------------------------------------------------------------------------- distances
def sq_dists(a: np.ndarray, b: np.ndarray, b_sq: np.ndarray | None = None) -> np.ndarray:
    """Squared Euclidean distances (n, m), clipped at 0 against rounding; ``b_sq`` = the rows'
    squared norms of ``b`` when the caller has them (a bank scored chunk by chunk)."""
    b_sq = (b * b).sum(1) if b_sq is None else b_sq
    d = (a * a).sum(1)[:, None] + b_sq[None, :] - 2.0 * a @ b.T
    return np.maximum(d, 0.0, out=d)


def sq_dists_sklearn_order(x: np.ndarray, xx: np.ndarray, y: np.ndarray, yy: np.ndarray
                           ) -> np.ndarray:
    """Squared Euclidean distances in sklearn's exact arithmetic order (prdc calls sklearn):
    ((−2·xyᵀ) + ‖x‖²) + ‖y‖², clipped at 0; ``xx``, ``yy``: the rows' squared norms."""
    d = -2 * (x @ y.T)
    d += xx[:, None]
    d += yy[None, :]
    np.maximum(d, 0, out=d)
    return d


# ----------------------------------------------------------------------------- Fréchet
def feature_stats(f) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased (n−1) covariance in float64 (torchmetrics uses the same estimator)."""
    a = check_features(f)
    mu = a.mean(axis=0)
    c = a - mu
    return mu, (c.T @ c) / (len(a) - 1)  # numpy runs aᵀa as a symmetric rank-k update


def _trace_sqrt_product(s1: np.ndarray, s2: np.ndarray) -> float:
    """tr √(Σ₁Σ₂) = Σ √λ(RᵀΣ₂R) for any R with RRᵀ = Σ₁ (the eigenvalues of Σ₁Σ₂)."""
    try:
        r = np.linalg.cholesky(s1)
    except np.linalg.LinAlgError:  # singular Σ₁: symmetric PSD square root
        w, v = np.linalg.eigh(s1)
        # eigenvalues at rounding level are zeros: their roots (~1e-8) would add up to noise
        w[w < np.finfo(float).eps * len(w) * max(w.max(), 0.0)] = 0.0
        r = v * np.sqrt(w)
    m = r.T @ s2 @ r
    lam = np.linalg.eigvalsh((m + m.T) / 2)
    return float(np.sqrt(np.clip(lam, 0.0, None)).sum())


def frechet_distance_from_stats(mu1, s1, mu2, s2) -> float:
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(s1, np.float64), np.asarray(s2, np.float64)
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (len(mu1), len(mu1)):
        raise MetricInputError(f"Fréchet statistics: expected means (d,) and covariances (d, d) "
                               f"of one d, got {mu1.shape}, {s1.shape}, {mu2.shape}, {s2.shape}")
    diff = mu1 - mu2
    fd = diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * _trace_sqrt_product(s1, s2)
    return float(max(fd, 0.0))  # rounding can leave -1e-13 for identical sets


def frechet_distance(f1, f2) -> float:
    """FD between two feature sets (Heusel et al. 2017), float64.

    With fewer records than features (both covariances singular) the trace term comes from the
    small n₁×n₂ cross-Gram matrix instead: with Σ = AᵀA/(n−1) for centred data A, the
    eigenvalues of Σ₁Σ₂ are the squared singular values of A₁A₂ᵀ/√((n₁−1)(n₂−1)), so
    tr√(Σ₁Σ₂) is its nuclear norm: exact where eigenvalue routes add ~√eps noise per zero
    eigenvalue, and cheaper."""
    a, b = check_features(f1, "f1"), check_features(f2, "f2")
    same_dim(a, b, "f1", "f2")
    if min(len(a), len(b)) > a.shape[1]:
        return frechet_distance_from_stats(*feature_stats(a), *feature_stats(b))
    mu1, mu2 = a.mean(0), b.mean(0)
    ac, bc = a - mu1, b - mu2
    scale = np.sqrt((len(a) - 1) * (len(b) - 1))
    trace_sqrt = np.linalg.svd(ac @ bc.T, compute_uv=False).sum() / scale
    diff = mu1 - mu2
    fd = (diff @ diff + np.einsum("ij,ij->", ac, ac) / (len(a) - 1)
          + np.einsum("ij,ij->", bc, bc) / (len(b) - 1) - 2.0 * trace_sqrt)
    return float(max(fd, 0.0))


# ----------------------------------------------------------------------------- threads
@contextlib.contextmanager
def single_threaded(torch_threads: bool = True):
    """One BLAS thread (and one torch thread unless ``torch_threads=False``) inside the block.

    Thousands of small matrix products on a shared 2-core machine run 10-100× slower with two
    spinning BLAS threads than with one (measured), and one thread gives the same numbers
    whatever the machine's core count."""
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    if torch_threads:
        torch.set_num_threads(1)
    try:
        with threadpool_limits(1):
            yield
    finally:
        torch.set_num_threads(before)
