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
  :func:`genlab.model_scores.model_representations`): the model itself as the drift sensor.
"""

from __future__ import annotations

import numpy as np

from genlab.drift_study.detectors import gaussian_kernel


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
