"""The drift study: representations, the detection study over shifts × δ × n × representation ×
test, its tables and headline, and the border-pixel artefact. Tests are in `detectors.py`,
shifts in `shifts.py`, the stream monitor in `monitor.py`, retraining in `retrain.py`.

Seeding: every trial draws from `np.random.default_rng([seed, stage, cell, trial])`, so each
number depends only on the parameters, not on the order or number of other cells. Wall-clock
times are collected separately (`StudyResult.seconds`) and go to `timings.json`, never into the
reproducible reports.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from genlab.drift_study import detectors as drift
from genlab.models.scoring import model_representations
from genlab.numerics import flatten, single_threaded
from genlab.ops.runs import RunFolder, atomic_write_text
from genlab.drift_study.monitor import Representation
from genlab.drift_study.shifts import Pool, Shift, catalogue
from genlab.params import DriftStudyParams

REPRESENTATIONS = ("pixels", "pca", "latent", "score", "softmax", "features")
TESTS = ("mmd", "ks_bonferroni", "ks_fdr", "c2st", "chi2")

# --------------------------------------------------------------------------- representations
def pca_representation(fit_x: np.ndarray, k: int) -> Representation:
    """PCA fitted on `fit_x` (the members pool: neither reference nor production)."""
    a = flatten(fit_x)
    mean = a.mean(0)
    _, _, vt = np.linalg.svd(a - mean, full_matrices=False)
    comps = vt[: min(k, vt.shape[0])].T
    return lambda x: (flatten(x) - mean) @ comps


def build_representations(model, ds, spec, run: RunFolder, *, pca_components: int, seed: int
                          ) -> tuple[dict[str, Representation], dict[str, Any]]:
    """All representations available for this run, and notes on where they came from.

    BBSD's softmax and the classifier's features come from the evaluation's extractor
    (`genlab.evaluate.features`, trained on members, cached in the run) when the data has labels."""
    members = ds.x[spec.pool("members")]
    reps: dict[str, Representation] = {"pixels": flatten,
                                       "pca": pca_representation(members, pca_components)}
    reps.update(model_representations(model))
    notes: dict[str, Any] = {"extractor": None}
    if ds.y is not None:
        try:
            from genlab.evaluate.features import load_or_train_extractor
        except ImportError as exc:  # the evaluation issue's module is not there
            notes["extractor"] = f"unavailable ({exc})"
        else:
            ext = load_or_train_extractor(run, ds, spec, seed=seed)
            reps["softmax"] = ext.predict_proba
            reps["features"] = ext.features
            # the extractor's accuracy comes from training: kept apart from its description
            notes["extractor"] = f"{ext.name} (d={ext.num_features}, K={ext.n_classes})"
            notes["extractor_accuracy"] = ext.accuracy
    else:
        notes["extractor"] = "no labels: no BBSD"
    return {k: reps[k] for k in REPRESENTATIONS if k in reps}, notes


def tests_for(rep: str) -> tuple[str, ...]:
    """χ² needs labels: only on the softmax (its argmax). The rest run on every representation."""
    return TESTS if rep == "softmax" else TESTS[:-1]


def run_test(test: str, x: np.ndarray, y: np.ndarray, *, alpha: float, n_permutations: int,
             rng: np.random.Generator) -> drift.TestResult:
    if test == "mmd":
        return drift.mmd_test(x, y, alpha=alpha, n_permutations=n_permutations, rng=rng)
    if test in ("ks_bonferroni", "ks_fdr"):
        return drift.ks_test(x, y, alpha=alpha, correction=test[3:])
    if test == "c2st":
        return drift.c2st_test(x, y, alpha=alpha, rng=rng)
    if test == "chi2":
        return drift.chi2_label_test(x.argmax(1), y.argmax(1), alpha=alpha)
    raise ValueError(f"test: expected one of {list(TESTS)}, got {test!r}")


# ------------------------------------------------------------------------------------- study
@dataclass
class StudyConfig:
    alpha: float
    trials: int
    null_trials: int
    sizes: tuple[int, ...]
    deltas: tuple[float, ...]
    shifts: list[tuple[str, str]]
    n_permutations: int
    seed: int

    @classmethod
    def from_params(cls, p: DriftStudyParams, n_ref: int, n_prod: int) -> "StudyConfig":
        """Default: n ∈ {20, 50, 100}, δ ∈ {0.5, 1}, `trials` per cell (no-shift cells at least
        50). Full: n from 10 up to what the pools allow, δ ∈ {0.1, 0.5, 1}, ≥ 100 trials (no-
        shift ≥ 200). Sizes are capped at half the smaller pool so samples differ by trial."""
        full = bool(p.full)
        cap = min(n_ref, n_prod) // 2
        wanted = (10, 20, 50, 100, 200, 500, 1000, 10_000) if full else (20, 50, 100)
        sizes = tuple(s for s in wanted if s <= cap) + ((cap,) if full and cap not in wanted else ())
        if not sizes:
            raise ValueError(f"pools too small for a drift study: {n_ref} reference and {n_prod} "
                             f"production records (need >= 40 each)")
        trials = max(p.trials, 100) if full else p.trials
        return cls(alpha=p.alpha, trials=trials, null_trials=max(trials, 200 if full else 50),
                   sizes=tuple(sorted(set(sizes))), deltas=(0.1, 0.5, 1.0) if full else (0.5, 1.0),
                   shifts=catalogue(full), n_permutations=p.n_permutations, seed=p.seed)


@dataclass
class StudyResult:
    rows: list[dict]
    seconds: dict[str, float] = field(default_factory=dict)  # per test, summed: timings.json
    calls: dict[str, int] = field(default_factory=dict)


def _cells(cfg: StudyConfig, pool: Pool) -> list[Shift]:
    out = []
    for kind, intensity in cfg.shifts:
        for delta in ((1.0,) if kind == "none" else cfg.deltas):
            shift = Shift(kind, intensity, delta)
            if shift.applicable(pool) is None:
                out.append(shift)
    return out


def run_study(reference: np.ndarray, pool: Pool, reps: Mapping[str, Representation],
              cfg: StudyConfig) -> StudyResult:
    """Detection rate of every (shift, δ, n, representation, test) cell over seeded trials."""
    ref_reps = {name: f(reference) for name, f in reps.items()}
    result = StudyResult(rows=[])
    with single_threaded():
        for ci, shift in enumerate(_cells(cfg, pool)):
            for n in cfg.sizes:
                trials = cfg.null_trials if shift.kind == "none" else cfg.trials
                hits: dict[tuple[str, str], int] = {}
                odd: dict[tuple[str, str], int] = {}  # detections in odd-numbered trials
                for t in range(trials):
                    rng = np.random.default_rng([cfg.seed, 1, ci, n, t])
                    ref_idx = rng.choice(len(reference), size=n, replace=False)
                    prod = shift.draw(pool, n, rng)
                    for rep, f in reps.items():
                        y = f(prod)
                        x = ref_reps[rep][ref_idx]
                        for test in tests_for(rep):
                            if test == "ks_fdr":
                                continue  # computed with ks_bonferroni: same statistics
                            t0 = time.perf_counter()
                            if test == "ks_bonferroni":
                                found = drift.ks_tests(x, y, alpha=cfg.alpha)
                            else:
                                found = {test: run_test(test, x, y, alpha=cfg.alpha, rng=rng,
                                                        n_permutations=cfg.n_permutations)}
                            spent = (time.perf_counter() - t0) / len(found)
                            for name, res in found.items():
                                key = f"{name}@{rep}"
                                result.seconds[key] = result.seconds.get(key, 0.0) + spent
                                result.calls[key] = result.calls.get(key, 0) + 1
                                hits[(rep, name)] = hits.get((rep, name), 0) + int(res.detected)
                                odd[(rep, name)] = odd.get((rep, name), 0) + int(res.detected) * (t % 2)
                for (rep, test), k in hits.items():
                    lo, hi = drift.wilson_ci(k, trials)
                    row = {"shift": shift.kind, "intensity": shift.intensity,
                           "delta": shift.delta if shift.kind != "none" else 0.0, "n": n,
                           "representation": rep, "test": test, "method": f"{test}@{rep}",
                           "trials": trials, "detections": k, "rate": k / trials,
                           "ci_low": lo, "ci_high": hi,
                           # the even trials choose the best method, the odd ones report it
                           "trials_even": (trials + 1) // 2, "detections_even": k - odd[(rep, test)],
                           "trials_odd": trials // 2, "detections_odd": odd[(rep, test)]}
                    result.rows.append(row)
    flag_calibration(result.rows, cfg.alpha)
    return result


def flag_calibration(rows: list[dict], alpha: float, family_level: float = 0.05) -> None:
    """Flag each no-shift cell 'mis-calibrated' / 'conservative' / 'ok' against its binomial
    band, at `family_level` over all no-shift cells together (Bonferroni): with dozens of
    calibrated cells, a per-cell 5% band flags a few of them by chance (0 to 5 per seed here);
    the family-wise band flags a cell only when its false-alarm rate is out of line. Each row
    gets `band_high`: the largest false-alarm rate its band allows."""
    null = [r for r in rows if r["shift"] == "none"]
    level = family_level / max(1, len(null))
    for r in null:
        r["calibration"] = drift.calibration_flag(r["detections"], r["trials"], alpha, level)
        r["band_high"] = drift.binomial_band_high(r["trials"], alpha, level) / r["trials"]


def false_alarm_table(rows: list[dict]) -> list[dict]:
    return [{k: r[k] for k in ("method", "n", "trials", "detections", "rate", "ci_low", "ci_high",
                               "band_high", "calibration")} for r in rows if r["shift"] == "none"]


def detection_by_size(rows: list[dict]) -> list[dict]:
    """Failing Loudly's Table 1: per method, the mean detection rate over all shifts by n."""
    methods = sorted({r["method"] for r in rows})
    sizes = sorted({r["n"] for r in rows})
    out = []
    for m in methods:
        row = {"method": m}
        for n in sizes:
            rates = [r["rate"] for r in rows if r["method"] == m and r["n"] == n
                     and r["shift"] != "none"]
            row[f"n={n}"] = float(np.mean(rates)) if rates else None
        out.append(row)
    return out


def study_headline(rows: list[dict], alpha: float, n: int = 100) -> dict[str, Any]:
    null = [r for r in rows if r["shift"] == "none"]
    worst = max(null, key=lambda r: (r["rate"], r["method"]))
    out: dict[str, Any] = {
        "alpha": alpha,
        "false_alarm_rate_max": worst["rate"],
        "false_alarm_rate_max_method": f"{worst['method']} (n={worst['n']})",
        "false_alarm_trials": worst["trials"],
        "n_miscalibrated": len({r["method"] for r in null if r["calibration"] == "mis-calibrated"}),
        "n_conservative": len({r["method"] for r in null if r["calibration"] == "conservative"}),
    }
    bad = {r["method"] for r in null if r["calibration"] == "mis-calibrated"}
    at_n = [r for r in rows if r["n"] == n and r["shift"] != "none" and r["method"] not in bad]
    if not at_n:
        out["best_method_at_n100"] = None
        out["best_method_at_n100_na_reason"] = f"no calibrated method was run at n={n}"
        out["best_detection_rate_at_n100"] = None
        out["best_detection_rate_at_n100_na_reason"] = out["best_method_at_n100_na_reason"]
        return out
    # select on the even trials, report on the odd ones: the best of many methods picked and
    # reported on the same trials is biased upward (the winner's curse)
    select: dict[str, list[float]] = {}
    held: dict[str, list[tuple[int, int]]] = {}
    for r in at_n:
        select.setdefault(r["method"], []).append(r["detections_even"] / r["trials_even"])
        held.setdefault(r["method"], []).append((r["detections_odd"], r["trials_odd"]))
    best = max(sorted(select), key=lambda m: np.mean(select[m]))
    k, t = (sum(v) for v in zip(*held[best]))
    lo, hi = drift.wilson_ci(k, t)
    out["best_method_at_n100"] = best
    out["best_detection_rate_at_n100"] = k / t if t else None
    out["best_detection_rate_at_n100_ci_low"], out["best_detection_rate_at_n100_ci_high"] = lo, hi
    out["best_detection_rate_at_n100_selection"] = float(np.mean(select[best]))
    out["best_method_at_n100_trials"] = "chosen on even-numbered trials, rate on odd-numbered ones"
    return out


def write_test_timings(run: RunFolder, result: StudyResult, extra: Mapping[str, float] = ()) -> None:
    """Per-test runtime (total and per call, seconds) merged into the run's timings.json under
    "04_drift_study_tests": outside the byte-reproducible reports."""
    path = run.path / "timings.json"
    current = json.loads(path.read_text()) if path.exists() else {}
    current["04_drift_study_tests"] = {
        **{k: {"total_s": round(v, 4), "calls": result.calls[k],
               "per_call_ms": round(1000 * v / result.calls[k], 4)}
           for k, v in sorted(result.seconds.items())},
        **{k: round(v, 3) for k, v in dict(extra).items()},
    }
    atomic_write_text(path, json.dumps(current, indent=1, sort_keys=True) + "\n")


def border_artefact(reference: np.ndarray, pool: Pool, *, alpha: float, trials: int, n: int,
                    seed: int) -> list[dict]:
    """KS on raw pixels against σ = 1/255 noise, with and without dropping the dimensions that
    are constant in the reference: the digits border artefact, measured."""
    shift = Shift("gaussian_noise", "small", 1.0)
    n = min(n, len(reference) // 2, len(pool.x) // 2)
    hits = {True: 0, False: 0}
    with single_threaded():
        for t in range(trials):
            rng = np.random.default_rng([seed, 9, t])
            x = flatten(reference[rng.choice(len(reference), n, replace=False)])
            y = flatten(shift.draw(pool, n, rng))
            for drop in hits:
                hits[drop] += drift.ks_test(x, y, alpha=alpha, drop_constant=drop).detected
    return [{"ks_bonferroni@pixels": "constant reference pixels dropped" if drop else "all pixels",
             "n": n, "trials": trials, "detection_rate_sigma_1_255": k / trials}
            for drop, k in hits.items()]
