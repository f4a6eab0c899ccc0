"""The poisoning and screening studies: train a clean model and one per poisoned pool the same
way, sample them, and measure what the poison did; then screen each poisoned pool, retrain on
what the screens let through and measure how much of the damage that undid.

What is measured on every model's samples (n each, the same seed):

- the trigger rate: share of samples the deterministic trigger detector flags (Wilson 95%
  interval), overall and, for a conditional model, among samples requested in the target class;
- conditional accuracy (conditional models): share of samples the evaluation classifier
  assigns to the requested class, overall (Wilson interval) and per class;
- FD, precision, recall, coverage against holdout_b (:func:`genlab.security.models.fidelity`);
- memorisation of the duplicated members (:func:`genlab.privacy_audit.memorisation.dcr` with
  the duplicated members as the bank and as many other members as the reference bank): share
  of samples closer to a duplicated member than to any of the others, with its cluster
  bootstrap interval; 0.5 when duplication taught the model nothing special.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from genlab.privacy_audit.memorisation import dcr
from genlab.security import poisoning as PZ
from genlab.security import screens as SC
from genlab.security.adversarial import rate_row
from genlab.security.models import RunSettings, draw, fidelity, train_like_run

# the measurement that shows each poison's damage
DAMAGE = {"backdoor": "trigger_rate", "label_flip": "conditional_accuracy", "outlier": "fd",
          "near_duplicate": "dup_share_closer"}


@dataclass
class StudySetup:
    settings: RunSettings
    members_x: np.ndarray
    members_y: np.ndarray | None
    reference_x: np.ndarray  # holdout_b: fidelity reference
    calib_x: np.ndarray  # holdout_a: thresholds of trigger detector and screens
    ext: Any
    n_classes: int | None
    is_image: bool
    epochs: int
    n_samples: int
    m: int
    draws: int
    seed: int
    target_class: int
    duplicate_sources: int
    out_dir: Path
    detector: Callable[[np.ndarray], np.ndarray] = field(init=False)

    def __post_init__(self):
        value = PZ.trigger_value(self.members_x, self.is_image)
        self.threshold = PZ.calibrate_trigger_threshold(self.calib_x, value)
        self.detector = PZ.trigger_detector(self.threshold)

    def train(self, x, y, name: str):
        return train_like_run(self.settings, x, y if self.settings.conditional else None,
                              epochs=self.epochs, seed=self.seed, out_dir=self.out_dir / name,
                              epoch_size=len(self.members_x))

    def poison(self, kind: str, rate: float) -> PZ.PoisonedPool:
        return PZ.poison(kind, self.members_x, self.members_y, rate, seed=self.seed,
                         conditional=self.settings.conditional, is_image=self.is_image,
                         target_class=self.target_class, n_classes=self.n_classes,
                         duplicate_sources=self.duplicate_sources)

    def measure(self, model, duplicated: np.ndarray | None) -> dict[str, Any]:
        """Every measurement of the module doc on n samples of `model`."""
        x, req = draw(model, self.n_samples, self.seed)
        hit = self.detector(x)
        out: dict[str, Any] = {**rate_row("trigger_rate", hit)}
        if req is not None:
            out.update(rate_row("trigger_rate_target", hit[req == self.target_class]))
            pred = self.ext.predict_proba(x).argmax(1)
            out.update(rate_row("conditional_accuracy", pred == req))
            out["per_class_accuracy"] = [float((pred[req == k] == k).mean()) if (req == k).any()
                                         else None for k in range(self.n_classes)]
        out.update(fidelity(self.ext, x, self.reference_x, m=self.m, draws=self.draws, seed=self.seed))
        if duplicated is not None:
            others = np.setdiff1d(np.arange(len(self.members_x)), duplicated)
            d = dcr(x, self.members_x[duplicated], self.members_x[others], seed=self.seed)
            out.update({"dup_share_closer": d["dcr_share_closer_to_members"],
                        "dup_share_closer_ci_low": d["dcr_share_closer_to_members_ci_low"],
                        "dup_share_closer_ci_high": d["dcr_share_closer_to_members_ci_high"],
                        "dup_median_distance": d["dcr_median_members"],
                        "other_median_distance": d["dcr_median_holdout"]})
        return out


def kinds_for(conditional: bool, labelled: bool) -> tuple[list[str], dict[str, str]]:
    """The poison kinds that apply, and why the others do not."""
    skipped = {}
    if not (conditional and labelled):
        skipped["label_flip"] = ("label flips poison what a class-conditional model generates per "
                                 "class; this model " + ("is unconditional" if labelled else
                                                         "has no labels"))
    return [k for k in PZ.POISON_KINDS if k not in skipped], skipped


def poisoning_study(s: StudySetup, kinds: list[str], rates: list[float]) -> dict[str, Any]:
    """The clean model and one model per (kind, rate); rows of measurements and pool records."""
    dup_probe = s.poison("near_duplicate", max(rates)).duplicated if "near_duplicate" in kinds else None
    clean = s.train(s.members_x, s.members_y, "clean")
    rows = [{"kind": "clean", "rate": 0.0, "n_poisoned": 0, **s.measure(clean, dup_probe)}]
    pools = {}
    for kind in kinds:
        for rate in rates:
            pool = s.poison(kind, rate)
            pools[(kind, rate)] = pool
            model = s.train(pool.x, pool.y, f"{kind}-{rate:g}")
            rows.append({"kind": kind, "rate": rate, "n_poisoned": pool.n_poisoned,
                         "pool_fingerprint": pool.fingerprint()[:16],
                         **s.measure(model, pool.duplicated)})
    return {"rows": rows, "pools": pools, "clean_model": clean}


def screening_study(s: StudySetup, pools: dict, rows: list[dict]) -> dict[str, Any]:
    """Each kind's pool at the largest rate: every screen's precision/recall/false-flag rate,
    then a model retrained on the records no screen flagged, and the share of the damage undone
    ((poisoned − screened) / (poisoned − clean) of the kind's damage measurement)."""
    clean_row = rows[0]
    screen_rows, retrained, measured_by_kind = [], [], {}
    by_kind = {}
    for (kind, rate), pool in pools.items():
        if rate >= by_kind.get(kind, (-1, None))[0]:
            by_kind[kind] = (rate, pool)
    for kind, (rate, pool) in by_kind.items():
        flags = SC.run_screens(pool.x, pool.y, s.calib_x, seed=s.seed)
        union = np.zeros(len(pool.x), bool)
        for name, f in flags.items():
            if f is None:
                screen_rows.append({"kind": kind, "rate": rate, "screen": name,
                                    "note": "needs labels: not run"})
                continue
            union |= f
            screen_rows.append({"kind": kind, "rate": rate, "screen": name,
                                **SC.screen_scores(f, pool.poisoned)})
        scores = SC.screen_scores(union, pool.poisoned)
        screen_rows.append({"kind": kind, "rate": rate, "screen": "any", **scores})
        keep = ~union
        model = s.train(pool.x[keep], None if pool.y is None else pool.y[keep], f"{kind}-screened")
        # the duplicated members keep their indices (the clean members come first in a pool)
        dup = pool.duplicated
        measured = measured_by_kind[kind] = s.measure(model, dup)
        key = DAMAGE[kind]
        poisoned_row = next(r for r in rows if r["kind"] == kind and r["rate"] == rate)
        gap = poisoned_row[key] - clean_row[key]
        undone = (poisoned_row[key] - measured[key]) / gap if abs(gap) > 1e-12 else None
        retrained.append({"kind": kind, "rate": rate, "damage_metric": key,
                          "clean": clean_row[key], "poisoned": poisoned_row[key],
                          "screened": measured[key], "damage_undone": undone,
                          "removed": int(union.sum()), "poisoned_removed": scores["true_positives"],
                          "recall_any": scores["recall"], "n_poisoned": pool.n_poisoned,
                          "false_flag_rate_any": scores["false_flag_rate"]})
    return {"screens": screen_rows, "retrained": retrained, "measured": measured_by_kind}
