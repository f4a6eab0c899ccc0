"""Classifier-based metrics: detection (C2ST), utility (TSTR/TRTR), calibration and class shares.

- **C2ST** (Lopez-Paz & Oquab 2017): a logistic regression on standardised features tries to
  tell real from generated; its seeded, cross-validated out-of-fold ROC AUC is 0.5 for an
  indistinguishable generator and → 1 for an obvious one.
- **TSTR / TRTR** (Esteban et al. 2017): a fresh classifier (multinomial logistic regression on
  the raw flattened records, so the extractor's knowledge does not leak in) trained on
  generated records and their own labels (requested classes), tested on real held-out data;
  compared with the same classifier trained on as many real member records. Calibration:
  expected calibration error (torchmetrics, 15 bins, L1; biased upward at small n, so two ECEs
  compare only at one n) and the reliability curve.
- **Slices**: class-frequency divergence (mode dropping / collapse) and per-class metrics.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from genlab.numerics import MetricInputError, check_features, flatten

__all__ = ["c2st_auc", "fit_classifier", "accuracy", "ece", "reliability", "class_shares",
           "total_variation"]


def c2st_auc(real, fake, *, folds: int = 5, seed: int = 0) -> float:
    """Out-of-fold ROC AUC of logistic regression separating `real` from `fake` features.

    Both sets count equally (the larger one is subsampled to the smaller, seeded)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    r, f = check_features(real, "real"), check_features(fake, "fake")
    n = min(len(r), len(f))
    if n < folds:
        raise MetricInputError(f"C2ST: expected at least folds={folds} records per set, got {n}")
    rng = np.random.default_rng(seed)
    r = r[np.sort(rng.choice(len(r), n, replace=False))]
    f = f[np.sort(rng.choice(len(f), n, replace=False))]
    x = np.concatenate([r, f])
    y = np.r_[np.zeros(n), np.ones(n)]
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=500))
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence notes on separable sets: AUC is still right
        score = cross_val_predict(clf, x, y, cv=cv, method="decision_function")
    return float(roc_auc_score(y, score))


def fit_classifier(x, y, n_classes: int):
    """Multinomial logistic regression on flattened records (deterministic lbfgs).

    Classes absent from `y` get probability 0 in `predict_proba`'s padded output; the fitted
    scikit-learn model is `proba.estimator`."""
    from sklearn.linear_model import LogisticRegression

    flat = check_features(flatten(x), "x")
    y = np.asarray(y)
    if len(np.unique(y)) < 2:
        raise MetricInputError(f"labels: expected at least 2 classes to train a classifier, "
                               f"got {np.unique(y).tolist()}")
    clf = LogisticRegression(C=1.0, max_iter=1000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.fit(flat, y)

    def proba(xt) -> np.ndarray:
        p = clf.predict_proba(flatten(xt))
        out = np.zeros((len(p), n_classes))
        out[:, clf.classes_] = p
        return out

    proba.estimator = clf  # the fitted model, for attacks that need its coefficients
    return proba


def accuracy(proba: np.ndarray, y: np.ndarray) -> float:
    return float((np.asarray(proba).argmax(1) == np.asarray(y)).mean())


def ece(proba: np.ndarray, y: np.ndarray, n_bins: int = 15) -> float:
    """Expected calibration error (top-label, L1, equal-width bins) via torchmetrics."""
    from torchmetrics.functional.classification import multiclass_calibration_error

    p = torch.from_numpy(np.asarray(proba, dtype=np.float64))
    return float(multiclass_calibration_error(p, torch.from_numpy(np.asarray(y)),
                                              num_classes=p.shape[1], n_bins=n_bins, norm="l1"))


def reliability(proba: np.ndarray, y: np.ndarray, n_bins: int = 15) -> list[dict]:
    """Per confidence bin: mean confidence, accuracy and count (the reliability diagram)."""
    conf = np.asarray(proba).max(1)
    correct = np.asarray(proba).argmax(1) == np.asarray(y)
    edges = np.linspace(0, 1, n_bins + 1)
    idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    rows = []
    for b in range(n_bins):
        sel = idx == b
        if sel.any():
            rows.append({"bin_low": float(edges[b]), "bin_high": float(edges[b + 1]),
                         "confidence": float(conf[sel].mean()),
                         "accuracy": float(correct[sel].mean()), "count": int(sel.sum())})
    return rows


def class_shares(labels: np.ndarray, n_classes: int) -> np.ndarray:
    labels = np.asarray(labels)
    if len(labels) == 0:
        raise MetricInputError("labels: expected at least one record to count classes, got 0")
    return np.bincount(labels, minlength=n_classes)[:n_classes] / len(labels)


def total_variation(p: np.ndarray, q: np.ndarray) -> float:
    """½ Σ|p−q| between class distributions: 0 = same shares, 1 = disjoint classes."""
    return float(0.5 * np.abs(np.asarray(p) - np.asarray(q)).sum())
