"""Online metrics of a served model, from the server's request log (`genlab serve --log-outputs`).

    genlab monitor requests.jsonl --run reports/<approved run> [--window 50 --arl0 1000]

(a) Output drift: the drift study's windowed-MMD monitor (`drift_study.monitor.WindowMMD`) on the
    stream of served records, in the evaluation classifier's feature space, against reference
    samples of the approved model. The approved model is a generator, so its no-change output
    distribution can be sampled without limit: three disjoint sample pools from independent seeds
    serve as the MMD's reference set, the calibration pool (no-change streams that set the
    threshold h for the target ARL₀) and the measurement pool (other streams that measure the
    ARL₀ h gives, with its CI). Calibrating and measuring on the same finite pool would return
    the target by construction; a different pool shows what the threshold really gives.
(b) Task completion: the share of served records that the evaluation classifier assigns to the
    requested class (conditional requests), with a Wilson 95% CI. Simulated user acceptance: a
    user rejects a record that does not look like real data (outside every k-NN ball of the
    real `holdout_a` records in the classifier's feature space: the per-record test behind
    precision; the same yardstick for every model version) and accepts the others with probability equal to the classifier's
    probability of the requested class (of its most likely class for an unconditional request)
    — a user who reads digits as well as the classifier; one seeded Bernoulli draw per record.
(c) Request drift: requested classes against the class shares the model was approved on (its
    members), and request sizes against the approval window's sizes (the first `window` requests
    of the log, or a reference log): chi-square goodness-of-fit tests at level α; requests in a
    size class the approval window never saw count as drift by themselves.
"""

from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

SIZE_BINS = (1, 2, 5, 17, 65)  # request sizes: 1, 2-4, 5-16, 17-64, 65+


class LogError(ValueError):
    """A request log that cannot be read as the server writes it (the message says where)."""


# ------------------------------------------------------------------------------ the log
@dataclass
class Served:
    """The served records of a log, in order: outputs x, requested/generated labels (−1 for an
    unconditional model), the request index of each record, and per request its log row."""

    x: np.ndarray
    labels: np.ndarray
    request_of_record: np.ndarray
    rows: list[dict[str, Any]]

    def arm(self, version: str) -> "Served":
        """The records one arm ("champion"/"candidate") answered."""
        keep = [i for i, r in enumerate(self.rows) if r.get("version") == version]
        mask = np.isin(self.request_of_record, keep)
        remap = {old: new for new, old in enumerate(keep)}
        return Served(self.x[mask], self.labels[mask],
                      np.array([remap[i] for i in self.request_of_record[mask]], dtype=int),
                      [self.rows[i] for i in keep])


def read_log(path: Path | str | Iterable[str]) -> list[dict[str, Any]]:
    """The JSON lines of a request log (a path or lines)."""
    lines = Path(path).read_text().splitlines() if isinstance(path, (str, Path)) else list(path)
    rows = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise LogError(f"request log line {i}: not JSON ({exc.msg})") from None
        if not isinstance(row, dict) or "status" not in row:
            raise LogError(f"request log line {i}: expected an object with 'status', got "
                           f"{str(row)[:80]!r}")
        rows.append(row)
    return rows


def served_records(rows: Sequence[dict[str, Any]]) -> Served:
    """Decode the `outputs` of every successful request (needs `genlab serve --log-outputs`)."""
    ok = [r for r in rows if r.get("status") == 200]
    if ok and not any("outputs" in r for r in ok):
        raise LogError("request log holds no outputs: start the server with --log-outputs")
    xs, labels, owner, kept = [], [], [], []
    for r in ok:
        if "outputs" not in r:
            continue
        with np.load(io.BytesIO(base64.b64decode(r["outputs"]))) as npz:
            x, lab = npz["x"], npz["labels"]
        xs.append(x)
        labels.append(lab if len(lab) else np.full(len(x), -1))
        owner.append(np.full(len(x), len(kept)))
        kept.append(r)
    if not kept:
        raise LogError("request log holds no successful requests")
    return Served(np.concatenate(xs).astype(np.float32), np.concatenate(labels).astype(int),
                  np.concatenate(owner), kept)


# ------------------------------------------------------------------------------ (a) output drift
@dataclass
class OutputMonitor:
    """A windowed-MMD monitor calibrated on the approved model's own samples (module doc)."""

    featurize: Any  # records -> feature rows
    reference: np.ndarray  # features of the reference pool
    sigma: float
    window: int
    threshold: float
    arl0_target: int
    arl0: dict[str, float]  # measured on the measurement pool: mean, CI, censored share

    def paths(self, features: np.ndarray) -> np.ndarray:
        """The statistic along one stream of feature rows (NaN before the first full window)."""
        from genlab.drift_study.monitor import WindowMMD

        mmd = WindowMMD(features, self.reference, self.window, self.sigma)
        return mmd.paths(np.arange(len(features))[None, :])[0]

    def first_alarm(self, x: np.ndarray) -> int | None:
        """0-based index of the record at which the monitor first alarms, or None."""
        above = np.nan_to_num(self.paths(self.featurize(x)), nan=-np.inf) > self.threshold
        return int(above.argmax()) if above.any() else None


def calibrate_output_monitor(sample, featurize, *, window: int = 50, arl0_target: int = 1000,
                             pool_size: int = 2000, n_streams: int = 100, seed: int = 0
                             ) -> OutputMonitor:
    """Reference, calibration and measurement pools of `pool_size` records each, sampled from
    the approved model (`sample(n, seed) -> records`) with independent seeds; the threshold for
    `arl0_target` from 5 × `n_streams` streams of the calibration pool; ARL₀ measured on
    `n_streams` streams of the measurement pool (mean run length, ±1.96 s/√n, censored share).
    ARL₀ counts served records, not requests: at 1000, a false alarm every ~1000 records."""
    from genlab.drift_study import detectors as drift
    from genlab.drift_study.monitor import (WindowMMD, calibrate_threshold, permutation_streams,
                                            run_lengths)
    from genlab.numerics import single_threaded

    with single_threaded():
        ref, cal, meas = (featurize(np.asarray(sample(pool_size, s)))
                          for s in (seed * 3 + 101, seed * 3 + 102, seed * 3 + 103))
        sigma = drift.median_bandwidth(ref)
        length = 10 * arl0_target
        rng = np.random.default_rng([seed, 41])
        cal_paths = WindowMMD(cal, ref, window, sigma).paths(
            permutation_streams(np.arange(pool_size), 5 * n_streams, length, rng))
        h = calibrate_threshold(cal_paths, arl0_target)
        meas_paths = WindowMMD(meas, ref, window, sigma).paths(
            permutation_streams(np.arange(pool_size), n_streams, length,
                                np.random.default_rng([seed, 42])))
        rl, censored = run_lengths(meas_paths, h)
    se = rl.std(ddof=1) / np.sqrt(len(rl))
    arl0 = {"measured": float(rl.mean()), "ci_low": float(rl.mean() - 1.96 * se),
            "ci_high": float(rl.mean() + 1.96 * se), "censored_share": float(censored.mean()),
            "streams": int(len(rl))}
    return OutputMonitor(featurize, ref, float(sigma), window, float(h), arl0_target, arl0)


# ------------------------------------------------------------------------------ (b) task completion
def wilson(successes: int, n: int) -> tuple[float | None, float | None]:
    """Wilson score 95% interval of a proportion (scipy's), (None, None) for n = 0."""
    if n == 0:
        return None, None
    from scipy import stats

    ci = stats.binomtest(int(successes), int(n)).proportion_ci(0.95, method="wilson")
    return float(ci.low), float(ci.high)


def realistic(features: np.ndarray, reference: np.ndarray, k: int = 5) -> np.ndarray:
    """Per record: inside the k-nearest-neighbour ball of some reference record (the
    per-record test behind precision in Kynkäänniemi et al. 2019; its mean is prdc's precision)."""
    from sklearn.metrics import pairwise_distances
    from sklearn.neighbors import NearestNeighbors

    radii = NearestNeighbors(n_neighbors=k + 1).fit(reference).kneighbors(reference)[0][:, k]
    return (pairwise_distances(features, reference) < radii[None, :]).any(1)


def task_completion(proba: np.ndarray, labels: np.ndarray, *, seed: int = 0,
                    real: np.ndarray | None = None) -> dict[str, Any]:
    """Completion (classifier's argmax = requested class) over the records with a requested
    class, and simulated user acceptance over all records (module doc), with Wilson CIs.
    `real`: per record, whether it looks like real data (`realistic`); a record that does not
    is never accepted."""
    labels = np.asarray(labels)
    asked = labels >= 0
    n = int(asked.sum())
    done = int((proba[asked].argmax(1) == labels[asked]).sum()) if n else 0
    p_accept = np.where(asked, proba[np.arange(len(proba)), np.maximum(labels, 0)],
                        proba.max(1))
    if real is not None:
        p_accept = p_accept * np.asarray(real, dtype=float)
    accepted = int((np.random.default_rng([seed, 43]).random(len(p_accept)) < p_accept).sum())
    out: dict[str, Any] = {"completion_n": n, "completion_successes": done,
                           "acceptance_n": int(len(p_accept)), "acceptance_successes": accepted,
                           "acceptance": accepted / len(p_accept) if len(p_accept) else None}
    out["completion"] = done / n if n else None
    out["completion_ci_low"], out["completion_ci_high"] = wilson(done, n)
    out["acceptance_ci_low"], out["acceptance_ci_high"] = wilson(accepted, len(p_accept))
    return out


# ------------------------------------------------------------------------------ (c) request drift
def _chi_square(observed: np.ndarray, expected_share: np.ndarray) -> tuple[float, float, int]:
    """Goodness of fit; categories whose expected count is < 5 are pooled into one."""
    from scipy import stats

    expected = expected_share / expected_share.sum() * observed.sum()
    small = expected < 5
    if small.any() and (~small).any():
        observed = np.append(observed[~small], observed[small].sum())
        expected = np.append(expected[~small], expected[small].sum())
    keep = expected > 0
    if keep.sum() < 2:
        return 0.0, 1.0, 0
    res = stats.chisquare(observed[keep], expected[keep])
    return float(res.statistic), float(res.pvalue), int(keep.sum() - 1)


def size_bins(sizes: Sequence[int]) -> np.ndarray:
    return np.bincount(np.digitize(sizes, SIZE_BINS) - 1, minlength=len(SIZE_BINS))


def request_drift(rows: Sequence[dict[str, Any]], approved_class_shares: np.ndarray | None,
                  reference_rows: Sequence[dict[str, Any]], *, alpha: float = 0.05
                  ) -> dict[str, Any]:
    """Chi-square tests of requested classes and request sizes (module doc)."""
    out: dict[str, Any] = {"request_drift_alpha": alpha}
    labels = [lab for r in rows if r.get("status") == 200 and r.get("labels")
              for lab in r["labels"]]
    if approved_class_shares is not None and labels:
        counts = np.bincount(labels, minlength=len(approved_class_shares))
        stat, p, dof = _chi_square(counts.astype(float), np.asarray(approved_class_shares, float))
        out.update(label_chi2=stat, label_chi2_dof=dof, label_pvalue=p, label_drift=bool(p <= alpha))
    else:
        out.update(label_chi2=None, label_pvalue=None, label_drift=None,
                   label_drift_na_reason="unconditional model or no labelled requests")
    sizes = [r["n"] for r in rows if r.get("status") == 200 and r.get("n")]
    ref_sizes = [r["n"] for r in reference_rows if r.get("status") == 200 and r.get("n")]
    if sizes and ref_sizes:
        observed, approved = size_bins(sizes).astype(float), size_bins(ref_sizes).astype(float)
        seen = approved > 0  # a size class the approval window never had is drift by itself
        stat, p, dof = _chi_square(observed[seen], approved[seen])
        unseen = float(observed[~seen].sum() / observed.sum())
        out.update(size_chi2=stat, size_chi2_dof=dof, size_pvalue=p, size_unseen_share=unseen,
                   size_drift=bool(p <= alpha or unseen > 0))
    else:
        out.update(size_chi2=None, size_pvalue=None, size_drift=None,
                   size_drift_na_reason="no successful requests in the window or the reference")
    return out


# ------------------------------------------------------------------------------ all of it
def approved_model(run_dir: Path, *, seed: int = 0):
    """The approved run's model, its evaluation classifier, its members' class shares and the
    real records of `holdout_a` (never trained on) that served records are judged against."""
    from genlab import data
    from genlab.evaluate.features import load_or_train_extractor
    from genlab.models import load_model
    from genlab.ops.runs import RunFolder

    run = RunFolder(run_dir, create=False)
    spec = data.DataSpec.load(run.require(run.data_spec, "train"))
    ds = data.load_recorded(spec)
    model = load_model(run.require(run.model_ckpt, "train"))
    extractor = load_or_train_extractor(run, ds, spec, seed=seed)
    shares = None
    if ds.y is not None:
        members = ds.y[spec.pool("members")]
        shares = np.bincount(members, minlength=extractor.n_classes) / len(members)
    return model, extractor, shares, ds.x[spec.pool("holdout_a")]


def online_metrics(rows: Sequence[dict[str, Any]], run_dir: Path, *, window: int = 50,
                   arl0_target: int = 1000, alpha: float = 0.05, seed: int = 0,
                   reference_rows: Sequence[dict[str, Any]] | None = None,
                   monitor: OutputMonitor | None = None) -> dict[str, Any]:
    """(a), (b), (c) over a request log, per arm where the log has two. `reference_rows`: the
    approval window for request sizes (default: the log's first `window` requests, which are
    then left out of the tested window)."""
    model, extractor, shares, real_records = approved_model(run_dir, seed=seed)
    real_features = extractor.features(real_records)
    if monitor is None:
        monitor = calibrate_output_monitor(lambda n, s: model.sample(n, seed=s).numpy(),
                                           extractor.features, window=window,
                                           arl0_target=arl0_target, seed=seed)
    served = served_records(rows)
    out: dict[str, Any] = {
        "monitor_window": monitor.window, "arl0_target": monitor.arl0_target,
        "monitor_threshold": monitor.threshold, "arl0_measured": monitor.arl0["measured"],
        "arl0_measured_ci_low": monitor.arl0["ci_low"],
        "arl0_measured_ci_high": monitor.arl0["ci_high"],
        "n_requests": len(rows), "n_failed_requests": sum(r.get("status") != 200 for r in rows),
        "n_records": int(len(served.x))}
    versions = sorted({r.get("version") for r in served.rows}, key=str)
    alarms = []
    for version in versions:
        part = served.arm(version)
        first = monitor.first_alarm(part.x) if len(part.x) >= monitor.window else None
        request = None if first is None else int(part.request_of_record[first])
        alarms.append(first is not None)
        feats, proba = extractor.features_and_proba(part.x)
        real = realistic(feats, real_features)
        out[f"{version}_realistic_share"] = float(real.mean())
        out.update({f"{version}_{k}": v for k, v in task_completion(
            proba, part.labels, seed=seed, real=real).items()})
        out[f"{version}_requests"] = len(part.rows)
        out[f"{version}_failed_requests"] = sum(r.get("version") == version
                                                and r.get("status") != 200 for r in rows)
        out[f"{version}_drift_alarm"] = first is not None
        out[f"{version}_alarm_at_request"] = request
        if request is None:
            out[f"{version}_alarm_at_request_na_reason"] = "no alarm"
    out["online_drift_alarm"] = any(alarms)
    out["online_drift_alarm_reason"] = (
        f"windowed MMD of served records vs the approved model's samples (window "
        f"{monitor.window}, ARL₀ target {monitor.arl0_target}, measured "
        f"{monitor.arl0['measured']:.0f} on another sample pool)")
    tested = list(rows)
    if reference_rows is None:
        reference_rows, tested = tested[:window], tested[window:]
    out.update(request_drift(tested, shares, reference_rows, alpha=alpha))
    return out
