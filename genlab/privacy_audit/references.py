"""Reference rows of the audit's headline: what its memorisation metrics and best attack read
for a generator that copies and for one that memorises nothing.

- ``<metric>_copy``: the "samples" are the members themselves (a perfect copier). Every
  memorisation metric must flag it and the best black-box attack must find the members; if
  one does not, that metric cannot be trusted on this data.
- ``<metric>_baseline``: the "samples" are fresh real records, the ``val`` pool (never trained
  on, never scored, not the attacks' reference population): a generator that matches the data
  exactly and memorises nothing. Its values are the floor a model is read against (DCR share
  ≈ 50 %, C_T ≈ 0, the best attack's AUC ≈ ½). Null with a reason when ``val`` holds fewer than
  ``MIN_BASELINE`` records.

The rows use the audit's own functions (:func:`genlab.privacy_audit.memorisation.dcr`,
:func:`~genlab.privacy_audit.memorisation.data_copying_ct`, the black-box attacks of
:func:`~genlab.privacy_audit.attacks.fit_attacks` on the same scored records and halves), at
the reference samples' own size (stated as ``n_samples_copy`` / ``n_samples_baseline``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from genlab.numerics import flatten
from genlab.privacy_audit.attack_table import attack_rows, best_attack
from genlab.privacy_audit.attacks import fit_attacks
from genlab.privacy_audit.memorisation import data_copying_ct, dcr

__all__ = ["MEMO_KEYS", "MIN_BASELINE", "memo_numbers", "reference_rows"]

MEMO_KEYS = ("dcr_share_closer_to_members", "nndr_median", "near_duplicate_share", "authenticity",
             "data_copying_ct")
MIN_BASELINE = 10


def memo_numbers(samples, x_mem, x_hold, p) -> tuple[dict, dict]:
    """(dcr's figures, C_T's) of ``samples`` against the members and ``holdout_a``."""
    memo = dcr(samples, x_mem, x_hold, seed=p.seed, near_quantile=p.near_dup_quantile,
               confidence=p.confidence)
    ct = data_copying_ct(x_mem, x_hold, samples, cells=min(p.ct_cells, len(x_mem)), seed=p.seed)
    return memo, ct


def _row(samples, sc, x_mem, x_hold, p) -> dict[str, Any]:
    memo, ct = memo_numbers(samples, x_mem, x_hold, p)
    out = {k: memo[k] for k in MEMO_KEYS if k in memo}
    out["data_copying_ct"] = ct["data_copying_ct"]
    fitted = fit_attacks(None, samples, sc.x["ref"], seed=p.seed, mc_samples=p.mc_samples,
                         domias_dims=p.domias_dims, ball_quantile=p.ball_quantile)
    rows, _, _ = attack_rows(fitted.score(sc.x["mem"]), fitted.score(sc.x["non"]), sc.n, p.seed,
                             p.confidence)
    best = best_attack(rows)
    out["mia_auc_max"] = best["auc"]
    out["n_samples"] = len(samples)
    return out


def reference_rows(ds, spec, sc, x_mem, x_hold, p) -> dict[str, Any]:
    """``<key>_copy`` and ``<key>_baseline`` for the memorisation keys and ``mia_auc_max``."""
    num: dict[str, Any] = {}
    for k, v in _row(flatten(x_mem), sc, x_mem, x_hold, p).items():
        num[f"{k}_copy"] = v
    val = spec.pools.get("val", np.zeros(0, np.int64))
    if len(val) >= MIN_BASELINE:
        fresh = flatten(torch.from_numpy(ds.x[spec.pool("val")]))
        for k, v in _row(fresh, sc, x_mem, x_hold, p).items():
            num[f"{k}_baseline"] = v
    else:
        reason = (f"the val pool holds {len(val)} records (< {MIN_BASELINE}): no fresh real "
                  f"records for the baseline row")
        for k in (*MEMO_KEYS, "mia_auc_max", "n_samples"):
            num[f"{k}_baseline"] = None
            num[f"{k}_baseline_na_reason"] = reason
    return num
