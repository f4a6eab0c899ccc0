"""Screens a data team can run on a training pool before training, and how well they catch
poison.

- **label issues** — confident learning (Northcutt, Jiang & Chuang 2021) with `cleanlab`:
  `cleanlab.filter.find_label_issues` on out-of-fold predicted probabilities of a multinomial
  logistic regression on the standardised raw records (5-fold, seeded); labelled data only.
- **outliers** — scikit-learn's `IsolationForest` (seeded, 200 trees) on the raw flattened
  records, fitted on the pool itself; a record is flagged when
  its score is below the `OUTLIER_FALSE_FLAG` quantile of the scores of clean reference records
  (holdout_a), so about that share of clean records is flagged by design.
- **near duplicates** — a record is flagged when another record of the pool lies closer (raw
  Euclidean distance) than the `DUPLICATE_QUANTILE` quantile of the reference records' distances
  to their nearest pool record: closer than almost any fresh record comes to the pool.

Each screen is scored against the attacker's mask: precision and recall on the poisoned
records, and the false-flag rate on the clean ones.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from genlab.numerics import flatten
from genlab.privacy_audit.attacks import nn_distances

SCREENS = ("label_issues", "outliers", "near_duplicates")
OUTLIER_FALSE_FLAG = 0.01
DUPLICATE_QUANTILE = 0.01


def label_issues(x: np.ndarray, y: np.ndarray, *, seed: int, folds: int = 5) -> np.ndarray:
    """Bool per record: cleanlab's confident-learning label issues (out-of-fold probabilities)."""
    with warnings.catch_warnings():  # tqdm (imported by cleanlab) warns about notebook widgets
        warnings.filterwarnings("ignore", message=".*IProgress not found.*")
        from cleanlab.filter import find_label_issues
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y = np.asarray(y)
    folds = int(min(folds, np.bincount(y).max(), np.bincount(y)[np.bincount(y) > 0].min()))
    if folds < 2:
        raise ValueError("label_issues: every class needs at least 2 records for out-of-fold "
                         "probabilities")
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=300))
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        proba = cross_val_predict(clf, flatten(x), y, cv=cv, method="predict_proba")
    return np.asarray(find_label_issues(labels=y, pred_probs=proba), dtype=bool)


def outliers(x: np.ndarray, reference: np.ndarray, *, seed: int) -> np.ndarray:
    """Bool per record of `x`: IsolationForest outlier (threshold from clean `reference`)."""
    from sklearn.ensemble import IsolationForest

    a = flatten(x)
    forest = IsolationForest(n_estimators=200, random_state=seed).fit(a)
    cut = np.quantile(forest.score_samples(flatten(reference)), OUTLIER_FALSE_FLAG)
    return forest.score_samples(a) < cut


def near_duplicates(x: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Bool per record of `x`: another record of `x` is closer than fresh records come."""
    d_pool = nn_distances(x, x, 2)[0][:, 1]  # nearest other record (the first is itself)
    cut = float(np.quantile(nn_distances(reference, x, 1)[0][:, 0], DUPLICATE_QUANTILE))
    return d_pool < cut


def run_screens(x: np.ndarray, y: np.ndarray | None, reference: np.ndarray, *, seed: int
                ) -> dict[str, np.ndarray | None]:
    """Every screen's flags on the pool `x` (None: the screen needs labels the data lacks)."""
    return {"label_issues": None if y is None else label_issues(x, y, seed=seed),
            "outliers": outliers(x, reference, seed=seed),
            "near_duplicates": near_duplicates(x, reference)}


def screen_scores(flags: np.ndarray, poisoned: np.ndarray) -> dict[str, Any]:
    """Precision and recall on the poisoned records, false-flag rate on the clean ones."""
    flags, poisoned = np.asarray(flags, bool), np.asarray(poisoned, bool)
    tp = int((flags & poisoned).sum())
    out: dict[str, Any] = {"flagged": int(flags.sum()), "poisoned": int(poisoned.sum()),
                           "true_positives": tp, "clean": int((~poisoned).sum()),
                           "false_flags": int((flags & ~poisoned).sum()),
                           "false_flag_rate": float(flags[~poisoned].mean()) if (~poisoned).any() else None}
    out["precision"] = tp / out["flagged"] if out["flagged"] else None
    out["recall"] = tp / out["poisoned"] if out["poisoned"] else None
    return out


def quality_rows(x: np.ndarray, y: np.ndarray | None, reference: np.ndarray, *, seed: int
                 ) -> list[dict[str, str]]:
    """The screens as data-quality rows (check, status, detail, flagged) for a training pool: a
    flag is a warning to look at, never an error (nothing is dropped)."""
    rows = []
    for name, flags in run_screens(x, y, reference, seed=seed).items():
        if flags is None:
            rows.append({"check": f"screen_{name}", "status": "ok", "detail": "no labels: not run",
                         "flagged": 0})
            continue
        k = int(flags.sum())
        rows.append({"check": f"screen_{name}", "status": "warn" if k else "ok", "flagged": k,
                     "detail": f"{k} of {len(flags)} members flagged"
                               + (f" (first: {np.flatnonzero(flags)[:5].tolist()})" if k else "")})
    return rows
