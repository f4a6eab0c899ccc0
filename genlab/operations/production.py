"""The production side of the operations scenario: a stream of production records monitored for
drift, fine-tuning a candidate from the champion on the drifted records, and the candidate's
check against the champion on held-out drifted records.

Pools (the run's own, never trained on): the reference is `holdout_a`; `holdout_b` is split in
two halves by seed. The monitor's threshold is calibrated on no-drift streams of the first half
and its ARL₀ measured on streams of the second half (calibrating and measuring on one finite
pool would return the target by construction). The production stream is second-half records,
then — from request `shift_at` on — shifted second-half records (one record per request). The
candidate is fine-tuned on the shifted first half and checked on the shifted second half.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genlab.drift_study import detectors as drift
from genlab.drift_study.monitor import (WindowMMD, calibrate_threshold, permutation_streams,
                                        run_lengths)
from genlab.drift_study.shifts import Pool, parse_shift
from genlab.numerics import frechet_distance, single_threaded


@dataclass
class ProductionStream:
    statistic: np.ndarray  # windowed MMD per request (NaN before the first full window)
    threshold: float
    arl0: dict[str, float]  # measured on the other half: mean, CI, censored share
    shift_at: int  # 0-based request where the shift begins
    alarm_at: int | None  # 0-based request of the first alarm
    tune: np.ndarray  # shifted first-half records (fine-tuning)
    held: np.ndarray  # shifted second-half records (the candidate's check)

    @property
    def detection_delay(self) -> int | None:
        """Requests after the shift began until the alarm (1 = the first shifted request);
        None without an alarm or for a false alarm before the shift."""
        if self.alarm_at is None or self.alarm_at < self.shift_at:
            return None
        return self.alarm_at - self.shift_at + 1


def monitor_production(reference: np.ndarray, pool_x: np.ndarray, pool_y: np.ndarray | None,
                       featurize, *, shift: str, shift_at: int, n_requests: int, window: int,
                       arl0_target: int, n_streams: int, seed: int) -> ProductionStream:
    """Calibrate the windowed-MMD monitor (module doc), then run it over the production stream."""
    if not window < shift_at < n_requests:
        raise ValueError(f"shift_at_request: expected between production_window ({window}) and "
                         f"stream_requests ({n_requests}), got {shift_at}")
    rng = np.random.default_rng([seed, 61])
    order = rng.permutation(len(pool_x))
    halves = order[: len(order) // 2], order[len(order) // 2:]
    kind = parse_shift(shift, "drift_shift")
    shifted = []
    for h in halves:
        part = Pool(pool_x[h], None if pool_y is None else pool_y[h])
        problem = kind.applicable(part)
        if problem is not None:
            raise ValueError(f"drift_shift {shift!r}: {problem}")
        shifted.append(kind.draw_all(part, np.random.default_rng([seed, 62, len(shifted)])))
    with single_threaded():
        ref = featurize(reference)
        sigma = drift.median_bandwidth(ref)
        cal, meas = (featurize(pool_x[h]) for h in halves)
        length = 10 * arl0_target
        h_cal = calibrate_threshold(WindowMMD(cal, ref, window, sigma).paths(
            permutation_streams(np.arange(len(cal)), 5 * n_streams, length,
                                np.random.default_rng([seed, 63]))), arl0_target)
        rl, censored = run_lengths(WindowMMD(meas, ref, window, sigma).paths(
            permutation_streams(np.arange(len(meas)), n_streams, length,
                                np.random.default_rng([seed, 64]))), h_cal)
        before = pool_x[halves[1]][permutation_streams(np.arange(len(halves[1])), 1, shift_at,
                                                       np.random.default_rng([seed, 65]))[0]]
        after = shifted[1][permutation_streams(np.arange(len(shifted[1])), 1,
                                               n_requests - shift_at,
                                               np.random.default_rng([seed, 66]))[0]]
        stream = np.concatenate([before, after])
        feats = featurize(stream)
        stat = WindowMMD(feats, ref, window, sigma).paths(np.arange(len(feats))[None, :])[0]
    se = rl.std(ddof=1) / np.sqrt(len(rl))
    above = np.nan_to_num(stat, nan=-np.inf) > h_cal
    return ProductionStream(
        stat, float(h_cal), {"measured": float(rl.mean()), "ci_low": float(rl.mean() - 1.96 * se),
                             "ci_high": float(rl.mean() + 1.96 * se),
                             "censored_share": float(censored.mean())},
        shift_at, int(above.argmax()) if above.any() else None, shifted[0], shifted[1])


def fine_tune_candidate(champion_dir: Path, dest: Path, x: np.ndarray, *, epochs: int,
                        seed: int) -> Path:
    """A candidate run folder: the champion's weights fine-tuned on `x` (seeded, deterministic)
    with the champion's data spec; the champion's folder is only read."""
    from genlab.models import load_model
    from genlab.train import training

    champion_ckpt = Path(champion_dir) / "artifacts" / "model.ckpt"
    (dest / "artifacts").mkdir(parents=True, exist_ok=True)
    shutil.copy2(Path(champion_dir) / "artifacts" / "data_spec.json",
                 dest / "artifacts" / "data_spec.json")
    training.seed_everything(seed)
    model = load_model(champion_ckpt)
    if getattr(model, "n_classes", 0):
        raise ValueError("the scenario fine-tunes unconditional models only (production records "
                         "come without labels)")
    training.init_from_checkpoint(model, champion_ckpt)
    model.train()
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.from_numpy(np.ascontiguousarray(x, np.float32))),
        batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(seed))
    result = training.fit(model, train_dataloaders=loader, ckpt_dir=dest / "artifacts" / "checkpoints",
                          cfg=training.TrainConfig(max_epochs=epochs, batch_size=64, seed=seed))
    shutil.copy2(result.last_ckpt, dest / "artifacts" / "model.ckpt")
    return dest


def candidate_check(champion_dir: Path, candidate_dir: Path, stream: ProductionStream,
                    featurize, *, seed: int) -> dict[str, Any]:
    """FD to the held-out drifted records of the champion's and the candidate's samples, beside
    the real-vs-real floor (the drifted fine-tuning records against the same held-out ones)."""
    from genlab.models import load_model

    held = stream.held
    with single_threaded():
        f_held = featurize(held)
        out = {"fd_production_real_vs_real": frechet_distance(featurize(stream.tune), f_held)}
        for name, folder in (("champion", champion_dir), ("candidate", candidate_dir)):
            model = load_model(Path(folder) / "artifacts" / "model.ckpt")
            samples = model.sample(len(held), seed=seed).numpy()
            out[f"fd_production_{name}"] = frechet_distance(featurize(samples), f_held)
    out["fd_production_candidate_vs_champion"] = (out["fd_production_candidate"]
                                                  / out["fd_production_champion"])
    out["n_production_heldout"] = int(len(held))
    return out
