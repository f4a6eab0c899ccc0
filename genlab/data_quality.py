"""Quality checks of a data set before training: shape, finite values, value range, exact
duplicates, constant features, class balance and sample size; an error stops the run."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from genlab.data import _MIN_RECORDS, MAX_IMAGE_SIDE, DataQualityError, Dataset


@dataclass
class QualityCheck:
    name: str
    status: str  # "ok" | "warn" | "error"
    detail: str


def quality_checks(ds: Dataset) -> list[QualityCheck]:
    """Checks worth a look before training; "error" means training on these data makes no sense."""
    x, n = ds.x, len(ds.x)
    checks = []
    if ds.is_image:
        ok = x.shape[1] in (1, 3) and max(x.shape[2:]) <= MAX_IMAGE_SIDE
        checks.append(QualityCheck("shape", "ok" if ok else "error",
                                   f"{x.shape}; expected N×C×H×W, C in (1, 3), sides ≤ {MAX_IMAGE_SIDE}"))
    else:
        checks.append(QualityCheck("shape", "ok" if x.ndim == 2 else "error",
                                   f"{x.shape}; expected N×C×H×W images or N×D records"))
    flat = x.reshape(n, -1)
    finite = np.isfinite(flat)
    bad = int((~finite).sum())
    checks.append(QualityCheck("finite", "error" if bad else "ok", f"{bad} NaN/inf values"))

    vals = flat[finite]
    lo, hi = (float(vals.min()), float(vals.max())) if vals.size else (float("nan"), float("nan"))
    if ds.is_image:
        in_range = bool(vals.size) and lo >= 0 and hi <= 1
        checks.append(QualityCheck("value_range", "ok" if in_range else "error",
                                   f"min {lo:g}, max {hi:g}; expected [0, 1]"))
    else:
        checks.append(QualityCheck("value_range", "ok", f"min {lo:g}, max {hi:g}"))

    if n and flat.shape[1]:
        rows = np.ascontiguousarray(flat).view(np.dtype((np.void, flat.dtype.itemsize * flat.shape[1])))
        dup = n - len(np.unique(rows))
    else:
        dup = 0
    status = "error" if dup > n / 2 else "warn" if dup else "ok"
    checks.append(QualityCheck("duplicates", status, f"{dup} of {n} records repeat an earlier record exactly"))

    n_feat = flat.shape[1]
    const = int((flat.max(axis=0) == flat.min(axis=0)).sum()) if n else 0
    # Images often have constant pixels (the blank border of digits): normal, so only "ok" there.
    status = "warn" if const and (not ds.is_image or const == n_feat) else "ok"
    checks.append(QualityCheck("constant_features", status, f"{const} of {n_feat} features constant"))

    if ds.y is None or n == 0:
        checks.append(QualityCheck("class_balance", "ok", "no labels"))
    else:
        counts = np.bincount(ds.y, minlength=ds.n_classes or 0)
        names = ds.class_names if len(ds.class_names or ()) == len(counts) else [str(k) for k in range(len(counts))]
        small, large = int(counts.argmin()), int(counts.argmax())
        share = counts / max(n, 1)
        status = "warn" if counts[small] < 0.2 * counts[large] or counts[small] < 5 else "ok"
        checks.append(QualityCheck("class_balance", status,
                                   f"smallest class {names[small]!r}: {counts[small]} ({share[small]:.1%}), "
                                   f"largest {names[large]!r}: {counts[large]} ({share[large]:.1%})"))
    checks.append(QualityCheck("sample_size", "error" if n < _MIN_RECORDS else "ok",
                               f"{n} records; at least {_MIN_RECORDS} needed"))
    return checks


def assert_quality(checks: list[QualityCheck]) -> None:
    errors = [c for c in checks if c.status == "error"]
    if errors:
        raise DataQualityError("data quality errors: " + "; ".join(f"{c.name}: {c.detail}" for c in errors))


def quality_table(checks: list[QualityCheck]) -> list[dict]:
    return [{"check": c.name, "status": c.status, "detail": c.detail} for c in checks]
