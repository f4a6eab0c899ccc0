"""Memorisation of a generative model, measured on its samples (not on scored records).

- :func:`dcr` — distance to closest record: generated → members vs generated → ``holdout_a``,
  with members subsampled to the holdout's size (a larger bank is closer by chance alone), and
  the share of samples closer to members (50 % for a model that generalises; 100 % for a copier).
  Samples are not independent evidence: a barely trained model emits near-identical blobs whose
  nearest record is the same one, so the share is then one coin flip however many samples are
  drawn. Its CI is therefore a cluster bootstrap over the *records* (each sample grouped with
  the record, member or holdout, it is nearest to), and ``dcr_n_distinct_nearest`` says how many
  distinct records the samples are nearest to (the verdict ignores the share below a minimum).
- nearest-neighbour distance ratio (d₁/d₂ to the distinct members): a sample far closer to one
  member than to the next is a likely copy even when the absolute distance looks ordinary.
- authenticity (Alaa et al. 2022, :func:`genlab.evaluate.metrics.authenticity`, in data space
  here): the share of samples not closer to their nearest member than that member is to its
  nearest distinct member; 0 for a copier.
- :func:`data_copying_ct` — the three-sample test C_T of Meehan, Chaudhuri & Dasgupta (2020):
  per cell of a k-means partition of the training set, a Mann–Whitney z-score comparing the
  generated samples' and the test records' distances to the training set; C_T ≪ 0 means
  generated samples sit closer to the training data than fresh data do (copying).
- exact and near duplicates (counts, and the near ones' share); ``near`` = closer to a member than all but ``near_quantile`` of
  fresh records (``holdout_a``) are — a threshold taken from the data's own real-to-real spacing.
"""

from __future__ import annotations

import numpy as np
from scipy import stats
from sklearn.cluster import KMeans

from genlab.evaluate.metrics import authenticity
from genlab.numerics import flatten
from genlab.privacy_audit.attacks import nn_distances

__all__ = ["dcr", "data_copying_ct", "mann_whitney_z", "record_share"]


def record_share(d_mem, i_mem, d_hold, i_hold, n_bank: int, *, seed: int = 0,
                 confidence: float = 0.95, n_boot: int = 2000) -> dict:
    """CI of the share of samples closer to members, bootstrapped over records, not samples.

    Each sample belongs to the record it is nearest to in the union of the two size-matched
    banks (its nearest member if ``d_mem < d_hold``, else its nearest holdout record; a tie
    counts ½ closer and goes with the member). The records that hold at least one sample are the
    independent units: they are resampled with replacement and the share recomputed as the ratio
    of sums (a cluster bootstrap; percentile interval). A model whose samples all sit by one
    record gets ``n_distinct == 1`` — one coin flip — and a degenerate interval that the verdict
    must not trust (see ``privacy_audit._verdict``)."""
    d_mem, d_hold = np.asarray(d_mem), np.asarray(d_hold)
    to_mem = d_mem <= d_hold
    closer = (d_mem < d_hold) + 0.5 * (d_mem == d_hold)
    # record ids: members 0..n_bank-1, holdout records n_bank..2*n_bank-1
    rid = np.where(to_mem, np.asarray(i_mem), n_bank + np.asarray(i_hold))
    ids, inv = np.unique(rid, return_inverse=True)
    tot = np.bincount(inv).astype(float)
    clo = np.bincount(inv, weights=closer)
    c = len(ids)
    rng = np.random.default_rng([int(seed), 0xB007])
    w = rng.multinomial(c, np.full(c, 1.0 / c), size=int(n_boot)).astype(float)
    den = w @ tot
    boots = (w @ clo)[den > 0] / den[den > 0]
    a = (1 - confidence) / 2
    lo, hi = (float(v) for v in np.quantile(boots, [a, 1 - a]))
    return {"ci_low": lo, "ci_high": hi, "n_distinct": int(c),
            "n_distinct_members": int((ids < n_bank).sum())}


def dcr(generated, members, holdout, *, seed: int = 0, near_quantile: float = 0.01,
        gallery: int = 8, confidence: float = 0.95, n_boot: int = 2000) -> dict:
    """Distance-to-closest-record figures and the most copied-looking samples.

    Returns plain numbers (see the keys) plus arrays for plots: ``d_members`` / ``d_holdout``
    (per sample, to the size-matched banks) and ``gallery`` (sample index, nearest member index,
    distance) for the ``gallery`` samples closest to any member."""
    g, mem, hold = flatten(generated), flatten(members), flatten(holdout)
    if not 0 < near_quantile < 1:
        raise ValueError(f"near_quantile: expected a number in (0, 1), got {near_quantile!r}")
    if len(mem) < 2 or len(hold) < 1 or len(g) < 1:
        raise ValueError(f"dcr: expected >= 2 members, >= 1 holdout record and >= 1 sample, "
                         f"got {len(mem)}, {len(hold)}, {len(g)}")
    rng = np.random.default_rng([int(seed), 0xDC7])
    n_bank = min(len(mem), len(hold))
    mem_sub = mem[np.sort(rng.choice(len(mem), n_bank, replace=False))]
    hold_sub = hold[np.sort(rng.choice(len(hold), n_bank, replace=False))]
    d_mem, i_mem = (a[:, 0] for a in nn_distances(g, mem_sub, 1))
    d_hold, i_hold = (a[:, 0] for a in nn_distances(g, hold_sub, 1))
    closer, ties = int((d_mem < d_hold).sum()), int((d_mem == d_hold).sum())
    n = len(g)
    share = (closer + 0.5 * ties) / n
    rec = record_share(d_mem, i_mem, d_hold, i_hold, n_bank, seed=seed, confidence=confidence,
                       n_boot=n_boot)

    # all members, each distinct record once: copies of any member count, and a member present
    # twice must not be its own "second nearest" (d₂ = 0 would hide a copy of it)
    distinct, first = np.unique(mem, axis=0, return_index=True)
    d_full, i_full = nn_distances(g, distinct, 2)
    i_full = first[i_full]  # back to the members' own indices
    nndr = d_full[:, 0] / np.maximum(d_full[:, 1], 1e-12)
    real_gap = nn_distances(hold, mem, 1)[0][:, 0]  # fresh records' distance to the members
    near_t = float(np.quantile(real_gap, near_quantile))
    scale = float(np.median(real_gap)) or 1.0
    exact = int((d_full[:, 0] <= 1e-6 * scale).sum())
    order = np.lexsort((np.arange(n), d_full[:, 0]))[:gallery]
    return {
        "dcr_share_closer_to_members": share,
        "dcr_share_closer_to_members_ci_low": rec["ci_low"],
        "dcr_share_closer_to_members_ci_high": rec["ci_high"],
        "dcr_n_distinct_nearest": rec["n_distinct"],
        "dcr_n_distinct_nearest_members": rec["n_distinct_members"],
        "dcr_median_members": float(np.median(d_mem)),
        "dcr_median_holdout": float(np.median(d_hold)),
        "nndr_median": float(np.median(nndr)),
        "n_exact_duplicates": exact,
        "n_near_duplicates": int((d_full[:, 0] <= near_t).sum()),
        "near_duplicate_share": float((d_full[:, 0] <= near_t).mean()),
        "authenticity": authenticity(mem, g),
        "near_duplicate_threshold": near_t,
        "n_bank": n_bank,
        "n_generated": n,
        "d_members": d_mem,
        "d_holdout": d_hold,
        "gallery": [(int(i), int(i_full[i, 0]), float(d_full[i, 0])) for i in order],
    }


def mann_whitney_z(a, b) -> float:
    """z-score of the Mann–Whitney U of sample ``a`` against ``b`` (ties ½, no continuity
    correction): negative when ``a`` tends to be smaller. Meehan et al.'s Z_U with a = Q, b = P."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    m, n = len(a), len(b)
    ranks = stats.rankdata(np.concatenate([a, b]))
    u = ranks[:m].sum() - m * (m + 1) / 2  # pairs with a > b (+ ½ ties)
    return float((u - m * n / 2) / np.sqrt(m * n * (m + n + 1) / 12))


def data_copying_ct(train, test, generated, *, cells: int = 5, seed: int = 0,
                    min_share: float = 0.02) -> dict:
    """Meehan et al. (2020) C_T: Σ_π P_n(π)·Z_U(π) / Σ_π P_n(π) over cells with enough samples.

    Cells: k-means (``cells``, seeded) on the training records. Z_U(π): Mann–Whitney z of the
    generated samples' nearest-training-record distances against the test records' ones in π.
    Cells holding fewer than ``min_share`` of the generated samples (or no test record) are left
    out, as in the paper: their z is noise. Returns C_T, the per-cell table and the cells used."""
    t, p, q = flatten(train), flatten(test), flatten(generated)
    if not isinstance(cells, int) or not 1 <= cells <= len(t):
        raise ValueError(f"cells: expected an integer in [1, {len(t)}], got {cells!r}")
    km = KMeans(n_clusters=cells, n_init=2, random_state=int(seed)).fit(t)
    lp, lq = km.predict(p), km.predict(q)
    dp = nn_distances(p, t, 1)[0][:, 0]
    dq = nn_distances(q, t, 1)[0][:, 0]
    rows, num, den = [], 0.0, 0.0
    for c in range(cells):
        ip, iq = lp == c, lq == c
        share_q, share_p = float(iq.mean()), float(ip.mean())
        used = share_q >= min_share and ip.sum() >= 1 and iq.sum() >= 1
        z = mann_whitney_z(dq[iq], dp[ip]) if used else None
        rows.append({"cell": c, "n_test": int(ip.sum()), "n_generated": int(iq.sum()),
                     "z_u": z, "used": used})
        if used:
            num += share_p * z
            den += share_p
    ct = num / den if den > 0 else None
    return {"data_copying_ct": ct, "cells": rows, "cells_used": sum(r["used"] for r in rows),
            "data_copying_ct_na_reason": None if ct is not None else
            f"no cell holds >= {min_share:g} of the generated samples and a test record"}
