"""Streaming drift monitors whose thresholds are calibrated by simulation to a target ARL₀.

A stream is a sequence of records arriving one at a time; a monitor raises an alarm at the
first step its statistic exceeds a threshold h. The run length without drift (ARL₀ = mean steps
to a false alarm) is what an operations team can budget for, so h is chosen by simulating
no-drift streams, not read off a permutation p-value (whose resolution 1/(B+1) is far too
coarse for alarm rates of 1 in hundreds, and whose level is per test, not per stream).

Records live in a *bank* (their representations, computed once); a stream is an index sequence
into the bank. Kernel values between bank records are computed once too, so a monitor over
hundreds of streams of thousands of steps is a handful of gathers and cumulative sums.

Monitors:
- windowed MMD²: the last `window` records against a fixed reference set (Gaussian kernel),
  MMD² up to its constant reference-reference term;
- two-sided CUSUM and Page–Hinkley on a standardised per-record score (the generative model's
  negative ELBO, discriminator logit or denoising loss at T/2, see
  :func:`genlab.models.scoring.model_representations`): the model itself as the drift sensor.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from genlab.drift_study import detectors as drift
from genlab.drift_study.detectors import gaussian_kernel
from genlab.drift_study.shifts import CLASS_SHIFTS, Pool, Shift
from genlab.numerics import single_threaded
from genlab.params import DriftStudyParams

Representation = Callable[[np.ndarray], np.ndarray]
MONITOR_SHIFTS = ("gaussian_noise:medium", "transform:medium", "occlusion:medium", "knockout",
                  "contamination")


def permutation_streams(pool: np.ndarray, n_streams: int, length: int,
                        rng: np.random.Generator) -> np.ndarray:
    """(n_streams, length) indices drawn from `pool` as back-to-back random permutations, so a
    window holds no repeated record (duplicates would bias kernel statistics) unless it spans
    the joint of two permutations."""
    pool = np.asarray(pool)
    reps = -(-length // len(pool))
    keys = rng.random((n_streams, reps, len(pool)))
    idx = pool[np.argsort(keys, axis=2)].reshape(n_streams, -1)
    return idx[:, :length]


class WindowMMD:
    """Windowed MMD² of the last `window` bank records against `reference` (rows of the bank's
    representation space). Statistic at step t (t ≥ window − 1, 0-based):
    mean_{i≠j∈W} k(i, j) − 2 mean_{i∈W, r} k(i, r)."""

    def __init__(self, bank: np.ndarray, reference: np.ndarray, window: int, sigma: float):
        if window < 2:
            raise ValueError(f"window: expected >= 2 records, got {window}")
        self.window = int(window)
        self.k = gaussian_kernel(bank, bank, sigma)
        self.kref = gaussian_kernel(bank, reference, sigma).mean(1)

    def paths(self, idx: np.ndarray) -> np.ndarray:
        s, length = idx.shape
        w = self.window
        if length < w:
            raise ValueError(f"streams of {length} steps are shorter than the window ({w})")
        out = np.full((s, length), np.nan)
        cross = np.cumsum(self.kref[idx], axis=1)
        cross_w = cross[:, w - 1:] - np.concatenate([np.zeros((s, 1)), cross[:, :-w]], 1)
        pairs = np.zeros((s, length - w + 1))
        zero = np.zeros((s, 1))
        for lag in range(1, w):
            # v[:, j] = cumulative sum of k(idx[j + lag], idx[j]); the window ending at t holds
            # the pairs j in [t - w + 1, t - lag]
            v = np.cumsum(self.k[idx[:, lag:], idx[:, :-lag]], axis=1)
            pairs += v[:, w - 1 - lag:] - np.concatenate([zero, v[:, : length - w]], 1)
        out[:, w - 1:] = 2.0 * pairs / (w * (w - 1)) - 2.0 * cross_w / w
        return out


def cusum_paths(z: np.ndarray, k: float = 0.5) -> np.ndarray:
    """Two-sided CUSUM max(S⁺, S⁻) of standardised scores z (streams × steps); reference value k
    (half the shift in σ it is tuned to)."""
    up = np.zeros(z.shape[0])
    down = np.zeros(z.shape[0])
    out = np.empty_like(z, dtype=np.float64)
    for t in range(z.shape[1]):
        up = np.maximum(0.0, up + z[:, t] - k)
        down = np.maximum(0.0, down - z[:, t] - k)
        out[:, t] = np.maximum(up, down)
    return out


def page_hinkley_paths(z: np.ndarray, delta: float = 0.25) -> np.ndarray:
    """Two-sided Page–Hinkley: cumulative deviation from the running mean, minus its running
    minimum (and the mirror for decreases); tolerance `delta` in σ."""
    steps = np.arange(1, z.shape[1] + 1)
    mean = np.cumsum(z, axis=1) / steps
    up = np.cumsum(z - mean - delta, axis=1)
    down = np.cumsum(mean - z - delta, axis=1)
    return np.maximum(up - np.minimum.accumulate(np.minimum(up, 0.0), axis=1),
                      down - np.minimum.accumulate(np.minimum(down, 0.0), axis=1))


def run_lengths(paths: np.ndarray, h: float) -> tuple[np.ndarray, np.ndarray]:
    """Steps to the first alarm (path > h; 1-based) per stream, and whether it was censored
    (no alarm before the stream ended: its run length is then the stream length)."""
    above = np.nan_to_num(paths, nan=-np.inf) > h
    hit = above.any(1)
    first = np.where(hit, above.argmax(1) + 1, paths.shape[1])
    return first, ~hit


def calibrate_threshold(paths: np.ndarray, target_arl: float, *, max_censored: float = 0.05
                        ) -> float:
    """The threshold whose mean run length over the simulated no-drift `paths` is `target_arl`.

    ARL(h) is non-decreasing in h; bisection over the observed path values. Censored streams
    count as their length, so the streams must be several times longer than the target: more
    than `max_censored` of them censored at the answer is an error, not a silent bias."""
    if target_arl >= paths.shape[1]:
        raise ValueError(f"arl0 target {target_arl} needs streams longer than it "
                         f"(got {paths.shape[1]} steps)")
    values = np.unique(paths[np.isfinite(paths)])
    lo, hi = 0, len(values) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if run_lengths(paths, values[mid])[0].mean() >= target_arl:
            hi = mid
        else:
            lo = mid + 1
    h = float(values[lo])
    rl, censored = run_lengths(paths, h)
    if censored.mean() > max_censored:
        raise ValueError(f"calibration: {censored.mean():.0%} of the no-drift streams never "
                         f"alarmed at h={h:.4g}; simulate longer streams (> {paths.shape[1]})")
    return h


def detection_delays(paths: np.ndarray, h: float, start: int) -> dict:
    """Alarms on drift streams whose drift begins at 0-based step `start`: the share with a
    false alarm before it, the share detected after it, and the mean delay (steps after
    `start`, 1 = the first drifted record) among those detected."""
    first, censored = run_lengths(paths, h)  # 1-based step of the alarm
    early = (first <= start) & ~censored
    detected = ~early & ~censored
    delay = first[detected] - start
    return {"false_alarm_before_drift": float(early.mean()),
            "detected_share": float(detected.mean()),
            "mean_delay": float(delay.mean()) if detected.any() else None,
            "median_delay": float(np.median(delay)) if detected.any() else None}


# ------------------------------------------------------------------------------ stream monitor
@dataclass
class MonitorResult:
    thresholds: dict[str, float]
    arl0: dict[str, dict[str, float]]  # detector -> ARL₀ measured on production no-drift streams
    # (thresholds calibrated on another pool)
    delays: list[dict]  # detector × shift rows
    examples: dict[str, tuple[str, np.ndarray]] = field(default_factory=dict)  # one drift stream
    calibration_sizes: list[dict] = field(default_factory=list)  # ARL₀ vs calibration data


@dataclass(frozen=True)
class MonitorConfig:
    """The stream monitor's settings: the windowed MMD's representation and window, the target
    ARL₀, the no-drift streams that measure it, the step drift begins at, the shifts."""

    representation: str
    window: int
    arl0_target: int
    n_streams: int
    drift_start: int
    seed: int
    shifts: tuple[str, ...] = MONITOR_SHIFTS

    @classmethod
    def from_params(cls, p: DriftStudyParams) -> "MonitorConfig":
        """The drift study's monitor parameters (the full setting measures ≥ 200 streams)."""
        return cls(representation=p.monitor_representation, window=p.monitor_window,
                   arl0_target=p.arl0_target, drift_start=p.drift_start, seed=p.seed,
                   n_streams=max(p.monitor_streams, 200) if p.full else p.monitor_streams)


def _record_bank(pool: Pool, shifts: tuple[str, ...], seed: int
                 ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The record bank (production records, then each shift's shifted production records) and
    each shift's bank indices."""
    rng = np.random.default_rng([seed, 2])
    parts, shifted = [pool.x], {}
    offset = len(pool.x)
    for name in shifts:
        kind, _, intensity = name.partition(":")
        shift = Shift(kind, intensity or "-", 1.0)
        if shift.applicable(pool) is not None:
            continue
        if kind in CLASS_SHIFTS:
            x = shift.draw_all(pool, rng)
        else:
            x = np.concatenate([shift.apply(pool.x, rng, pool) for _ in range(2)])
        shifted[name] = np.arange(offset, offset + len(x))
        parts.append(x)
        offset += len(x)
    return np.concatenate(parts), shifted


def _detectors(reps: Mapping[str, Representation], representation: str, bank_x: np.ndarray,
               ref_set: np.ndarray, window: int) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """Per detector, stream indices → statistic paths: the windowed MMD on `representation`, and
    CUSUM / Page–Hinkley on the per-record score standardised by the reference's."""
    f = reps[representation]
    bank = f(bank_x)
    ref_feat = f(ref_set)
    sigma = drift.median_bandwidth(ref_feat)
    wmmd = WindowMMD(bank, ref_feat, window, sigma)
    score = reps["score"](bank_x)[:, 0] if "score" in reps else None
    detectors: dict[str, Callable[[np.ndarray], np.ndarray]] = {"window_mmd": wmmd.paths}
    if score is not None:
        ref_score = reps["score"](ref_set)[:, 0]
        mu, sd = ref_score.mean(), ref_score.std() or 1.0
        z = (score - mu) / sd
        detectors["cusum_score"] = lambda idx: cusum_paths(z[idx])
        detectors["page_hinkley_score"] = lambda idx: page_hinkley_paths(z[idx])
    return detectors


def _arl0(paths: np.ndarray, h: float) -> dict[str, float]:
    rl, censored = run_lengths(paths, h)
    se = rl.std(ddof=1) / np.sqrt(len(rl))
    return {"measured": float(rl.mean()), "ci_low": float(rl.mean() - 1.96 * se),
            "ci_high": float(rl.mean() + 1.96 * se),
            "censored_share": float(censored.mean()), "streams": len(rl)}


def run_monitor(reference_pool: np.ndarray, pool: Pool, reps: Mapping[str, Representation],
                cfg: MonitorConfig, calibration_pool: np.ndarray) -> MonitorResult:
    """Calibrate the windowed-MMD, CUSUM and Page–Hinkley thresholds on no-drift streams from
    `calibration_pool`, measure ARL₀ on no-drift streams from the production pool, and the
    detection delay per shift.

    Calibration and measurement use *different* pools on purpose. A stream resamples a finite
    pool (about 180-360 records on digits), and a monitor's no-drift run length depends on which
    sample it resamples (its MMD to the reference set, its score mean against the reference's):
    calibrated and measured on streams of one pool, the measured ARL₀ equals the target by
    construction and says nothing about the next batch of data. Calibrated on `val` and measured
    on `holdout_b` (the drift study's wiring), the measured ARL₀ and its CI are what an
    operations team would see on fresh no-drift data. Every detector compares against the whole
    reference pool (holdout_a): the windowed MMD's reference set, and the mean / standard
    deviation that standardise the per-record score for CUSUM / Page–Hinkley.

    `cfg.n_streams` no-drift streams measure ARL₀ (its CI is ±1.96 s/√n, about ±28% of the target
    at 50 streams since run lengths are roughly geometric); the calibration uses
    max(1000, 5 × n_streams) streams, so its own Monte-Carlo error is small next to it; the
    difference between the pools is not (see :func:`calibration_size_table`). Streams are
    10 × the target long, so censoring is rare; drift streams switch to shifted production
    records at step `cfg.drift_start`."""
    if cfg.representation not in reps:
        raise ValueError(f"monitor_representation: expected one of {sorted(reps)} for this run, "
                         f"got {cfg.representation!r}")
    bank_x, shifted = _record_bank(pool, cfg.shifts, cfg.seed)
    prod_idx = np.arange(len(pool.x))
    cal_idx = np.arange(len(bank_x), len(bank_x) + len(calibration_pool))
    bank_x = np.concatenate([bank_x, np.asarray(calibration_pool, dtype=bank_x.dtype)])
    seed, target, start = cfg.seed, cfg.arl0_target, cfg.drift_start
    with single_threaded():
        detectors = _detectors(reps, cfg.representation, bank_x, reference_pool, cfg.window)
        length = 10 * target
        cal = permutation_streams(cal_idx, max(1000, 5 * cfg.n_streams), length,
                                  np.random.default_rng([seed, 3]))
        null = permutation_streams(prod_idx, cfg.n_streams, length,
                                   np.random.default_rng([seed, 4]))
        thresholds, arl0, delays, examples, sizes = {}, {}, [], {}, []
        for name, paths_of in detectors.items():
            h = thresholds[name] = calibrate_threshold(paths_of(cal), target)
            null_paths = paths_of(null)
            arl0[name] = _arl0(null_paths, h)
            sizes += calibration_size_table(name, paths_of, cal_idx, null_paths, cfg)
            for si, (shift_name, idx_pool) in enumerate(shifted.items()):
                srng = np.random.default_rng([seed, 5, si])
                before = permutation_streams(prod_idx, cfg.n_streams, start, srng)
                after = permutation_streams(idx_pool, cfg.n_streams, 4 * target, srng)
                paths = paths_of(np.concatenate([before, after], 1))
                d = detection_delays(paths, h, start)
                if si == 1 or name not in examples:
                    examples[name] = (shift_name, paths[0, : start + 2 * target])
                delays.append({"detector": name, "shift": shift_name, **d})
    return MonitorResult(thresholds, arl0, delays, examples, sizes)


CALIBRATION_SIZES = (0.25, 0.5, 1.0)  # shares of the calibration pool
CALIBRATION_REPEATS = 3
CALIBRATION_SIZE_STREAMS = 500  # Monte-Carlo error ~5% of the target, small next to the spread


def calibration_size_table(name: str, paths_of: Callable[[np.ndarray], np.ndarray],
                           cal_idx: np.ndarray, null_paths: np.ndarray,
                           cfg: MonitorConfig) -> list[dict]:
    """How much calibration data a stable ARL₀ needs: thresholds calibrated on random subsets
    of the calibration pool (each share × `CALIBRATION_REPEATS` subsets,
    `CALIBRATION_SIZE_STREAMS` streams each),
    each measured on the same production no-drift streams. The spread of the measured ARL₀
    across subsets of one size is the part of its error that more streams cannot remove."""
    rows = []
    for share in CALIBRATION_SIZES:
        n = max(cfg.window + 1, int(round(share * len(cal_idx))))
        measured = []
        for r in range(CALIBRATION_REPEATS if share < 1 else 1):
            rng = np.random.default_rng([cfg.seed, 6, int(share * 1000), r])
            sub = rng.choice(cal_idx, size=min(n, len(cal_idx)), replace=False)
            streams = permutation_streams(sub, CALIBRATION_SIZE_STREAMS, null_paths.shape[1], rng)
            h = calibrate_threshold(paths_of(streams), cfg.arl0_target)
            measured.append(run_lengths(null_paths, h)[0].mean())
        rows.append({"detector": name, "calibration_records": int(min(n, len(cal_idx))),
                     "subsets": len(measured), "arl0_min": float(np.min(measured)),
                     "arl0_max": float(np.max(measured)),
                     "arl0_ratio_spread": float((np.max(measured) - np.min(measured))
                                                / cfg.arl0_target)})
    return rows


def monitor_headline(res: MonitorResult, target: int) -> dict[str, Any]:
    out: dict[str, Any] = {"arl0_target": target}
    for det, key in (("window_mmd", ""), ("cusum_score", "_cusum"),
                     ("page_hinkley_score", "_page_hinkley")):
        if det not in res.arl0:
            out[f"arl0_measured{key}"] = None
            out[f"arl0_measured{key}_na_reason"] = "the model gives no per-record score"
            out[f"mean_detection_delay{key}"] = None
            out[f"mean_detection_delay{key}_na_reason"] = out[f"arl0_measured{key}_na_reason"]
            continue
        a = res.arl0[det]
        out[f"arl0_measured{key}"] = a["measured"]
        out[f"arl0_measured{key}_ci_low"] = a["ci_low"]
        out[f"arl0_measured{key}_ci_high"] = a["ci_high"]
        delays = [r["mean_delay"] for r in res.delays if r["detector"] == det
                  and r["mean_delay"] is not None]
        out[f"mean_detection_delay{key}"] = float(np.mean(delays)) if delays else None
        if not delays:
            out[f"mean_detection_delay{key}_na_reason"] = "no drift stream was detected"
    return out
